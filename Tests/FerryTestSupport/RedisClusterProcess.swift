import FerryRedis
import Foundation

/// A real three-node Redis Cluster on loopback (masters only), each node a ``RedisServerProcess``
/// with cluster mode on, joined with `CLUSTER MEET` and given a third of the hash slots each.
public final class RedisClusterProcess: @unchecked Sendable {
    // @unchecked: the nodes are set once in init and only read afterwards.
    public let nodes: [RedisServerProcess]

    /// Starts the nodes and waits until every one reports `cluster_state:ok` and knows the others.
    public init() async throws {
        var nodes: [RedisServerProcess] = []
        var busPorts: [Int] = []
        for _ in 0..<3 {
            // The bus port defaults to the port + 10,000, which may be taken or above 65,535.
            let busPort = try freeLoopbackPort()
            nodes.append(
                try await RedisServerProcess(extraArguments: [
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
                    "--cluster-port", "\(busPort)",
                ]))
            busPorts.append(busPort)
        }
        self.nodes = nodes
        let slotsPerNode = 16384 / nodes.count
        for (index, node) in nodes.enumerated() {
            let first = index * slotsPerNode
            let last = index == nodes.count - 1 ? 16383 : first + slotsPerNode - 1
            try await Self.send(node, "CLUSTER", "ADDSLOTSRANGE", "\(first)", "\(last)")
        }
        for (node, busPort) in zip(nodes, busPorts).dropFirst() {
            try await Self.send(nodes[0], "CLUSTER", "MEET", "127.0.0.1", "\(node.port)", "\(busPort)")
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            var ready = true
            for node in nodes {
                let info = try await Self.send(node, "CLUSTER", "INFO").string ?? ""
                ready = ready && info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            }
            if ready { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestSupportError("the three-node Redis Cluster did not reach cluster_state:ok within 30 s")
    }

    /// The node serving the hash slot of `key`, and the slot.
    public func node(servingKeyOf key: String) async throws -> (node: RedisServerProcess, slot: Int) {
        let slot = Int(try await Self.send(nodes[0], "CLUSTER", "KEYSLOT", key).integer ?? -1)
        let index = min(slot / (16384 / nodes.count), nodes.count - 1)
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
