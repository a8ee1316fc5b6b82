import FerryRedis
import Foundation

/// What `ferry inspect` shows: the state of queues, their groups and consumers, gathered in a
/// few round trips. The views redis-cli cannot give in one command.
public struct QueueInspector: Sendable {
    private let connection: RedisConnection

    /// The most entries counted to find a group's lag when Redis cannot tell: a group whose lag
    /// is nil has at least this many entries left to deliver.
    public static let lagCountLimit = 10_000

    /// Reads through `connection`; on Redis Cluster it also dials every primary to list queues.
    public init(connection: RedisConnection) {
        self.connection = connection
    }

    /// One queue: its stream, dead letters and groups.
    public struct QueueReport: Sendable, Codable, Hashable {
        /// The queue's name.
        public var queue: String
        /// Entries in the job stream (`XLEN`): unread, pending and finished alike, until trimmed.
        public var length: Int
        /// Entries in the dead-letter stream.
        public var deadLetters: Int
        /// Every consumer group on the stream.
        public var groups: [GroupReport]
        /// Jobs published for later and not yet due (``ScheduledJobs``).
        public var scheduled = 0
        /// When the next scheduled job is due, RFC 3339; nil when none is scheduled.
        public var nextDueAt: String?
        /// What is paused (`ferry queue pause`): `*` for every group, or group names; empty
        /// when nothing is.
        public var paused: [String] = []
        /// Ordering keys a dead-lettered job stopped (`--ordering-on-dead block`), as
        /// `<group>: <key>`; empty when none is.
        public var blockedOrderingKeys: [String] = []
        /// Each priority lane (``JobPriority``), most urgent first, when the queue has lanes
        /// other than normal; empty when it has none. ``length`` and the groups' counts cover the
        /// normal lane (the stream itself) only; these rows cover each lane.
        public var priorities: [PriorityReport] = []
        /// How many of the queue's workflows are in each state (``Workflows/State``), those kept
        /// after they ended included; empty when it has none.
        public var workflows: [String: Int] = [:]
    }

    /// One priority lane of a queue.
    public struct PriorityReport: Sendable, Codable, Hashable {
        /// `high`, `normal`, `low` or the level's digit.
        public var priority: String
        /// The lane's stream.
        public var stream: String
        /// Entries in the lane's stream (`XLEN`), finished ones too until trimmed.
        public var length: Int
        /// The slowest group's unfinished jobs in the lane: not yet delivered (lag) plus
        /// delivered and not acknowledged (pending); jobs parked for a retry are not counted here.
        public var depth: Int
        /// How long ago the oldest job some group has yet to finish in the lane was published,
        /// in ms; nil when every group has finished the lane.
        public var oldestAgeMilliseconds: Int?
    }

    /// One consumer group (subscription).
    public struct GroupReport: Sendable, Codable, Hashable {
        /// The group's name.
        public var name: String
        /// Entries delivered to the group and not yet acknowledged.
        public var pending: Int
        /// Entries not yet delivered to the group; nil when Redis cannot tell and at least
        /// ``QueueInspector/lagCountLimit`` entries are left (a group placed mid-stream by
        /// another tool, without the `ENTRIESREAD` that ``GroupPosition`` passes).
        public var lag: Int?
        /// The last entry ID delivered to the group: where it reads next.
        public var lastDeliveredID: String
        /// The oldest pending entry: its ID, how long since it was published, how long idle.
        public var oldestPendingID: String?
        public var oldestPendingAgeMilliseconds: Int?
        public var oldestPendingIdleMilliseconds: Int?
        /// Delivery counts among pending entries (at most the first 1,000): lowest, highest,
        /// and how many entries have each count.
        public var deliveryCountMin: Int?
        public var deliveryCountMax: Int?
        /// Pending entries by delivery count (as text, for JSON output).
        public var deliveryCounts: [String: Int]
        /// The group's consumers (worker processes).
        public var consumers: [ConsumerReport]
        /// The group's jobs by state, from the index of jobs (``JobIndex``): `running`,
        /// `retrying`, `failed`, and the finished ones still kept (`succeeded` for an hour, `dead`,
        /// `cancelled`, `deleted` for 7 days, by default). Jobs of workers with status off are
        /// not counted; the lag counts the queued ones.
        public var states: [String: Int] = [:]
        /// Jobs this group dead-lettered that are still kept: its share of the dead-letter stream.
        public var dead: Int { states[JobState.dead.rawValue] ?? 0 }
    }

