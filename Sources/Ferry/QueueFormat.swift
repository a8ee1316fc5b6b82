import FerryRedis

/// The data format of a queue's keys (`ferry:{Q}:meta` field `format`): what a worker checks
/// before it touches a queue, so a worker of an older Ferry never misreads keys written in a
/// layout it does not know (docs/wire-format.md, "Data format").
///
/// Format 1 (Ferry before the job store) wrote no meta key and kept one status for every
/// group; format 2 keeps each group's status apart (`<group>.<field>`) and an index of jobs by
/// state. A worker of format 2 takes over a format-1 queue as it is: entries, pending lists, dead
/// letters and idempotency keys are unchanged, and a format-1 status hash reads as every group's
/// status until it expires.
public enum QueueFormat {
    /// The format this version writes.
    public static let current = 2

    /// Marks the queue as written in ``current`` when it has no format yet (a new queue, or
    /// one of format 1), and returns the format it is in.
    public static func claim(_ queue: QueueName, connection: RedisConnection) async throws(RedisError) -> Int {
        let meta = QueueKeys(queue: queue).meta
        let replies = try await connection.pipeline([
            RedisCommand("HSETNX", [.string(meta), "format", .integer(Int64(current))]),
            RedisCommand("HGET", [.string(meta), "format"]),
        ])
        if let failed = replies.lazy.compactMap(\.errorMessage).first { throw RedisError.server(failed, command: "HSETNX") }
        // Listed among the Redis's queues from the worker's start (QueueRegistry).
        let registered = try await connection.send(QueueRegistry.adding([queue.rawValue]))
        if let failed = registered.errorMessage { throw RedisError.server(failed, command: "SADD") }
        return replies[1].string.flatMap { Int($0) } ?? 0
    }

    /// The refusal for a queue in a format this version does not know: both versions named,
    /// and what to do.
    static func refusal(_ queue: QueueName, found: Int) -> FerryError {
        FerryError(
            .invalidInput,
            "queue \(queue) is in data format \(found) (ferry:{\(queue)}:meta), which this Ferry does not know: it reads formats 1 and \(current). Run a Ferry release that knows format \(found)."
        )
    }
}
