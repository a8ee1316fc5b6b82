import FerryRedis

/// Settings of a whole queue that every publisher and worker reads from Redis
/// (`ferry:{Q}:settings`), so they change without a deploy: `ferry queue set`.
public struct QueueSettings: Sendable {
    /// The queue.
    public let queue: QueueName
    private let keys: QueueKeys
    private let connection: RedisConnection

    /// Reads and writes through `connection`; nothing is sent until a method is called.
    public init(queue: QueueName, connection: RedisConnection) {
        self.queue = queue
        self.keys = QueueKeys(queue: queue)
        self.connection = connection
    }

    /// The most jobs not yet finished (in the slowest group) the queue takes; publishing past it
    /// is refused with ``QueueFullError``. nil: unbounded.
    public func maxDepth() async throws(FerryError) -> Int? {
        do {
            return try await connection.send(RedisCommand("HGET", [.string(keys.settings), "max_depth"])).string.flatMap {
                Int($0)
            }
        } catch {
            throw FerryError(error)
        }
    }

    /// Bounds the queue at `depth` jobs, or removes the bound (nil). Publishers see it within a second.
    public func setMaxDepth(_ depth: Int?) async throws(FerryError) {
        if let depth, depth < 1 {
            throw FerryError(.invalidInput, "the maximum depth must be at least 1 (got \(depth)); give none to remove it")
        }
        do {
            if let depth {
                try await connection.send(RedisCommand("HSET", [.string(keys.settings), "max_depth", .integer(Int64(depth))]))
            } else {
                try await connection.send(RedisCommand("HDEL", [.string(keys.settings), "max_depth"]))
            }
        } catch {
            throw FerryError(error)
        }
    }
}