    /// One consumer (a worker process) of a group.
    public struct ConsumerReport: Sendable, Codable, Hashable {
        /// The consumer's name: `<host>-<pid>` for a `ferry worker`.
        public var name: String
        /// Entries it holds: running, or left behind if it died.
        public var pending: Int
        /// Since it last read or claimed: a dead worker's consumer only grows idle.
        public var idleMilliseconds: Int
    }

    /// Every queue's name: those in the registry (``QueueRegistry``), and with `discover` those
    /// a `SCAN` finds too (never `KEYS`, which blocks Redis; on Redis Cluster on every primary
    /// node, since `SCAN` sees only the node it is sent to), which are added to the registry,
    /// while registered names whose queue is gone (no job stream, dead letters or scheduled
    /// jobs) are removed from it. An empty registry is always scanned (a Redis that only older
    /// Ferry releases or plain `XADD`s wrote). `ferry inspect` discovers; `ferry serve`'s pages
    /// read the registry, and its charts' sampler discovers every few minutes.
    public func queues(discover: Bool = true) async throws(FerryError) -> [QueueName] {
        let registered = try await QueueRegistry.names(connection: connection)
        guard discover || registered.isEmpty else { return registered.sorted().compactMap { try? QueueName($0) } }
        let primaries: [RedisConfiguration]?
        do { primaries = try await connection.clusterPrimaries() } catch { throw FerryError(error) }
        var names: Set<String> = []
        if let primaries {
            for primary in primaries {
                let node = RedisConnection(configuration: primary)
                names.formUnion(try await Self.queueNames(on: node))
                await node.close()
            }
        } else {
            names = try await Self.queueNames(on: connection)
        }
        try await QueueRegistry.add(names.subtracting(registered), connection: connection)
        var gone: [String] = []
        for name in registered.subtracting(names) {
            guard let queue = try? QueueName(name) else {
                gone.append(name)
                continue
            }
            // A queue's keys share its hash slot: one EXISTS asks for them all. The job stream
            // is asked again: one made since the SCAN began (a worker lists its queue before its
            // group makes the stream) may not be in its answer.
            let keys = QueueKeys(queue: queue)
            let exists =
                try await send(
                    RedisCommand("EXISTS", [.string(keys.jobs), .string(keys.deadLetter), .string(keys.scheduled)])
                ).integer ?? 0
            if exists > 0 { names.insert(name) } else { gone.append(name) }
        }
        try await QueueRegistry.remove(gone, connection: connection)
        return names.sorted().compactMap { try? QueueName($0) }
    }

    private static func queueNames(on connection: RedisConnection) async throws(FerryError) -> Set<String> {
        var names: Set<String> = []
        let keys: [[UInt8]]
        do {
            keys = try await connection.scanKeys(matching: QueueKeys.jobStreamPattern, type: "stream")
        } catch {
            throw FerryError(error)
        }
        for key in keys.map({ String(decoding: $0, as: UTF8.self) }) {
            if let open = key.firstIndex(of: "{"), let close = key.lastIndex(of: "}"), open < close {
                names.insert(String(key[key.index(after: open)..<close]))
            }
        }
        return names
    }

    /// Throws ``FerryError/Code/notFound`` unless the queue has a job stream or dead letters:
    /// the one rule every command that names a queue follows, so a typo exits 1 everywhere.
    public func requireQueue(_ queue: QueueName) async throws(FerryError) {
        let keys = QueueKeys(queue: queue)
        let found = try await send(RedisCommand("EXISTS", [.string(keys.jobs), .string(keys.deadLetter)]))
        if found.integer == 0 { throw Self.unknownQueue(queue) }
    }

    /// One entry of the job stream as a worker will see it: the decoded job, or what breaks
    /// the wire format.
    public struct PeekedEntry: Sendable {
        /// The stream entry ID.
        public var entryID: String
        /// The job, when the entry follows the wire format.
        public var job: JobMessage?
        /// Why the entry would be dead-lettered as malformed, naming the field at fault.
        public var problem: String?
    }

