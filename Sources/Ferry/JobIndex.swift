import FerryRedis

/// A queue's index of jobs by consumer group and state (`ferry:{Q}:idx:<group>:<state>`, kept by
/// the transition scripts): counts per state in O(1) and listings that page with a cursor,
/// without scanning the stream, for `ferry jobs list`, `ferry inspect` and an HTTP API.
///
/// Jobs not yet delivered to a group have no index entry: the group's lag counts them
/// (``QueueInspector``).
public struct JobIndex: Sendable {
    /// The states that have an index set: every state but `queued` and `scheduled` (the group's lag
    /// counts the first, the due index holds the second).
    public static let indexedStates: [JobState] = JobState.allCases.filter { $0 != .queued && $0 != .scheduled }

    /// The queue it reads.
    public let queue: QueueName
    private let keys: QueueKeys
    private let connection: RedisConnection

    static let listScript = FerryScripts.script("list_jobs", EmbeddedLuaScripts.list_jobs)
    static let trimScript = FerryScripts.script("trim_index", EmbeddedLuaScripts.trim_index)
    static let listQueuedScript = FerryScripts.script("list_queued", EmbeddedLuaScripts.list_queued)

    /// Reads through `connection`; nothing is sent until a method is called.
    public init(queue: QueueName, connection: RedisConnection) {
        self.queue = queue
        self.keys = QueueKeys(queue: queue)
        self.connection = connection
    }

    /// How many of the group's jobs are in each indexed state (`ZCARD`, one round trip).
    public func counts(group: String) async throws(FerryError) -> [JobState: Int] {
        let replies: [RedisReply]
        do {
            replies = try await connection.pipeline(
                Self.indexedStates.map { RedisCommand("ZCARD", [.string(keys.statusIndex(group: group, state: $0))]) })
        } catch {
            throw FerryError(error)
        }
        if let failed = replies.lazy.compactMap(\.errorMessage).first { throw FerryError(RedisError.server(failed)) }
        return Dictionary(uniqueKeysWithValues: zip(Self.indexedStates, replies.map { Int($0.integer ?? 0) }))
    }

    /// One job in a listing.
    public struct Row: Sendable, Hashable {
        /// The producer's job id (or the entry ID of a job without one).
        public var jobID: String
        /// Its state in the group.
        public var state: JobState
        /// Its type, when its status says.
        public var type: String?
        /// When it was published, in milliseconds since the epoch (its place in the index).
        public var publishedAt: Int64
        /// Deliveries so far.
        public var attempts: Int?
        /// The class of its last failure, if any.
        public var errorClass: String?
        /// When the group's status last changed, in milliseconds since the epoch.
        public var updatedAt: Int64?
    }

    /// Where a listing goes on from: the last job a page looked at. Its text (`<ms>:<member>`)
    /// is what `ferry jobs list --cursor` takes.
    public struct Cursor: Sendable, Hashable, CustomStringConvertible {
        let score: String
        let member: String

        /// Reads a cursor a previous page printed.
        ///
        /// - Throws: ``FerryError`` `invalidInput` for text no page printed.
        public init(_ text: String) throws(FerryError) {
            guard let colon = text.firstIndex(of: ":"), Int64(text[..<colon]) != nil, text.index(after: colon) < text.endIndex
            else {
                throw FerryError(
                    .invalidInput, "cursor \"\(text)\" is not one a page printed (<ms>:<job>); start without --cursor")
            }
            score = String(text[..<colon])
            member = String(text[text.index(after: colon)...])
        }

        init(score: String, member: String) {
            self.score = score
            self.member = member
        }

        public var description: String { "\(score):\(member)" }
    }

    /// One page of a listing and where the next starts.
    public struct Page: Sendable {
        /// The jobs, newest published first.
        public var rows: [Row]
        /// Where the next page starts; nil when nothing is left.
        public var next: Cursor?
    }

