import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// `ferry publish` through the built binary, as a user or a script would run it.
@Suite("ferry publish")
struct PublishCommandTests {
    private func ferry(_ arguments: [String], input: [UInt8]? = nil, redisURL: String? = nil) async throws -> ProcessResult {
        let url: String
        if let redisURL { url = redisURL } else { url = try await TestRedis.sharedURL() }
        return try await runProcess(try ferryExecutable(), arguments, environment: ["FERRY_REDIS_URL": url], input: input)
    }

    private func entries(_ queue: String) async throws -> [StreamEntry] {
        let redis = try await TestRedis.connection()
        let reply = try await redis.send(
            RedisCommand("XRANGE", [.string(QueueKeys(queue: try QueueName(queue)).jobs), "-", "+"]))
        return StreamEntry.entries(from: reply)
    }

    @Test("prints the job id, and the entry holds type, data and attributes")
    func publishPrintsJobID() async throws {
        let queue = uniqueName("cli")
        let result = try await ferry([
            "publish", queue, "--type", "send", "--data", #"{"to":"a@example.com"}"#, "--attr", "tenant=acme", "--attr", "eq=a=b",
        ])
        #expect(result.status == 0, "\(result.standardError)")
        let stored = try await entries(queue)
        #expect(result.lines == [stored[0].id])
        let job = try stored[0].decodedJob()
        #expect(job.type == "send")
        #expect(job.attributes == ["tenant": "acme", "eq": "a=b"])
    }

    @Test("the payload comes from --data-file or standard input, byte for byte")
    func payloadSources() async throws {
        let queue = uniqueName("cli")
        let binary: [UInt8] = [0, 1, 0xFF, 0xFE, 10, 13, 0xC3]
        let file = FileManager.default.temporaryDirectory.appending(path: uniqueName("payload"))
        try Data(binary).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(try await ferry(["publish", queue, "--type", "f", "--data-file", file.path()]).status == 0)
        #expect(try await ferry(["publish", queue, "--type", "s"], input: binary.reversed()).status == 0)
        let stored = try await entries(queue)
        #expect(try stored.map { try $0.decodedJob().data } == [binary, binary.reversed()])
    }

    @Test("--count N publishes N jobs and prints N distinct ids")
    func count() async throws {
        let queue = uniqueName("cli")
        let result = try await ferry(["publish", queue, "--type", "n", "--count", "2500"])
        #expect(result.status == 0)
        #expect(Set(result.lines).count == 2500)
        #expect(try await entries(queue).map(\.id) == result.lines)
    }

