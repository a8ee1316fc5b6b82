import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `--redis URL`, shared by every subcommand that talks to Redis.
struct RedisOptions: ParsableArguments {
    @Option(
        name: .customLong("redis"),
        help: ArgumentHelp(
            "Redis URL: redis://[user:password@]host:port/db or unix:///path/to/socket.",
            discussion:
                "Defaults to $FERRY_REDIS_URL, then \(RedisConfiguration.defaultURL). Prefer the environment variable for URLs with a password: command lines are visible to other users.",
            valueName: "url"))
    var url: String?

    @Option(
        name: .customLong("redis-cluster-map"),
        help: ArgumentHelp(
            "Where to dial Redis Cluster nodes Ferry cannot reach at the address they announce: announced=dialled pairs, comma-separated.",
            discussion:
                "Defaults to $FERRY_REDIS_CLUSTER_MAP. For nodes behind a TLS sidecar each, NAT or port forwards: 10.0.0.5:6379=127.0.0.1:7001,10.0.0.6:6379=127.0.0.1:7002.",
            valueName: "map"))
    var clusterMap: String?

    /// The URL from the flag, the environment, or the default, in that order.
    var resolvedURL: String {
        url ?? ProcessInfo.processInfo.environment["FERRY_REDIS_URL"].flatMap { $0.isEmpty ? nil : $0 }
            ?? RedisConfiguration.defaultURL
    }

    /// The settings from the URL and the cluster node map (flag, then environment).
    func configuration() throws(RedisError) -> RedisConfiguration {
        var configuration = try RedisConfiguration(url: resolvedURL)
        if let map = clusterMap ?? ProcessInfo.processInfo.environment["FERRY_REDIS_CLUSTER_MAP"] {
            configuration.clusterNodeMap = try RedisConfiguration.clusterNodeMap(parsing: map)
        }
        return configuration
    }

    /// A connection that has already dialled, so an unreachable Redis or a wrong password is
    /// reported before any other work.
    func connect(clientName: String) async throws -> RedisConnection {
        var configuration = try configuration()
        configuration.clientName = clientName
        let connection = RedisConnection(configuration: configuration)
        try await connection.connect()
        return connection
    }
}
