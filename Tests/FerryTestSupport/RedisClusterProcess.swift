import FerryRedis
import Foundation

/// A real Redis Cluster on loopback: three primaries, each a ``RedisServerProcess`` with cluster
/// mode on, joined with `CLUSTER MEET` and given a third of the hash slots each; with
/// `replicas`, one replica per primary, so killing a primary promotes its replica.
public final class RedisClusterProcess: @unchecked Sendable {
    // @unchecked: the nodes are set once in init and only read afterwards.
    /// The primaries, then (with replicas) the replica of each, in the same order.
    public let nodes: [RedisServerProcess]
    private let primaryCount = 3

    /// Starts the nodes and waits until every one reports `cluster_state:ok` and knows the others
    /// (and each replica has synchronised with its primary).
    public init(replicas: Bool = false) async throws {
        var nodes: [RedisServerProcess] = []
        var busPorts: [Int] = []
        for _ in 0..<(replicas ? 6 : 3) {
            // The bus port defaults to the port + 10,000, which may be taken or above 65,535.
            let busPort = try freeLoopbackPort()
            nodes.append(
                try await RedisServerProcess(extraArguments: [
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
                    "--cluster-port", "\(busPort)",
                ]))
            busPorts.append(busPort)
        }
        self.nodes = nodes
        let slotsPerNode = 16384 / primaryCount
        for (index, node) in nodes.prefix(primaryCount).enumerated() {
            let first = index * slotsPerNode
            let last = index == primaryCount - 1 ? 16383 : first + slotsPerNode - 1
            try await Self.send(node, "CLUSTER", "ADDSLOTSRANGE", "\(first)", "\(last)")
        }
        for (node, busPort) in zip(nodes, busPorts).dropFirst() {
            try await Self.send(nodes[0], "CLUSTER", "MEET", "127.0.0.1", "\(node.port)", "\(busPort)")
        }
        try await waitUntil("every node knows the others") { node in
            let info = try await Self.send(node, "CLUSTER", "INFO").string ?? ""
            return info.contains("cluster_known_nodes:\(nodes.count)")
        }
        for (replica, primary) in zip(nodes.dropFirst(primaryCount), nodes) {
            let primaryID = try await Self.send(primary, "CLUSTER", "MYID").string ?? ""
            try await Self.send(replica, "CLUSTER", "REPLICATE", primaryID)
        }
        try await waitUntil("the cluster is ok and replicas are in sync") { node in
            let info = try await Self.send(node, "CLUSTER", "INFO").string ?? ""
            let replication = try await Self.send(node, "INFO", "replication").string ?? ""
            return info.contains("cluster_state:ok")
                && (replication.contains("role:master") || replication.contains("master_link_status:up"))
        }
    }

    private func waitUntil(_ what: String, _ condition: (RedisServerProcess) async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            var ready = true
            for node in nodes where ready { ready = try await condition(node) }
            if ready { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestSupportError("Redis Cluster: not within 30 s: \(what)")
    }

    /// Makes every node announce a name no resolver knows (`node-<i>.ferry.invalid`) in its
    /// redirections, as nodes behind TLS sidecars or NAT announce addresses a client cannot dial,
    /// and waits until every node has heard every name. Returns the node map that leads a client
    /// to them, as `--redis-cluster-map` takes it.
    public func announceUnresolvableNames() async throws -> String {
        let names = nodes.indices.map { "node-\($0).ferry.invalid" }
        for (node, name) in zip(nodes, names) {
            try await Self.send(node, "CONFIG", "SET", "cluster-announce-hostname", name)
            try await Self.send(node, "CONFIG", "SET", "cluster-preferred-endpoint-type", "hostname")
        }
        try await waitUntil("every node knows the others' names") { node in
            let known = try await Self.send(node, "CLUSTER", "NODES").string ?? ""
            return names.allSatisfy { known.contains("," + $0) }
        }
        return zip(nodes, names).map { "\($1):\($0.port)=127.0.0.1:\($0.port)" }.joined(separator: ",")
    }

    /// The node serving the hash slot of `key`, and the slot.
    public func node(servingKeyOf key: String) async throws -> (node: RedisServerProcess, slot: Int) {
        let slot = Int(try await Self.send(nodes[0], "CLUSTER", "KEYSLOT", key).integer ?? -1)
        let index = min(slot / (16384 / primaryCount), primaryCount - 1)
        return (nodes[index], slot)
    }

    /// The node's cluster ID, as `CLUSTER SETSLOT` takes it.
    public func nodeID(_ node: RedisServerProcess) async throws -> String {
        try await Self.send(node, "CLUSTER", "MYID").string ?? ""
    }

    /// Sends one command to the node on a connection of its own (no redirection involved).
    @discardableResult
    public static func send(_ node: RedisServerProcess, _ words: String...) async throws -> RedisReply {
        let connection = try RedisConnection(url: node.url)
        defer { Task { await connection.close() } }
        return try await connection.send(RedisCommand(words[0], words.dropFirst().map { .string($0) }))
    }
}