    /// The oldest `count` entries of the queue's job stream, each checked against the wire format.
    ///
    /// - Throws: ``FerryError`` `notFound` for a queue that does not exist.
    public func peek(_ queue: QueueName, count: Int) async throws(FerryError) -> [PeekedEntry] {
        try await requireQueue(queue)
        let reply = try await send(
            RedisCommand("XRANGE", [.string(QueueKeys(queue: queue).jobs), "-", "+", "COUNT", .integer(Int64(count))]))
        return StreamEntry.entries(from: reply).map { entry in
            do {
                return PeekedEntry(entryID: entry.id, job: try entry.decodedJob())
            } catch {
                return PeekedEntry(entryID: entry.id, problem: "\(error)")
            }
        }
    }

    /// The error for a queue with neither a job stream nor dead letters.
    public static func unknownQueue(_ queue: QueueName) -> FerryError {
        FerryError(
            .notFound,
            "queue \(queue) does not exist: no ferry:{\(queue)}:jobs stream and no dead letters (ferry inspect lists the queues)")
    }

    /// The report for one queue; nil when it has neither a job stream nor dead letters.
    public func report(_ queue: QueueName) async throws(FerryError) -> QueueReport? {
        let keys = QueueKeys(queue: queue)
        let counts = try await pipeline([
            RedisCommand("EXISTS", [.string(keys.jobs)]), RedisCommand("XLEN", [.string(keys.jobs)]),
            RedisCommand("XLEN", [.string(keys.deadLetter)]),
        ])
        let exists = counts[0].integer == 1
        let dead = Int(counts[2].integer ?? 0)
        let scheduled = try await ScheduledJobs(queue: queue, connection: connection).summary()
        guard exists || dead > 0 || scheduled.count > 0 else { return nil }
        var groups: [GroupReport] = []
        if exists {
            for info in try await send(RedisCommand("XINFO", ["GROUPS", .string(keys.jobs)])).array ?? [] {
                groups.append(try await groupReport(keys, Self.fields(info)))
            }
        }
        var report = QueueReport(queue: queue.rawValue, length: Int(counts[1].integer ?? 0), deadLetters: dead, groups: groups)
        report.scheduled = scheduled.count
        report.nextDueAt = scheduled.nextDue?.rfc3339
        report.paused = try await QueuePause(queue: queue, connection: connection).paused().keys.sorted()
        report.blockedOrderingKeys = try await QueueOrdering(queue: queue, connection: connection).blocked().map {
            "\($0.group): \($0.key)"
        }
        report.priorities = try await priorityReports(keys)
        let states = Workflows.State.allCases
        let workflowCounts = try await pipeline(
            states.map { RedisCommand("ZCARD", [.string(keys.workflowIndex(state: $0.rawValue))]) })
        for (state, count) in zip(states, workflowCounts) where (count.integer ?? 0) > 0 {
            report.workflows[state.rawValue] = Int(count.integer ?? 0)
        }
        return report
    }

    /// A row per priority lane, when the queue has lanes other than normal.
    private func priorityReports(_ keys: QueueKeys) async throws(FerryError) -> [PriorityReport] {
        let lanes = keys.priorities(inLanes: try await send(RedisCommand("SMEMBERS", [.string(keys.lanes)])))
        if lanes.isEmpty { return [] }
        var reports: [PriorityReport] = []
        for priority in (lanes + [.normal]).sorted() {
            let stream = keys.lane(priority)
            let replies = try await pipeline([
                RedisCommand("XLEN", [.string(stream)]), RedisCommand("EXISTS", [.string(stream)]),
            ])
            var report = PriorityReport(
                priority: priority.description, stream: stream, length: Int(replies[0].integer ?? 0), depth: 0)
            var oldest: Int64?
            if replies[1].integer == 1 {
                for info in (try await send(RedisCommand("XINFO", ["GROUPS", .string(stream)])).array ?? []).map(Self.fields) {
                    let name = info["name"]?.string ?? ""
                    let pending = Int(info["pending"]?.integer ?? 0)
                    report.depth = max(report.depth, pending + Int(info["lag"]?.integer ?? 0))
                    // The group's oldest unfinished job: its oldest pending entry, else the first it has not read.
                    let first: String?
                    if pending > 0 {
                        first = try await send(RedisCommand("XPENDING", [.string(stream), .string(name)])).array?
                            .dropFirst().first?.string
                    } else {
                        let after = "(" + (info["last-delivered-id"]?.string ?? "0-0")
                        first =
                            StreamEntry.entries(
                                from: try await send(RedisCommand("XRANGE", [.string(stream), .string(after), "+", "COUNT", 1]))
                            ).first?.id
                    }
                    if let published = first.flatMap(StreamEntry.milliseconds(ofID:)) {
                        oldest = min(oldest ?? published, published)
                    }
                }
            }
            report.oldestAgeMilliseconds = oldest.map { Int(max(Date().millisecondsSince1970 - $0, 0)) }
            reports.append(report)
        }
        return reports
    }

