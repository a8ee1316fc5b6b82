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
    /// Its backlog when the publish was refused: the slowest group's unfinished jobs; for a
    /// key's quota, that key's unfinished jobs.
    public var depth: Int
    /// Its maximum depth, or the quota per key.
    public var maxDepth: Int
    /// How many jobs the refused publish would have added (of the key, for a key's quota).
    public var refused: Int
    /// The job key whose quota refused it (`--max-pending-per-key`); nil when the whole queue is full.
    public var key: String?
    /// When publishing again may fit, from how fast the slowest group has been finishing jobs;
    /// nil when that is not known yet (the first refusal, or nothing finished meanwhile).
    public var retryAfter: Duration?

    /// A refusal by the queue's maximum depth, or by `key`'s quota.
    public init(
        queue: QueueName, depth: Int, maxDepth: Int, refused: Int, key: String? = nil, retryAfter: Duration? = nil
    ) {
        self.queue = queue
        self.depth = depth
        self.maxDepth = maxDepth
        self.refused = refused
        self.key = key
        self.retryAfter = retryAfter
    }

    /// What was refused and what to do.
    public var description: String {
        let hint = retryAfter.map { "; at the rate jobs are finishing, try again in about \(Self.text($0))" } ?? ""
        if let key {
            return
                "key \"\(key.debugEscaped)\" of queue \(queue) has \(depth) jobs not yet finished, at most \(maxDepth) per key; \(refused) more would not fit and nothing was published. Publish again once its jobs have finished, or raise the quota: ferry queue set \(queue) --max-pending-per-key N"
        }
        return
            "queue \(queue) is full: \(depth) jobs not yet finished (the slowest group's), at most \(maxDepth); \(refused) more would not fit and nothing was published\(hint). Publish again once workers have caught up, or raise the limit: ferry queue set \(queue) --max-depth N"
    }

    private static func text(_ duration: Duration) -> String {
        let milliseconds = duration.milliseconds
        return milliseconds < 1000 ? "\(milliseconds)ms" : "\((milliseconds + 999) / 1000)s"
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