    /// A page of the group's jobs, newest published first, in `states` (every indexed state
    /// when empty), of `type` and with the flow-control `key` if given (a key is known for jobs
    /// with ids of their own, whose queued record keeps it). A page may hold fewer than `limit`
    /// jobs with a filter (it looks at a bounded number of jobs); page on while ``Page/next`` is set.
    public func list(
        group: String, states: [JobState] = [], type: String? = nil, key: String? = nil, limit: Int = 50,
        after cursor: Cursor? = nil
    ) async throws(FerryError) -> Page {
        guard limit > 0 else { throw FerryError(.invalidInput, "the page size must be at least 1; got \(limit)") }
        let budget = type == nil && key == nil ? limit : min(limit * 20, 5000)
        if states.contains(.queued) {
            guard states == [.queued] else {
                throw FerryError(
                    .invalidInput,
                    "queued jobs are listed from the stream, on their own: ask for state queued alone, then for the others")
            }
            return try await queued(group: group, type: type, key: key, limit: limit, budget: budget, after: cursor)
        }
        let chosen = states.isEmpty ? Self.indexedStates : states
        let reply: RedisReply
        do {
            reply = try await connection.run(
                Self.listScript, keys: chosen.map { .string(keys.statusIndex(group: group, state: $0)) },
                arguments: [
                    .string(cursor?.score ?? "+inf"), .string(cursor?.member ?? ""), .integer(Int64(limit)),
                    .integer(Int64(budget)), .string(keys.jobStatusPrefix), .string(group), .string(type ?? ""),
                    .string(key ?? ""),
                ] + chosen.map { .string($0.rawValue) })
        } catch {
            throw FerryError(error)
        }
        let parts = reply.array ?? []
        let rows = (parts.first?.array ?? []).compactMap { row -> Row? in
            let cells = (row.array ?? []).map { $0.string ?? "" }
            guard cells.count == 8, let state = JobState(rawValue: cells[2]) else { return nil }
            return Row(
                jobID: cells[3], state: state, type: cells[4].isEmpty ? nil : cells[4], publishedAt: Int64(cells[1]) ?? 0,
                attempts: Int(cells[5]), errorClass: cells[6].isEmpty ? nil : cells[6], updatedAt: Int64(cells[7]))
        }
        var next: Cursor?
        if parts.count == 3, let score = parts[1].string, let member = parts[2].string {
            next = Cursor(score: score, member: member)
        }
        return Page(rows: rows, next: next)
    }

    /// A page of the jobs the group has yet to read (``JobState/queued``), from the streams of
    /// the queue's lanes (`list_queued.lua`): a queued job has no index entry. Its cursor is
    /// the last entry looked at; a row's type and publish time come from its entry.
    private func queued(
        group: String, type: String?, key: String?, limit: Int, budget: Int, after cursor: Cursor?
    ) async throws(FerryError) -> Page {
        let streams = try await connection.laneStreams(of: keys)
        let reply: RedisReply
        do {
            reply = try await connection.run(
                Self.listQueuedScript, keys: streams.map { .string($0) },
                arguments: [
                    .string(group), .string(cursor?.member ?? ""), .integer(Int64(limit)), .integer(Int64(budget)),
                    .string(type ?? ""), .string(key ?? ""),
                ])
        } catch {
            throw FerryError(error)
        }
        let parts = reply.array ?? []
        let rows = (parts.first?.array ?? []).compactMap { row -> Row? in
            let cells = (row.array ?? []).map { $0.string ?? "" }
            guard cells.count == 3, let published = StreamEntry.milliseconds(ofID: cells[0]) else { return nil }
            return Row(
                jobID: cells[1], state: .queued, type: cells[2].isEmpty ? nil : cells[2], publishedAt: published,
                attempts: 0, errorClass: nil, updatedAt: nil)
        }
        let next =
            parts.count == 2
            ? parts[1].string.flatMap { id in
                StreamEntry.milliseconds(ofID: id).map { Cursor(score: String($0), member: id) }
            } : nil
        return Page(rows: rows, next: next)
    }

    /// Removes index entries whose statuses expired, for every group, and sets each set to
    /// expire as its statuses do (the workers' retention pass renews it; the sets of a group no
    /// longer worked expire). Returns how many entries were removed.
    ///
    /// - Parameters:
    ///   - keepSucceeded: how long succeeded jobs' statuses are kept.
    ///   - keepFailed: how long the statuses of dead, cancelled and deleted jobs are kept (and the
    ///     sets of running, retrying and failed jobs, between passes).
    @discardableResult
    public func trimExpired(
        keepSucceeded: Duration, keepFailed: Duration, budget: Int = 5000, calls: Int = 40
    ) async throws(FerryError) -> Int {
        var removed = 0
        for _ in 0..<calls {
            let reply: RedisReply
            do {
                reply = try await connection.run(
                    Self.trimScript, keys: [.string(keys.jobs)],
                    arguments: [
                        .string(keys.statusIndexPrefix), .string(keys.jobStatusPrefix), .integer(Int64(budget)),
                        .integer(keepSucceeded.milliseconds), .integer(keepFailed.milliseconds),
                    ] + Self.indexedStates.map { .string($0.rawValue) })
            } catch {
                throw FerryError(error)
            }
            let parts = reply.array ?? []
            removed += Int(parts.first?.integer ?? 0)
            if parts.last?.integer != 1 { break }
        }
        return removed
    }
}
