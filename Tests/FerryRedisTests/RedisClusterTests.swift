import FerryTestSupport
import Foundation
import Testing

@testable import FerryRedis

@Suite("Connections follow Redis Cluster redirections and failover on a real cluster")
struct RedisClusterTests {
    /// A key whose slot a node other than `nodes[0]` serves, with that node.
    static func keyElsewhere(_ cluster: RedisClusterProcess) async throws -> (key: String, node: RedisServerProcess) {
        while true {
            let key = "ferry:{\(uniqueName("q"))}:jobs"
            let (node, _) = try await cluster.node(servingKeyOf: key)
            if node.port != cluster.nodes[0].port { return (key, node) }
        }
    }

    @Test("MOVED: the connection moves to the node serving the slot, runs the command there, and stays")
    func followsMoved() async throws {
        let cluster = try await RedisClusterProcess()
        let (key, owner) = try await Self.keyElsewhere(cluster)
        let redis = try RedisConnection(url: cluster.nodes[0].url)

        let id = try await redis.send(RedisCommand("XADD", [.string(key), "*", "f", "v"]))
        #expect(id.string?.contains("-") == true)
        #expect(try await RedisClusterProcess.send(owner, "XLEN", key).integer == 1)
        // A script, unknown on the new node: NOSCRIPT there, then EVAL, all behind one call.
        let script = RedisScript(name: "xlen", source: "return redis.call('XLEN', KEYS[1])")
        let replies = try await redis.pipeline([
            script.command(keys: [.string(key)], arguments: []), RedisCommand("XLEN", [.string(key)]),
        ])
        #expect(replies == [.integer(1), .integer(1)])
        #expect(await redis.dialCount == 2, "one dial to the configured node, one to the slot's owner, none after")
    }

    @Test("ASK during a slot migration: ASKING and the command go to the importing node, and the connection stays")
    func followsAsk() async throws {
        let cluster = try await RedisClusterProcess()
        var key = ""
        var slot = 0
        repeat {
            key = "ferry:{\(uniqueName("q"))}:jobs"
            let (node, keySlot) = try await cluster.node(servingKeyOf: key)
            if node.port == cluster.nodes[0].port { slot = keySlot } else { key = "" }
        } while key.isEmpty
        let (source, target) = (cluster.nodes[0], cluster.nodes[1])
        try await RedisClusterProcess.send(target, "CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", try await cluster.nodeID(source))
        try await RedisClusterProcess.send(source, "CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", try await cluster.nodeID(target))

        let redis = try RedisConnection(url: source.url)
        let id = try await redis.send(RedisCommand("XADD", [.string(key), "*", "f", "v"]))
        #expect(id.string?.contains("-") == true, "the key is new, so the source answers ASK and the target stores it")

        let check = try RedisConnection(url: target.url)
        let onTarget = try await check.pipeline([RedisCommand("ASKING"), RedisCommand("XLEN", [.string(key)])])
        #expect(onTarget.last == .integer(1))
        #expect(await redis.dialCount == 1, "ASK is followed once, on a connection of its own")
    }

    @Test(
        "kill -9 of the primary a connection moved to: the connection goes back to the configured node and on to the promoted replica"
    )
    func followsFailover() async throws {
        let cluster = try await RedisClusterProcess(replicas: true)
        let (key, owner) = try await Self.keyElsewhere(cluster)
        let redis = try RedisConnection(url: cluster.nodes[0].url)
        try await redis.send(RedisCommand("XADD", [.string(key), "*", "f", "v"]))
        // On the connection that wrote, so it counts this write: the replica has it.
        #expect(try await redis.send(RedisCommand("WAIT", ["1", "5000"])).integer == 1)

        await owner.kill9()
        #expect(await eventually(.seconds(30)) { try await redis.send(RedisCommand("XLEN", [.string(key)])).integer == 1 })
    }

    @Test("with a node map, redirections go where the map says: nodes that announce unresolvable names are reached")
    func nodeMap() async throws {
        let cluster = try await RedisClusterProcess()
        let map = try await cluster.announceUnresolvableNames()
        let (key, owner) = try await Self.keyElsewhere(cluster)
        let ownerIndex = try #require(cluster.nodes.firstIndex { $0.port == owner.port })
        let announced = "node-\(ownerIndex).ferry.invalid:\(owner.port)"
        // redis-cli without -c shows the redirection as the node sends it.
        let reply = try await runProcess(try executable(named: "redis-cli"), ["-p", "\(cluster.nodes[0].port)", "XLEN", key])
        #expect(reply.standardOutput.contains(announced), "\(reply.standardOutput)")

        var configuration = try RedisConfiguration(url: cluster.nodes[0].url)
        configuration.clusterNodeMap = try RedisConfiguration.clusterNodeMap(parsing: map)
        let redis = RedisConnection(configuration: configuration)
        try await redis.send(RedisCommand("XADD", [.string(key), "*", "f", "v"]))
        #expect(try await RedisClusterProcess.send(owner, "XLEN", key).integer == 1)
        let primaries = try await redis.clusterPrimaries()?.map(\.endpoint.description).sorted()
        #expect(primaries == cluster.nodes.map { "127.0.0.1:\($0.port)" }.sorted())
    }

    @Test("a node map is read from announced=dialled pairs; a malformed pair is named")
    func nodeMapParsing() throws {
        let map = try RedisConfiguration.clusterNodeMap(parsing: "10.0.0.5:6379=127.0.0.1:7001, redis-b:6379=[::1]:7002,")
        #expect(map == ["10.0.0.5:6379": .tcp(host: "127.0.0.1", port: 7001), "redis-b:6379": .tcp(host: "::1", port: 7002)])
        #expect(
            RedisReply.error("MOVED 1 10.0.0.5:6379").clusterRedirection(from: .tcp(host: "x", port: 1), mapping: map)?.endpoint
                == .tcp(host: "127.0.0.1", port: 7001))
        for bad in ["10.0.0.5:6379", "10.0.0.5=127.0.0.1:7001", "a:1=b:c", "a:1=b:2=c:3"] {
            do {
                _ = try RedisConfiguration.clusterNodeMap(parsing: "ok:1=127.0.0.1:2,\(bad)")
                Issue.record("accepted \(bad)")
            } catch {
                #expect(error.kind == .invalidConfiguration && error.message.contains("\"\(bad)\""), "\(error)")
            }
        }
    }

    @Test("a MOVED or ASK reply is read with its node; an unknown host means the node that answered")
    func parsesRedirections() async throws {
        let current = RedisConfiguration.Endpoint.tcp(host: "10.0.0.1", port: 7000)
        let moved = RedisReply.error("MOVED 3999 10.0.0.2:6381").clusterRedirection(from: current)
        #expect(moved == ClusterRedirection(asking: false, endpoint: .tcp(host: "10.0.0.2", port: 6381)))
        let ask = RedisReply.error("ASK 3999 :6382").clusterRedirection(from: current)
        #expect(ask == ClusterRedirection(asking: true, endpoint: .tcp(host: "10.0.0.1", port: 6382)))
        #expect(
            RedisReply.error("MOVED 1 ?:6383").clusterRedirection(from: current)?.endpoint == .tcp(host: "10.0.0.1", port: 6383))
        #expect(RedisReply.error("MOVED 1 ::1:6384").clusterRedirection(from: current)?.endpoint == .tcp(host: "::1", port: 6384))
        #expect(RedisReply.error("ERR MOVED somewhere").clusterRedirection(from: current) == nil)
        #expect(RedisReply.status("MOVED 1 a:1").clusterRedirection(from: current) == nil)
    }
}
