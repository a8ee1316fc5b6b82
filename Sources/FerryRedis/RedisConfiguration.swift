import Foundation

/// Where a ``RedisConnection`` dials and how it behaves, usually parsed from a URL.
///
/// Accepted URLs:
/// - `redis://[user:password@]host[:port][/db]` (port 6379 and database 0 by default; `[::1]` for IPv6)
/// - `unix:///path/to/socket[?db=N]`, or `unix://[user:password@]/path/to/socket`
///
/// `rediss://` is refused: hiredis 0.14 has no TLS, so run a TLS sidecar such as stunnel in client
/// mode and point Ferry at its plain local port.
public struct RedisConfiguration: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The socket to dial.
    public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
        case tcp(host: String, port: Int)
        case unixSocket(path: String)

        /// `host:port` (`[::1]:6379` for IPv6) or the socket's path: what logs and errors name.
        public var description: String {
            switch self {
            case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unixSocket(let path): path
            }
        }
    }

    /// Where Redis listens: host and port, or a Unix socket.
    public var endpoint: Endpoint
    /// ACL user name for `AUTH user password`; nil authenticates as `default` when a password is set.
    public var username: String?
    /// Sent with `AUTH` after each dial; redacted from every description and log.
    public var password: String?
    /// The logical database chosen with `SELECT` after each dial.
    public var database: Int
    /// How long a dial may take before it fails.
    public var connectTimeout: Duration = .seconds(5)
    /// How long any one read or write may wait for Redis. A blocking command (`XREADGROUP BLOCK`)
    /// passes its own, longer timeout so the socket gives up just after Redis would have answered.
    public var commandTimeout: Duration = .seconds(5)
    /// The first wait before re-dialling after a failed dial; it doubles per failure up to ``maximumReconnectDelay``.
    public var minimumReconnectDelay: Duration = .milliseconds(100)
    /// The cap on the wait between dials, so a recovered Redis is found again soon.
    public var maximumReconnectDelay: Duration = .seconds(2)
    /// Sent as `CLIENT SETNAME` after each dial so `CLIENT LIST` shows who is connected.
    public var clientName: String?
    /// Where to dial Redis Cluster nodes, by the address the cluster gives for them (`host:port`
    /// as in `MOVED` replies and `CLUSTER NODES`); a node not in the map is dialled at that
    /// address. For nodes Ferry cannot reach at their own address: each behind a TLS sidecar of
    /// its own (hiredis 0.14 has no TLS), behind NAT, or through port forwards.
    public var clusterNodeMap: [String: Endpoint] = [:]

    /// Settings without parsing a URL; see ``init(url:)`` for `redis://` and `unix://`.
    public init(endpoint: Endpoint, username: String? = nil, password: String? = nil, database: Int = 0) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
    }

    /// Parses a ``clusterNodeMap`` written as `announced=dialled` pairs separated by commas:
    /// `10.0.0.5:6379=127.0.0.1:7001,10.0.0.6:6379=127.0.0.1:7002` (as `FERRY_REDIS_CLUSTER_MAP`
    /// and `--redis-cluster-map` take it).
    ///
    /// - Throws: ``RedisError`` of kind ``RedisError/Kind/invalidConfiguration`` naming the pair
    ///   that is wrong.
    public static func clusterNodeMap(parsing text: String) throws(RedisError) -> [String: Endpoint] {
        var map: [String: Endpoint] = [:]
        for pair in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !pair.isEmpty {
            let sides = pair.split(separator: "=", omittingEmptySubsequences: false)
            guard sides.count == 2, Endpoint(clusterAddress: sides[0], from: .unixSocket(path: "")) != nil,
                let dialled = Endpoint(clusterAddress: sides[1], from: .unixSocket(path: ""))
            else {
                throw RedisError(
                    kind: .invalidConfiguration,
                    message:
                        "invalid Redis Cluster node map entry \"\(pair)\": expected announced-host:port=dialled-host:port, pairs separated by commas"
                )
            }
            map[String(sides[0])] = dialled
        }
        return map
    }

    /// The default Ferry talks to when no URL is given: a local Redis on its standard port.
    public static let defaultURL = "redis://127.0.0.1:6379"

    /// Parses a Redis URL.
    ///
    /// - Throws: ``RedisError`` of kind ``RedisError/Kind/invalidConfiguration`` naming what is
    ///   wrong. The URL itself is never echoed, since it may hold a password.
    public init(url: String) throws(RedisError) {
        func invalid(_ problem: String) -> RedisError {
            RedisError(
                kind: .invalidConfiguration,
                message: "invalid Redis URL: \(problem); expected redis://[user:password@]host:port/db or unix:///path/to/socket")
        }
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw invalid("it is not a URL")
        }
        var database = 0
        var databaseText: String?
        switch scheme {
        case "redis":
            guard var host = components.host, !host.isEmpty else { throw invalid("no host") }
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            let port = components.port ?? 6379
            guard (1...65_535).contains(port) else { throw invalid("port \(port) is out of range") }
            self.init(endpoint: .tcp(host: host, port: port))
            let path = components.path.drop { $0 == "/" }
            if !path.isEmpty { databaseText = String(path) }
        case "unix":
            guard !components.path.isEmpty else { throw invalid("no socket path") }
            self.init(endpoint: .unixSocket(path: components.path))
        case "rediss":
            throw RedisError(
                kind: .invalidConfiguration,
                message:
                    "rediss:// (TLS) is not supported: hiredis 0.14 has no TLS. Run a TLS sidecar (stunnel in client mode, see ops/) and use redis://127.0.0.1:<its port>"
            )
        default:
            throw invalid("unknown scheme \"\(scheme)\"")
        }
        if let queryDatabase = components.queryItems?.first(where: { $0.name == "db" })?.value {
            databaseText = queryDatabase
        }
        if let databaseText {
            guard let parsed = Int(databaseText), parsed >= 0 else {
                throw invalid("the database must be a number such as /0")
            }
            database = parsed
        }
        self.database = database
        if let user = components.user, !user.isEmpty { self.username = user }
        if let password = components.password, !password.isEmpty { self.password = password }
    }

    /// The configuration as a URL with the password replaced by `***`, safe for logs and errors.
    public var redactedURL: String {
        var credentials = ""
        if username != nil || password != nil {
            credentials = (username ?? "") + (password == nil ? "" : ":***") + "@"
        }
        switch endpoint {
        case .tcp(let host, let port):
            let printedHost = host.contains(":") ? "[\(host)]" : host
            return "redis://\(credentials)\(printedHost):\(port)/\(database)"
        case .unixSocket(let path):
            return "unix://\(credentials)\(path)" + (database == 0 ? "" : "?db=\(database)")
        }
    }

    public var description: String { redactedURL }

    /// Also redacted, so `String(reflecting:)` and `dump` cannot print the password either.
    public var debugDescription: String { "RedisConfiguration(\(redactedURL))" }
}
