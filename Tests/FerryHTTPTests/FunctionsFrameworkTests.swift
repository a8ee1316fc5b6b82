import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@testable import Ferry
@testable import FerryHTTP

/// Google's own Functions Framework (PyPI `functions-framework`) as the push endpoint: a handler
/// written for real Pub/Sub push reads Ferry's requests unchanged, in both signatures it offers.
@Suite("Push to Google's Functions Framework")
struct FunctionsFrameworkTests {
    /// The function source: each signature writes what it was given as one JSON line.
    static let source = #"""
        import base64, json, os
        import functions_framework

        def _write(record):
            with open(os.environ["FERRY_FF_LOG"], "a") as log:
                log.write(json.dumps(record) + "\n")

        def legacy(event, context):
            _write({"data": base64.b64decode(event["data"]).decode(), "attributes": event.get("attributes", {}),
                    "message_id": context.event_id, "publish_time": context.timestamp})

        @functions_framework.cloud_event
        def cloud(cloud_event):
            message = cloud_event.data["message"]
            _write({"data": base64.b64decode(message["data"]).decode(), "attributes": message.get("attributes", {}),
                    "message_id": message["messageId"], "publish_time": message["publishTime"],
                    "type": cloud_event["type"]})
        """#

    @Test(
        "jobs pushed to a Functions Framework function arrive with data, attributes, message id and publish time, and are acknowledged",
        arguments: [("legacy", "event"), ("cloud", "cloudevent")])
    func pushToFunctionsFramework(target: String, signature: String) async throws {
        let scratch = FileManager.default.temporaryDirectory.appending(path: uniqueName("ff"))
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let sourcePath = scratch.appending(path: "main.py").path(), logPath = scratch.appending(path: "calls.log").path()
        try Self.source.write(toFile: sourcePath, atomically: true, encoding: .utf8)
        let port = try freeLoopbackPort()
        let function = try ChildProcess(
            try executable(named: "functions-framework"),
            [
                "--source", sourcePath, "--target", target, "--signature-type", signature, "--host", "127.0.0.1", "--port",
                String(port),
            ],
            environment: ProcessInfo.processInfo.environment.merging(["FERRY_FF_LOG": logPath]) { $1 },
            standardError: scratch.appending(path: "ff.err").path())
        defer { function.signal(SIGKILL) }
        #expect(await eventually(.seconds(30)) { isListening(port: port) }, "functions-framework started")
        #expect(function.isRunning, "functions-framework bound its port: \(Self.errors(scratch))")

        let setup = try await TestQueue("ff")
        let receipts = try await setup.publisher.publish(
            (0..<3).map { JobMessage(type: "t", data: "payload \($0)", attributes: ["tenant": "acme"]) })
        var configuration = Worker.Configuration()
        configuration.consumer = uniqueName("c")
        // A loaded machine can keep the function's first requests waiting or fail them; the proof
        // is what a request that reaches the function carries, so a few retries are allowed.
        configuration.retry = RetryPolicy(maxAttempts: 6, minimumBackoff: .milliseconds(200), maximumBackoff: .seconds(2))
        let worker = Worker(
            queue: setup.queue, redis: setup.redisConfiguration, handlers: [:], configuration: configuration,
            fallbackHandler: PushJobHandler(endpoint: PushEndpoint(url: "http://127.0.0.1:\(port)/"), concurrency: 4))
        let running = Task { try await worker.run() }
        func calls() -> [[String: Any]] {
            ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
        }
        #expect(await eventually(.seconds(40)) { calls().count == 3 }, "function log: \(Self.errors(scratch))")
        #expect(await eventually { try await setup.pendingCount() == 0 }, "every 200 from the function acknowledged its job")
        worker.stop()
        try await running.value
        let dead = try await setup.deadEntries()
        let reasons = dead.map { $0.fields.map { String(decoding: $0.name + [61] + $0.value, as: UTF8.self) } }
        #expect(dead.isEmpty, "dead letters: \(reasons)")

        let entries = StreamEntry.entries(
            from: try await setup.redis.send(RedisCommand("XRANGE", [.string(setup.keys.jobs), "-", "+"])))
        #expect(Set(calls().compactMap { $0["message_id"] as? String }) == Set(entries.map(\.id)))
        #expect(Set(calls().compactMap { $0["data"] as? String }) == ["payload 0", "payload 1", "payload 2"])
        #expect(calls().allSatisfy { ($0["attributes"] as? [String: String]) == ["tenant": "acme"] })
        #expect(calls().allSatisfy { ($0["publish_time"] as? String)?.hasSuffix("Z") == true })
        if signature == "cloudevent" {
            #expect(calls().allSatisfy { $0["type"] as? String == "google.cloud.pubsub.topic.v1.messagePublished" })
        }
        #expect(receipts.count == 3)
    }

    /// What functions-framework wrote to standard error, for a failure's message.
    static func errors(_ scratch: URL) -> String {
        (try? String(contentsOfFile: scratch.appending(path: "ff.err").path(), encoding: .utf8)) ?? "(none)"
    }
}
