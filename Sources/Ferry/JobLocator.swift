import FerryRedis

/// Finds a job that has no status hash (published by a plain `XADD`, or its status expired) in
/// the job stream itself, and says where it is in each consumer group: so `ferry job status`
/// answers for every job the stream holds, not only those published with status on.
public struct JobLocator: QueueStore {
    /// Where a job is in one group.
    public enum Position: Sendable, Equatable {
        /// Not delivered to the group yet.
        case queued
        /// Delivered and not acknowledged: who holds it and how often it was delivered.
        case pending(consumer: String, deliveries: Int)
        /// Behind the group's read position and not pending: acknowledged (it finished, was
        /// dead-lettered or cancelled there), or before where the group began reading.
        case done
    }

    /// A job found in the stream.
    public struct Found: Sendable {
        /// The stream entry that carries it.
        public var entry: StreamEntry
        /// Its position in each group of the queue, by group name.
        public var groups: [String: Position]
    }

    /// How many of the newest entries a search by job id reads at most: the stream has no index
    /// of job ids (the job store's index will be one), so older ones are not looked at.
    public static let searchLimit = 10_000

    /// The queue whose stream is searched, and the connection.
    public let scope: QueueScope

    /// Searches `scope.queue`'s stream on `scope.connection`.
    public init(_ scope: QueueScope) { self.scope = scope }

    /// The job whose entry ID is `id`, or whose `job_id` is `id` among the newest
    /// ``searchLimit`` entries of a priority lane; nil when no lane holds either.
    public func find(_ id: String) async throws(FerryError) -> Found? {
        for stream in try await connection.laneStreams(of: keys) {
            if let entry = try await entry(id, in: stream) { return try await found(entry, in: stream) }
        }
        return nil
    }

    /// Where `entry` of lane `stream` is in each group.
    private func found(_ entry: StreamEntry, in stream: String) async throws(FerryError) -> Found {
        let groups = try await send(RedisCommand("XINFO", ["GROUPS", .string(stream)])).array ?? []
        var positions: [String: Position] = [:]
        for group in groups.map(QueueInspector.fields) {
            guard let name = group["name"]?.string else { continue }
            let pending = try await send(
                RedisCommand("XPENDING", [.string(stream), .string(name), .string(entry.id), .string(entry.id), 1]))
            if let record = pending.array?.first?.array, record.count >= 4 {
                positions[name] = .pending(consumer: record[1].string ?? "", deliveries: Int(record[3].integer ?? 0))
            } else if let delivered = group["last-delivered-id"]?.string, StreamEntry.isID(entry.id, atOrBefore: delivered) {
                positions[name] = .done
            } else {
                positions[name] = .queued
            }
        }
        return Found(entry: entry, groups: positions)
    }

    private func entry(_ id: String, in stream: String) async throws(FerryError) -> StreamEntry? {
        if id.wholeMatch(of: /[0-9]{1,20}-[0-9]{1,20}/) != nil {
            let reply = try await send(RedisCommand("XRANGE", [.string(stream), .string(id), .string(id)]))
            if let entry = StreamEntry.entries(from: reply).first { return entry }
        }
        var end = "+"
        var read = 0
        while read < Self.searchLimit {
            let reply = try await send(RedisCommand("XREVRANGE", [.string(stream), .string(end), "-", "COUNT", 500]))
            let page = StreamEntry.entries(from: reply)
            if let match = page.first(where: { $0.text(of: WireFormat.Field.jobID) == id }) { return match }
            guard let last = page.last, page.count == 500 else { return nil }
            read += page.count
            end = "(" + last.id
        }
        return nil
    }
}
