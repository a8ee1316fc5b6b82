import Logging
import Synchronization

/// A fixed set of connections to one Redis, handed out in turn: for a server whose requests each
/// send a few commands, so that they wait on several connections instead of queueing on one.
/// Each ``RedisConnection`` blocks a thread of its own on its socket (hiredis), so the set is
/// small and fixed; it dials lazily, as each connection does.
public final class RedisConnectionPool: Sendable {
    /// The connections, in the order they are handed out.
    public let connections: [RedisConnection]
    private let turn = Atomic<Int>(0)

    /// `size` connections (at least one) with `configuration`.
    public init(configuration: RedisConfiguration, size: Int, logger: Logger = Logger(label: "ferry.redis")) {
        connections = (0..<max(size, 1)).map { _ in RedisConnection(configuration: configuration, logger: logger) }
    }

    /// One connection: each call the next in turn. Commands sent one after another, each after
    /// the last one's reply, keep their order across connections.
    public var next: RedisConnection {
        let index = turn.add(1, ordering: .relaxed).oldValue
        return connections[(index % connections.count + connections.count) % connections.count]
    }

    /// Dials every connection now, so a wrong address or password fails at start.
    public func connect() async throws(RedisError) {
        for connection in connections { try await connection.connect() }
    }
}
