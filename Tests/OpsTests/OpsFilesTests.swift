import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

@Suite("Ops files, validated offline")
struct OpsFilesTests {
    @Test("docker-compose.yml matches the Compose specification")
    func composeSchema() async throws {
        let result = try await runProcess(
            try executable(named: "check-jsonschema"),
            ["--builtin-schema", "vendor.compose-spec", repositoryRoot.appending(path: "docker-compose.yml").path()])
        #expect(result.status == 0, "\(result.standardOutput)\(result.standardError)")
    }

    @Test("every YAML file passes yamllint")
    func yamlLint() async throws {
        let result = try await runProcess(
            try executable(named: "yamllint"),
            ["--strict", "-c", ".yamllint", "docker-compose.yml", "ops"].map {
                $0.hasPrefix("-") || $0 == "--strict" ? $0 : repositoryRoot.appending(path: $0).path()
            })
        #expect(result.status == 0, "\(result.standardOutput)\(result.standardError)")
    }

    @Test("ops/lua/publish.lua called by EVALSHA from Python publishes once per key, as documented")
    func publishScriptFromAnotherLanguage() async throws {
        let queue = try QueueName(uniqueName("lua"))
        let keys = QueueKeys(queue: queue)
        let script = """
            import sys, redis
            url, stream, dedup, script_path = sys.argv[1:5]
            r = redis.Redis.from_url(url)
            sha = r.script_load(open(script_path).read())
            fields = ["type", "ingest", "data", '{"doc": 7}', "idempotency_key", "doc-7", "v", "1"]
            first = r.evalsha(sha, 2, stream, dedup, 86400000, "", *fields)
            again = r.evalsha(sha, 2, stream, dedup, 86400000, "", *fields)
            print(first[0], first[1].decode(), again[0], again[1].decode())
            """
        let result = try await runPython(
            script,
            [
                try await TestRedis.sharedURL(), keys.jobs, keys.publishDedup(idempotencyKey: "doc-7"),
                repositoryRoot.appending(path: "ops/lua/publish.lua").path(),
            ])
        #expect(result.status == 0, "\(result.standardError)")
        let words = result.standardOutput.split(separator: " ").map(String.init)
        #expect(words.count == 4)
        #expect(words[0] == "1" && words[2] == "0", "added once, then reported as a duplicate")
        #expect(words[1] == words[3].trimmingCharacters(in: .whitespacesAndNewlines), "the duplicate returns the first job id")

        let redis = try await TestRedis.connection()
        let entries = StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(keys.jobs), "-", "+"])))
        #expect(entries.count == 1)
        #expect(try entries[0].decodedJob().idempotencyKey == "doc-7")
    }

    @Test(
        "ferry script publish_priority prints the publisher's own script, and its documented redis-cli call puts a job in its lane with a unique entry ID"
    )
    func priorityScriptFromAnotherLanguage() async throws {
        let printed = try await runProcess(try ferryExecutable(), ["script", "publish_priority"])
        #expect(printed.standardOutput == EmbeddedLuaScripts.publish_priority)
        let unknown = try await runProcess(try ferryExecutable(), ["script", "publish_everything"])
        #expect(unknown.status != 0 && unknown.standardError.contains("publish, publish_priority, schedule"))

        let readme = try String(contentsOf: repositoryRoot.appending(path: "ops/lua/README.md"), encoding: .utf8)
        let section = try #require(readme.range(of: "## publish_priority "))
        let start = try #require(readme.range(of: "```sh\n", range: section.upperBound..<readme.endIndex))
        let end = try #require(readme.range(of: "\n```", range: start.upperBound..<readme.endIndex))
        let name = uniqueName("lua-prio")
        let keys = QueueKeys(queue: try QueueName(name))
        let redis = try await TestRedis.connection()
        // A job already in the normal lane, added this millisecond by a plain XADD.
        let plain = try #require(
            try await redis.send(RedisCommand("XADD", [.string(keys.jobs), "*", "type", "t"])).string)
        let shell = String(readme[start.upperBound..<end.lowerBound])
            .replacingOccurrences(of: "{emails}", with: "{\(name)}").replacingOccurrences(
                of: "redis-cli", with: "redis-cli -u \"$URL\""
            ).replacingOccurrences(of: "$(ferry ", with: "$(\"$FERRY\" ")
        let result = try await runProcess(
            try executable(named: "sh"), ["-c", "cd \"$1\" && \(shell)", "sh", repositoryRoot.path()],
            environment: ["URL": try await TestRedis.sharedURL(), "FERRY": try ferryExecutable().path()])
        #expect(result.status == 0, "\(result.standardError)")
        let lane = StreamEntry.entries(
            from: try await redis.send(RedisCommand("XRANGE", [.string(keys.lane(.high)), "-", "+"])))
        #expect(lane.count == 1 && (try? lane.first?.decodedJob().priority) == .high)
        let laneID = try #require(lane.first?.id)
        #expect(!StreamEntry.isID(laneID, atOrBefore: plain), "above the normal lane's last entry")
        let next = try #require(try await redis.send(RedisCommand("XADD", [.string(keys.jobs), "*", "type", "t"])).string)
        #expect(!StreamEntry.isID(next, atOrBefore: laneID), "and the next plain XADD is above it: \(plain) \(laneID) \(next)")
    }

    @Test(
        "ops/lua/schedule.lua is the workers' own schedule script, and its documented redis-cli call schedules a job a worker delivers"
    )
    func scheduleScriptFromAnotherLanguage() async throws {
        func code(_ text: String) -> [String] {
            text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("--") && !$0.isEmpty }
        }
        let shipped = try String(contentsOf: repositoryRoot.appending(path: "ops/lua/schedule.lua"), encoding: .utf8)
        #expect(code(shipped) == code(EmbeddedLuaScripts.schedule), "ops/lua/schedule.lua is the embedded script")

        // The README's call, as written, on a queue of its own and the test's Redis.
        let readme = try String(contentsOf: repositoryRoot.appending(path: "ops/lua/README.md"), encoding: .utf8)
        let section = try #require(readme.range(of: "## schedule.lua"))
        let start = try #require(readme.range(of: "```sh\n", range: section.upperBound..<readme.endIndex))
        let end = try #require(readme.range(of: "\n```", range: start.upperBound..<readme.endIndex))
        let name = uniqueName("lua-at")
        let shell = String(readme[start.upperBound..<end.lowerBound])
            .replacingOccurrences(of: "{emails}", with: "{\(name)}").replacingOccurrences(
                of: "redis-cli", with: "redis-cli -u \"$URL\"")
        let url = try await TestRedis.sharedURL()
        let result = try await runProcess(
            try executable(named: "sh"), ["-c", "cd \"$1\" && \(shell)", "sh", repositoryRoot.path()], environment: ["URL": url])
        #expect(result.status == 0, "\(result.standardError)")
        let redis = try await TestRedis.connection()
        let queue = try QueueName(name)
        let status = try await JobStatus.load(jobID: "reminder-42", queue: queue, connection: redis)
        #expect(status?.state == .scheduled && status?.fields["deliver_at"] != nil)
        #expect(try await ScheduledJobs(queue: queue, connection: redis).runNow(jobID: "reminder-42"))
        let ran = RanJobs()
        var configuration = Worker.Configuration()
        configuration.consumer = uniqueName("lua-worker")
        let worker = Worker(
            queue: queue, redis: try RedisConfiguration(url: url),
            handlers: ["send-reminder": JobHandlerClosure { ran.record($0.id) }], configuration: configuration)
        let task = Task { try await worker.run() }
        #expect(await eventually { ran.ids == ["reminder-42"] })
        worker.stop()
        try await task.value
    }
}

/// Job ids a handler saw, from any task.
final class RanJobs: Sendable {
    private let seen = Mutex<[String]>([])
    func record(_ id: String) { seen.withLock { $0.append(id) } }
    var ids: [String] { seen.withLock { $0 } }
}
