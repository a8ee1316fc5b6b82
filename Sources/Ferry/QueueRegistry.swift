import FerryRedis

/// The queues a Redis holds, as one set (`ferry:queues`) that workers and publishers add their
/// queue to, so listing queues (`ferry serve`'s dashboard, its charts, `GET /v1/queues`) reads
/// one key instead of scanning the whole keyspace, which on a large Redis costs milliseconds of
/// its one thread a call. A queue only plain `XADD`s ever wrote is found by a scan
/// (``QueueInspector/queues(discover:)``) and added then; a name whose queue is gone is removed
/// by the same scan, so the set holds live queues only.
public enum QueueRegistry {
    /// The set's key. Outside every queue's hash slot: on Redis Cluster it is one key on one
    /// node, written with commands of its own.
    public static let key = "ferry:queues"

    /// Adds `queue` to the set.
    public static func register(_ queue: QueueName, connection: RedisConnection) async throws(FerryError) {
        try await add([queue.rawValue], connection: connection)
    }

    /// The command that adds `names` to the set (for callers that send it themselves).
    static func adding(_ names: some Collection<String>) -> RedisCommand {
        RedisCommand("SADD", [.string(key)] + names.map { .string($0) })
    }

    static func add(_ names: some Collection<String>, connection: RedisConnection) async throws(FerryError) {
        guard !names.isEmpty else { return }
        try await send(adding(names), connection: connection)
    }

    /// The names in the set.
    static func names(connection: RedisConnection) async throws(FerryError) -> Set<String> {
        let reply = try await send(RedisCommand("SMEMBERS", [.string(key)]), connection: connection)
        return Set((reply.array ?? []).compactMap(\.string))
    }

    /// Removes names whose queue is gone.
    static func remove(_ names: some Collection<String>, connection: RedisConnection) async throws(FerryError) {
        guard !names.isEmpty else { return }
        try await send(RedisCommand("SREM", [.string(key)] + names.map { .string($0) }), connection: connection)
    }

    /// Sends `command`; a failure, or an error reply, as a ``FerryError``.
    @discardableResult
    private static func send(_ command: RedisCommand, connection: RedisConnection) async throws(FerryError) -> RedisReply {
        do throws(RedisError) {
            let reply = try await connection.send(command)
            if let failed = reply.errorMessage { throw RedisError.server(failed, command: command.name) }
            return reply
        } catch {
            throw FerryError(error)
        }
    }
}
