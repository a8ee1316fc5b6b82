import FerryRedis

/// A queue, its keys and the connection a store of its state speaks through.
public struct QueueScope: Sendable {
    /// The queue.
    public let queue: QueueName
    /// Its keys (``QueueKeys``).
    public let keys: QueueKeys
    /// Where every call goes; it may be shared with other work.
    public let connection: RedisConnection

    /// Nothing is sent until a store's method is called.
    public init(queue: QueueName, connection: RedisConnection) {
        self.queue = queue
        self.keys = QueueKeys(queue: queue)
        self.connection = connection
    }
}

/// One queue's state in Redis, read and written through one connection: what the stores of its
/// settings, limits, ordering keys, pauses, schedules and groups have in common, written once.
public protocol QueueStore: Sendable {
    /// The queue, its keys and the connection every call uses.
    var scope: QueueScope { get }
    /// A store of `scope.queue`, speaking through `scope.connection`.
    init(_ scope: QueueScope)
}

extension QueueStore {
    /// Reads and writes through `connection`; nothing is sent until a method is called.
    public init(queue: QueueName, connection: RedisConnection) {
        self.init(QueueScope(queue: queue, connection: connection))
    }

    /// The queue.
    public var queue: QueueName { scope.queue }
    var keys: QueueKeys { scope.keys }
    var connection: RedisConnection { scope.connection }

    /// Sends one command, its failure as a ``FerryError`` (which keeps Redis's error).
    @discardableResult
    func send(_ command: RedisCommand) async throws(FerryError) -> RedisReply {
        try await connection.sendReportingFerryError(command)
    }

    /// Runs one of Ferry's scripts, its failure as a ``FerryError``.
    @discardableResult
    func send(_ script: RedisScript, keys: [RedisArgument], arguments: [RedisArgument]) async throws(FerryError) -> RedisReply {
        do { return try await connection.run(script, keys: keys, arguments: arguments) } catch { throw FerryError(error) }
    }
}

extension RedisConnection {
    /// Sends `command`, its failure as a ``FerryError`` (which keeps Redis's error code): what
    /// the library's stores and inspectors throw, so a command-line tool or the HTTP API maps
    /// it to an exit code or a status without knowing Redis's errors.
    @discardableResult
    nonisolated func sendReportingFerryError(_ command: RedisCommand) async throws(FerryError) -> RedisReply {
        do { return try await send(command) } catch { throw FerryError(error) }
    }

    /// Sends `commands` in one pipeline, a failure as a ``FerryError``.
    nonisolated func pipelineReportingFerryError(_ commands: [RedisCommand]) async throws(FerryError) -> [RedisReply] {
        do { return try await pipeline(commands) } catch { throw FerryError(error) }
    }
}
