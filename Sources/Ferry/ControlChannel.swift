import FerryRedis

/// The control side of one worker run: the connection for acknowledgements, claims, scripts and
/// status writes, with the group commits that batch acknowledgements and status writes on it.
///
/// Made once per ``Worker/run()`` so the batchers always use that run's connection.
struct ControlChannel: Sendable {
    let connection: RedisConnection
    /// An entry to acknowledge, and the status hash to mark `succeeded` with it, if any.
    struct Acknowledgement: Sendable {
        let entryID: String
        var statusKey: String?
    }

    /// Acknowledges entries (`ack.lua`); the outcome is true when acknowledged, false when
    /// another consumer owns the entry, nil when the call failed.
    let acks: GroupCommit<Acknowledgement, Bool?>
    /// Sends status-hash commands; failures are logged and never change a job's outcome.
    let statusWrites: GroupCommit<[RedisCommand], Void>

    @discardableResult
    func send(_ command: RedisCommand, timeout: Duration? = nil) async throws(RedisError) -> RedisReply {
        try await connection.send(command, timeout: timeout)
    }

    @discardableResult
    func run(_ script: RedisScript, keys: [RedisArgument], arguments: [RedisArgument]) async throws(RedisError) -> RedisReply {
        try await connection.run(script, keys: keys, arguments: arguments)
    }

    func pipeline(_ commands: [RedisCommand]) async throws(RedisError) -> [RedisReply] {
        try await connection.pipeline(commands)
    }
}
