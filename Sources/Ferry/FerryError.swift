import FerryRedis

/// Why a Ferry operation failed, with a code that maps onto the `ferry` exit codes.
///
/// Validation problems (``Code/invalidInput``) are the caller's to fix and nothing was written;
/// ``Code/redis`` keeps the underlying ``RedisError`` with its prefix (`OOM`, `NOAUTH`, …).
public struct FerryError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure: what decides the `ferry` exit code (2, 1, 3) and whether retrying can help.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        /// The input breaks a rule (queue name, empty type, payload size, …); nothing was written.
        public static let invalidInput = Code(name: "invalidInput")
        /// The thing asked for does not exist.
        public static let notFound = Code(name: "notFound")
        /// Redis was unreachable or refused; see ``FerryError/redisError``.
        public static let redis = Code(name: "redis")
        /// The queue is at its maximum depth (`ferry queue set --max-depth`); nothing was
        /// written. See ``FerryError/queueFull``.
        public static let queueFull = Code(name: "queueFull")
    }

    /// What kind of failure: input to fix, a thing missing, or Redis.
    public var code: Code
    /// What is wrong and what to do about it.
    public var message: String
    /// The Redis failure behind a ``Code/redis`` error.
    public var redisError: RedisError?
    /// The saturation behind a ``Code/queueFull`` error.
    public var queueFull: QueueFullError?

    /// A failure Ferry found itself; `message` names what is wrong and what to do.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// A Redis failure, kept whole so callers can still match its prefix (`OOM`, `NOPERM`).
    public init(_ redisError: RedisError) {
        self.code = .redis
        self.message = redisError.description
        self.redisError = redisError
    }

    /// A publish refused because the queue is full.
    public init(_ queueFull: QueueFullError) {
        self.code = .queueFull
        self.message = queueFull.description
        self.queueFull = queueFull
    }

    public var description: String { message }
}

/// A publish the queue refused because it is at its maximum depth: nothing was written. An HTTP
/// API answers it with 503; a producer backs off and tries again, or sheds the work.
public struct QueueFullError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The queue that is full.
    public var queue: QueueName
    /// Its backlog when the publish was refused: the slowest group's unfinished jobs.
    public var depth: Int
    /// Its maximum depth.
    public var maxDepth: Int
    /// How many jobs the refused publish would have added.
    public var refused: Int

    /// What was refused and what to do.
    public var description: String {
        "queue \(queue) is full: \(depth) jobs not yet finished (the slowest group's), at most \(maxDepth); \(refused) more would not fit and nothing was published. Publish again once workers have caught up, or raise the limit: ferry queue set \(queue) --max-depth N"
    }
}

extension RedisConnection {
    /// Sends `command`; a Redis error with `prefix` (a missing group, say) becomes `error`, which
    /// tells the user what to do instead of repeating Redis's words and maps to the right exit
    /// code. Any other Redis error is wrapped as a ``FerryError``.
    @discardableResult
    public nonisolated func send(
        _ command: RedisCommand, translating prefix: RedisErrorPrefix, into error: @autoclosure () -> FerryError
    ) async throws(FerryError) -> RedisReply {
        do {
            return try await send(command)
        } catch let redisError {
            guard redisError.prefix == prefix else { throw FerryError(redisError) }
            throw error()
        }
    }
}
