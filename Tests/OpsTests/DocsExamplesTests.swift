import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@Suite("Examples in the docs")
struct DocsExamplesTests {
    /// The first ```python block of docs/wire-format.md, exactly as a reader would copy it.
    private func pythonExample() throws -> String {
        let markdown = try String(contentsOf: repositoryRoot.appending(path: "docs/wire-format.md"), encoding: .utf8)
        let afterFence = try #require(markdown.range(of: "```python\n"))
        let end = try #require(markdown.range(of: "\n```", range: afterFence.upperBound..<markdown.endIndex))
        return String(markdown[afterFence.upperBound..<end.lowerBound])
    }

    @Test(
        "the Python producer in docs/wire-format.md, run outside the repository, publishes jobs the Swift side reads, and dedups by key"
    )
    func pythonProducerExample() async throws {
        let queue = uniqueName("docs")
        // From an empty folder: the sample must need no file of the repository.
        let elsewhere = FileManager.default.temporaryDirectory.appending(path: uniqueName("elsewhere"))
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: elsewhere) }
        let result = try await runProcess(
            try executable(named: "sh"),
            ["-c", "cd \"$1\" && exec python3 -c \"$2\"", "sh", elsewhere.path(), try pythonExample()],
            environment: ["FERRY_REDIS_URL": try await TestRedis.sharedURL(), "FERRY_QUEUE": queue])
        #expect(result.status == 0, "\(result.standardError)")
        let lines = result.lines
        try #require(lines.count == 3)
        let first = lines[1].split(separator: " "), second = lines[2].split(separator: " ")
        #expect(first.first == "1" && second.first == "0")
        #expect(first.last == second.last, "the duplicate returns the first job id")

        let redis = try await TestRedis.connection()
        let keys = QueueKeys(queue: try QueueName(queue))
        let jobs = try StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(keys.jobs), "-", "+"])))
            .map { try $0.decodedJob() }
        #expect(jobs.map(\.type) == ["send-welcome", "send-receipt"])
        #expect(jobs[0].jobID == lines[0])
        #expect(jobs[0].attributes == ["tenant": "acme"])
        #expect(jobs[1].idempotencyKey == "order:42")
        let dedupKey = keys.publishDedup(idempotencyKey: "order:42")
        #expect(dedupKey.contains(":idem:pub:~"), "a key with a colon is hashed the same way in Python and Swift")
        #expect(try await redis.send(RedisCommand("EXISTS", [.string(dedupKey)])) == .integer(1))
    }

    @Test("the publish script inlined in the Python sample is ops/lua/publish.lua, and that is the worker's own")
    func inlinedPublishScriptMatches() throws {
        func code(_ text: String) -> [String] {
            text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("--") && !$0.isEmpty }
        }
        let sample = try pythonExample()
        let start = try #require(sample.range(of: "PUBLISH_LUA = \"\"\"\n"))
        let end = try #require(sample.range(of: "\"\"\"", range: start.upperBound..<sample.endIndex))
        let shipped = try String(contentsOf: repositoryRoot.appending(path: "ops/lua/publish.lua"), encoding: .utf8)
        let own = try String(contentsOf: repositoryRoot.appending(path: "Sources/Ferry/Scripts/publish.lua"), encoding: .utf8)
        #expect(code(String(sample[start.upperBound..<end.lowerBound])) == code(shipped))
        #expect(code(shipped) == code(own))
    }
}
