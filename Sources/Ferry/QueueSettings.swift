import FerryRedis

/// Settings of a whole queue that every publisher and worker reads from Redis
/// (`ferry:{Q}:settings`), so they change without a deploy: `ferry queue set`.
public struct QueueSettings: QueueStore {
    /// The queue, its keys and the connection every call uses.
    public let scope: QueueScope

    /// A store of `scope.queue`; nothing is sent until a method is called.
    public init(_ scope: QueueScope) { self.scope = scope }

    /// What every publisher reads: the queue's maximum depth and its quota per key.
    public struct Bounds: Sendable, Hashable {
        /// The most jobs not yet finished (in the slowest group) the queue takes; publishing past
        /// it is refused with ``QueueFullError``. nil: unbounded.
        public var maxDepth: Int?
        /// The most unfinished jobs one value of the jobs' `key` may have; the next is refused
        /// with ``QueueFullError`` naming the key. nil: no quota.
        public var maxPendingPerKey: Int?

        /// Whether publishing has anything to check.
        public var isEmpty: Bool { maxDepth == nil && maxPendingPerKey == nil }
    }

    /// The queue's bounds (`max_depth`, `max_pending_per_key`).
    public func bounds() async throws(FerryError) -> Bounds {
        do {
            let values =
                try await connection.send(
                    RedisCommand("HMGET", [.string(keys.settings), "max_depth", "max_pending_per_key"])
                ).array?.map { $0.string.flatMap { Int($0) } } ?? []
            return Bounds(maxDepth: values.first ?? nil, maxPendingPerKey: values.dropFirst().first ?? nil)
        } catch {
            throw FerryError(error)
        }
    }

    /// The most jobs not yet finished (in the slowest group) the queue takes; publishing past it
    /// is refused with ``QueueFullError``. nil: unbounded.
    public func maxDepth() async throws(FerryError) -> Int? { try await bounds().maxDepth }

    /// Bounds the queue at `depth` jobs, or removes the bound (nil). Publishers see it within a second.
    public func setMaxDepth(_ depth: Int?) async throws(FerryError) {
        try await set("max_depth", depth, what: "the maximum depth")
    }

    /// Gives each value of the jobs' `key` a quota of `count` unfinished jobs, or removes it
    /// (nil). Publishers see it within a second; jobs published before it are not counted.
    public func setMaxPendingPerKey(_ count: Int?) async throws(FerryError) {
        try await set("max_pending_per_key", count, what: "the quota per key")
    }

    private func set(_ field: String, _ value: Int?, what: String) async throws(FerryError) {
        if let value, value < 1 {
            throw FerryError(.invalidInput, "\(what) must be at least 1 (got \(value)); give none to remove it")
        }
        do {
            if let value {
                try await connection.send(RedisCommand("HSET", [.string(keys.settings), .string(field), .integer(Int64(value))]))
            } else {
                try await connection.send(RedisCommand("HDEL", [.string(keys.settings), .string(field)]))
            }
        } catch {
            throw FerryError(error)
        }
    }
}
