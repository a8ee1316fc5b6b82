import FerryRedis

/// The data format of a queue's keys (`ferry:{Q}:meta` field `format`): what a worker checks
/// before it touches a queue, so a worker of an older Ferry never misreads keys written in a
/// layout it does not know (docs/wire-format.md, "Data format").
///
/// Format 1 (Ferry before the job store) wrote no meta key and kept one status for every
/// group; format 2 keeps each group's status apart (`<group>.<field>`) and an index of jobs by
/// state; format 3 packs the common success (a first run of a job whose id is its entry ID) into
/// a hash per minute of publishing (``QueueKeys/succeededStatuses(entryID:)``) instead of a key
/// per job. A worker of format 3 takes over a queue of format 1 or 2 as it is: entries, pending
/// lists, dead letters and idempotency keys are unchanged, and older status hashes read as they
/// were until they expire. It marks the queue format 3, so a worker that cannot read packed
/// statuses refuses it.
public enum QueueFormat {
    /// The format this version writes.
    public static let current = 3

    /// Marks the queue as written in ``current`` when it has no format yet (a new queue, or
    /// one of format 1) or an older one it takes over, and returns the format it is in.
    public static func claim(_ queue: QueueName, connection: RedisConnection) async throws(RedisError) -> Int {
        let meta = QueueKeys(queue: queue).meta
        let replies = try await connection.pipeline([
            RedisCommand("HSETNX", [.string(meta), "format", .integer(Int64(current))]),
            RedisCommand("HGET", [.string(meta), "format"]),
        ])
        if let failed = replies.lazy.compactMap(\.errorMessage).first { throw RedisError.server(failed, command: "HSETNX") }
        let found = replies[1].string.flatMap { Int($0) } ?? 0
        guard (1..<current).contains(found) else { return found }
        let raised = try await connection.send(RedisCommand("HSET", [.string(meta), "format", .integer(Int64(current))]))
        if let failed = raised.errorMessage { throw RedisError.server(failed, command: "HSET") }
        return current
    }

    /// The refusal for a queue in a format this version does not know: both versions named,
    /// and what to do.
    static func refusal(_ queue: QueueName, found: Int) -> FerryError {
        FerryError(
            .invalidInput,
            "queue \(queue) is in data format \(found) (ferry:{\(queue)}:meta), which this Ferry does not know: it reads formats 1 to \(current). Run a Ferry release that knows format \(found)."
        )
    }
}
