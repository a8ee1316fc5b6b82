import FerryRedis

/// A queue's subscriptions (consumer groups): create, delete and seek, with Ferry's rules and
/// errors, so the CLI, an HTTP API and a dashboard do the same thing the same way.
public struct ConsumerGroups: QueueStore {
    /// The queue, its keys and the connection every call uses.
    public let scope: QueueScope

    /// A store of `scope.queue`; nothing is sent until a method is called.
    public init(_ scope: QueueScope) { self.scope = scope }

    /// The names of the queue's groups; none when its stream does not exist yet.
    /// One round trip: a job's status (the API's `GET .../jobs/{id}`, polled often) asks it first.
    public func names() async throws(FerryError) -> [String] {
        let replies = try await connection.pipelineReportingFerryError([
            RedisCommand("EXISTS", [.string(keys.jobs)]), RedisCommand("XINFO", ["GROUPS", .string(keys.jobs)]),
        ])
        guard replies[0].integer == 1 else { return [] }
        if let message = replies[1].errorMessage { throw FerryError(RedisError.server(message, command: "XINFO GROUPS")) }
        return Self.names(inGroupsReply: replies[1])
    }

    /// The group names of an `XINFO GROUPS` reply; none for an error reply (no stream).
    static func names(inGroupsReply reply: RedisReply) -> [String] {
        (reply.array ?? []).compactMap { QueueInspector.fields($0)["name"]?.string }
    }

    /// Creates `group`, delivering from `position` on (the stream is created if missing), on
    /// every priority lane: entry IDs rise across lanes together, so one position means the same
    /// moment in each.
    ///
    /// - Throws: ``FerryError`` `invalidInput` when the group exists; a Redis failure otherwise.
    public func create(_ group: String, at position: GroupPosition = .start) async throws(FerryError) {
        for stream in try await connection.laneStreams(of: keys) {
            try await send(
                RedisCommand(
                    "XGROUP CREATE",
                    [.string(stream), .string(group)]
                        + (await position.xgroupArguments(stream: stream, connection: connection, mkstream: true))),
                translating: .busyGroup,
                into: FerryError(.invalidInput, "group \(group) already exists on \(queue); use ferry group seek to move it"))
        }
    }

    /// Deletes `group` and its consumers. Refuses while it has pending entries, which would be
    /// dropped unfinished, unless `force`.
    ///
    /// - Returns: how many pending entries were dropped.
    /// - Throws: ``FerryError`` `notFound` for an unknown group, `invalidInput` when entries are
    ///   pending and `force` is off.
    @discardableResult
    public func delete(_ group: String, force: Bool = false) async throws(FerryError) -> Int {
        let pending = try await pendingCount(group)
        if pending > 0 && !force {
            throw FerryError(
                .invalidInput,
                "group \(group) has \(pending) pending entries that would be dropped unfinished; stop its workers and let them drain, or add --force"
            )
        }
        for stream in try await connection.laneStreams(of: keys) {
            try await send(RedisCommand("XGROUP DESTROY", [.string(stream), .string(group)]))
        }
        return pending
    }

    /// Moves where `group` reads from (Pub/Sub's seek), in every priority lane: back replays,
    /// forward skips. Entries already pending stay pending.
    ///
    /// - Throws: ``FerryError`` `notFound` for an unknown group.
    public func seek(_ group: String, to position: GroupPosition) async throws(FerryError) {
        try await eachLane(group) { stream throws(FerryError) in
            try await send(
                RedisCommand(
                    "XGROUP SETID",
                    [.string(stream), .string(group)] + (await position.xgroupArguments(stream: stream, connection: connection))))
        }
    }

    /// Entries delivered to `group` and not acknowledged, in every priority lane.
    ///
    /// - Throws: ``FerryError`` `notFound` for an unknown group.
    public func pendingCount(_ group: String) async throws(FerryError) -> Int {
        var count = 0
        try await eachLane(group) { stream throws(FerryError) in
            count += Int(try await send(RedisCommand("XPENDING", [.string(stream), .string(group)])).array?.first?.integer ?? 0)
        }
        return count
    }