    private func groupReport(_ keys: QueueKeys, _ info: [String: RedisReply]) async throws(FerryError) -> GroupReport {
        let name = info["name"]?.string ?? ""
        let lastDelivered = info["last-delivered-id"]?.string ?? "0-0"
        let replies = try await pipeline([
            RedisCommand("XPENDING", [.string(keys.jobs), .string(name), "-", "+", 1000]),
            RedisCommand("XINFO", ["CONSUMERS", .string(keys.jobs), .string(name)]),
        ])
        var report = GroupReport(
            name: name, pending: Int(info["pending"]?.integer ?? 0), lag: info["lag"]?.integer.map { Int($0) },
            lastDeliveredID: lastDelivered, deliveryCounts: [:], consumers: [])
        let pending = (replies[0].array ?? []).compactMap(\.array).filter { $0.count >= 4 }
        if let oldest = pending.first {
            report.oldestPendingID = oldest[0].string
            report.oldestPendingIdleMilliseconds = oldest[2].integer.map { Int($0) }
            if let published = oldest[0].string.flatMap(StreamEntry.milliseconds(ofID:)) {
                report.oldestPendingAgeMilliseconds = Int(max(Date().millisecondsSince1970 - published, 0))
            }
        }
        let deliveries = pending.compactMap { $0[3].integer.map { Int($0) } }
        report.deliveryCountMin = deliveries.min()
        report.deliveryCountMax = deliveries.max()
        for count in deliveries { report.deliveryCounts[String(count), default: 0] += 1 }
        let counts = try await JobIndex(queue: keys.queue, connection: connection).counts(group: name)
        report.states = Dictionary(uniqueKeysWithValues: counts.map { ($0.key.rawValue, $0.value) })
        report.consumers = (replies[1].array ?? []).map(Self.fields).map { consumer in
            ConsumerReport(
                name: consumer["name"]?.string ?? "", pending: Int(consumer["pending"]?.integer ?? 0),
                idleMilliseconds: Int(consumer["idle"]?.integer ?? 0))
        }
        if report.lag == nil {
            // Redis loses track of the lag of a group placed mid-stream without ENTRIESREAD (by
            // another tool); count what is left, up to a bound.
            let after = try await send(
                RedisCommand(
                    "XRANGE",
                    [.string(keys.jobs), .string("(" + lastDelivered), "+", "COUNT", .integer(Int64(Self.lagCountLimit))]))
            let count = after.array?.count ?? 0
            report.lag = count < Self.lagCountLimit ? count : nil
        }
        return report
    }

    /// A flat `XINFO` or `HGETALL` reply (`name`, value, `name`, value, …) as a dictionary.
    public static func fields(_ reply: RedisReply) -> [String: RedisReply] {
        var fields: [String: RedisReply] = [:]
        for (name, value) in reply.pairs {
            if let name = name.string { fields[name] = value }
        }
        return fields
    }

    private func send(_ command: RedisCommand) async throws(FerryError) -> RedisReply {
        try await connection.sendReportingFerryError(command)
    }

    private func pipeline(_ commands: [RedisCommand]) async throws(FerryError) -> [RedisReply] {
        try await connection.pipelineReportingFerryError(commands)
    }
}