    @Test("one idempotency key published from eight processes at once yields one entry and one id")
    func idempotentAcrossProcesses() async throws {
        let queue = uniqueName("cli")
        let results = try await withThrowingTaskGroup(of: ProcessResult.self) { group in
            for index in 0..<8 {
                group.addTask {
                    try await ferry(["publish", queue, "--type", "t", "--data", "\(index)", "--idempotency-key", "invoice-9"])
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.allSatisfy { $0.status == 0 })
        #expect(Set(results.flatMap(\.lines)).count == 1)
        #expect(try await entries(queue).count == 1)
    }

    @Test(
        "bad input exits 2 with a message naming the problem, and writes nothing",
        arguments: [
            (["publish", "bad name", "--type", "t"], "invalid queue name"),
            (["publish", "QUEUE", "--type", ""], "type is empty"),
            (["publish", "QUEUE", "--type", "t", "--count", "2", "--job-id", "x"], "cannot be combined"),
            (["publish", "QUEUE", "--type", "t", "--data", "x", "--data-file", "/tmp/x"], "not both"),
            (["publish", "QUEUE", "--type", "t", "--attr", "novalue"], "must be name=value"),
            (["publish", "QUEUE", "--type", "t", "--data-file", "/nonexistent/file"], "cannot read --data-file"),
            (["publish", "QUEUE", "--type", "t", "--data", "12345", "--max-payload-bytes", "4"], "over the limit of 4 bytes"),
            (["publish", "QUEUE", "--type", "t", "--redis", "rediss://host:1"], "TLS"),
            (["publish", "QUEUE", "--type", "t", "--redis-cluster-map", "10.0.0.5:6379"], "\"10.0.0.5:6379\": expected"),
            (["publish"], "Missing expected argument"),
        ])
    func badInput(arguments: [String], message: String) async throws {
        let queue = uniqueName("cli")
        let result = try await ferry(arguments.map { $0 == "QUEUE" ? queue : $0 })
        #expect(result.status == 2)
        #expect(result.standardError.contains(message), "\(result.standardError)")
        #expect(try await entries(queue).isEmpty)
    }

    @Test("a payload over the 1 MiB default from standard input is refused without reading it all")
    func hugeStandardInput() async throws {
        let queue = uniqueName("cli")
        let result = try await ferry(["publish", queue, "--type", "t"], input: [UInt8](repeating: 65, count: 3 << 20))
        #expect(result.status == 2)
        #expect(result.standardError.contains("over the limit of 1048576 bytes"))
    }

    @Test("with FERRY_REDIS_CLUSTER_MAP, ferry publish reaches a queue on a cluster node that announces a name no resolver knows")
    func clusterNodeMap() async throws {
        let cluster = try await RedisClusterProcess()
        let map = try await cluster.announceUnresolvableNames()
        var queue: String
        var owner: RedisServerProcess
        repeat {
            queue = uniqueName("cli")
            owner = try await cluster.node(servingKeyOf: QueueKeys(queue: try QueueName(queue)).jobs).node
        } while owner.port == cluster.nodes[0].port
        let result = try await runProcess(
            try ferryExecutable(), ["publish", queue, "--type", "t"],
            environment: ["FERRY_REDIS_URL": cluster.nodes[0].url, "FERRY_REDIS_CLUSTER_MAP": map])
        #expect(result.status == 0, "\(result.standardError)")
        let length = try await RedisClusterProcess.send(owner, "XLEN", QueueKeys(queue: try QueueName(queue)).jobs)
        #expect(length.integer == 1)
    }

    @Test("an unreachable Redis exits 3 and says what to check")
    func unreachableRedis() async throws {
        let port = try freeLoopbackPort()
        let result = try await ferry(["publish", uniqueName("cli"), "--type", "t"], redisURL: "redis://127.0.0.1:\(port)")
        #expect(result.status == 3)
        #expect(result.standardError.contains("Is redis-server running"))
    }

    @Test("a wrong password exits 3 and the password is not printed")
    func wrongPassword() async throws {
        let base = try await TestRedis.sharedURL()
        let url = base.replacingOccurrences(of: "redis://", with: "redis://nobody:SuperSecret123@")
        let result = try await ferry(["publish", uniqueName("cli"), "--type", "t"], redisURL: url)
        #expect(result.status == 3)
        #expect(result.standardError.contains("WRONGPASS"))
        #expect(!result.standardError.contains("SuperSecret123"))
    }

    @Test("Redis killed in the middle of a long publish: exit 3 and a clear error, not death by SIGPIPE")
    func redisDiesMidPublish() async throws {
        let server = try await RedisServerProcess()
        let publishing = Task {
            try await ferry(
                ["publish", "q", "--type", "t", "--data", String(repeating: "x", count: 2000), "--count", "2000000"],
                redisURL: server.url)
        }
        // Killed mid-publish: once some jobs landed, not before the first (a test that killed
        // too early would check only a refused connection).
        let redis = RedisConnection(configuration: try RedisConfiguration(url: server.url))
        let jobs = QueueKeys(queue: "q").jobs
        #expect(await eventually { (try await redis.send(RedisCommand("XLEN", [.string(jobs)])).integer ?? 0) > 0 })
        await server.kill9()
        let result = try await publishing.value
        #expect(result.status == 3, "\(result.standardError)")
        #expect(result.standardError.contains("ferry: error:"))
    }

    @Test("Redis out of memory exits 3 with Redis's OOM error")
    func outOfMemory() async throws {
        let server = try await RedisServerProcess(extraArguments: ["--maxmemory-policy", "noeviction"])
        let redis = try RedisConnection(url: server.url)
        try await redis.send(RedisCommand("SET", ["filler", .bytes([UInt8](repeating: 1, count: 2 << 20))]))
        try await redis.send(RedisCommand("CONFIG SET", ["maxmemory", "1mb"]))
        let result = try await ferry(["publish", "q", "--type", "t"], redisURL: server.url)
        #expect(result.status == 3)
        #expect(result.standardError.contains("OOM"), "\(result.standardError)")
    }
}

@Suite("ferry peek")
struct PeekCommandTests {
    @Test("shows valid jobs and names the field of a malformed entry written by hand")
    func peek() async throws {
        let url = try await TestRedis.sharedURL()
        let queue = uniqueName("peek")
        let redis = try await TestRedis.connection()
        let jobs = QueueKeys(queue: try QueueName(queue)).jobs
        try await redis.send(RedisCommand("XADD", [.string(jobs), "*", "type", "send", "data", "{}", "attr.k", "v"]))
        try await redis.send(RedisCommand("XADD", [.string(jobs), "*", "data", "no type"]))
        let table = try await runProcess(try ferryExecutable(), ["peek", queue, "--redis", url])
        #expect(table.status == 0)
        #expect(table.lines.count == 3)
        #expect(table.lines[1].contains("send") && table.lines[1].contains("k=v"))
        #expect(table.lines[2].contains("MALFORMED") && table.lines[2].contains("field \"type\": missing"))

        let json = try await runProcess(try ferryExecutable(), ["peek", queue, "--json", "--redis", url])
        let rows = try JSONSerialization.jsonObject(with: Data(json.outputBytes)) as? [[String: Any]]
        #expect(rows?.count == 2)
        #expect(rows?[0]["type"] as? String == "send")
        #expect((rows?[1]["malformed"] as? String)?.contains("type") == true)
    }
}