    /// One pending entry: who holds it, how long it has been idle, how often it was delivered,
    /// and the job it carries (nil when the entry was deleted from the stream meanwhile).
    public struct PendingEntry: Sendable {
        /// The stream entry ID.
        public var entryID: String
        /// The consumer that holds it.
        public var consumer: String
        /// Milliseconds since it was last delivered or its lease extended.
        public var idleMilliseconds: Int
        /// Deliveries so far.
        public var deliveries: Int
        /// The entry as it is in the stream; nil once deleted.
        public var entry: StreamEntry?
    }

    /// The pending entries of `group`, oldest first, joined with their stream entries (one
    /// round trip for the list, one pipelined for the entries), over every priority lane.
    ///
    /// - Parameters:
    ///   - consumer: only those this consumer holds.
    ///   - minimumIdle: only those idle at least this long.
    /// - Throws: ``FerryError`` `notFound` for an unknown group.
    public func pending(
        _ group: String, consumer: String? = nil, minimumIdle: Duration = .zero, limit: Int = 100
    ) async throws(FerryError) -> [PendingEntry] {
        var items: [(stream: String, item: [RedisReply])] = []
        try await eachLane(group) { stream throws(FerryError) in
            var arguments: [RedisArgument] = [
                .string(stream), .string(group), "IDLE", .integer(minimumIdle.milliseconds), "-", "+", .integer(Int64(limit)),
            ]
            if let consumer { arguments.append(.string(consumer)) }
            let reply = try await send(RedisCommand("XPENDING", arguments))
            items += (reply.array ?? []).compactMap(\.array).filter { $0.count >= 4 }.map { (stream, $0) }
        }
        items = Array(
            items.sorted { StreamEntry.isID($0.item[0].string ?? "0", atOrBefore: $1.item[0].string ?? "0") }.prefix(limit))
        if items.isEmpty { return [] }
        let entries: [RedisReply]
        do {
            entries = try await connection.pipeline(
                items.map { stream, item in
                    RedisCommand("XRANGE", [.string(stream), .string(item[0].string ?? "0"), .string(item[0].string ?? "0")])
                })
        } catch {
            throw FerryError(error)
        }
        return zip(items.map(\.item), entries).map { item, entry in
            PendingEntry(
                entryID: item[0].string ?? "", consumer: item[1].string ?? "", idleMilliseconds: Int(item[2].integer ?? 0),
                deliveries: Int(item[3].integer ?? 0), entry: StreamEntry.entries(from: entry).first)
        }
    }

    /// Runs `body` on each priority lane's stream, the normal lane first: NOGROUP there means
    /// the queue has no such group (``FerryError`` `notFound`); a lane no worker of the group has
    /// read yet (its group is made when one does) is skipped.
    private func eachLane(
        _ group: String, _ body: (String) async throws(FerryError) -> Void
    ) async throws(FerryError) {
        for (index, stream) in try await connection.laneStreams(of: keys).enumerated() {
            do {
                try await body(stream)
            } catch  where error.redisError?.prefix == .noGroup {
                if index == 0 { throw unknownGroup(group) }
            }
        }
    }

    private func unknownGroup(_ group: String) -> FerryError {
        FerryError(.notFound, "queue \(queue) has no group \(group); ferry inspect \(queue) lists its groups")
    }

    @discardableResult
    private func send(
        _ command: RedisCommand, translating prefix: RedisErrorPrefix? = nil, into replacement: FerryError? = nil
    ) async throws(FerryError) -> RedisReply {
        if let prefix, let replacement { return try await connection.send(command, translating: prefix, into: replacement) }
        return try await connection.sendReportingFerryError(command)
    }
}
