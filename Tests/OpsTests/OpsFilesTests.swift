import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

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
}
