import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// `ferry worker --push` as a real process, against a real HTTP endpoint and redis-server.
@Suite("ferry worker --push processes")
struct PushWorkerProcessTests {
    @Test("jobs published by redis-py are pushed, signed, and acknowledged; notifications follow; SIGTERM exits 0")
    func pushesJobs() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let server = try await PushEndpointServer(secret: "from-file")
        defer { Task { await server.stop() } }
        let queue = uniqueName("pushcli")
        let secretFile = FileManager.default.temporaryDirectory.appending(path: uniqueName("secret")).path()
        try "from-file\n".write(toFile: secretFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: secretFile) }
        let python = try await runPython(
            """
            import redis, sys
            r = redis.Redis.from_url(sys.argv[1])
            for n in range(3):
                r.xadd(sys.argv[2], {"type": "t", "data": '{"n": %d}' % n, "attr.respond": "204"})
            r.xadd(sys.argv[2], {"type": "t", "data": "x", "job_id": "refused", "attr.respond": "422"})
            """, [url, QueueKeys(queue: try QueueName(queue)).jobs])
        #expect(python.status == 0, "\(python.standardError)")

        let log = FileManager.default.temporaryDirectory.appending(path: uniqueName("push-worker")).path()
        let worker = try ChildProcess(
            try ferryExecutable(),
            [
                "worker", queue, "--push", server.url(), "--push-header", "Authorization: Bearer t0ken", "--push-secret-file",
                secretFile, "--notify", server.url("/respond/204"),
            ],
            environment: ProcessInfo.processInfo.environment.merging(["FERRY_REDIS_URL": url]) { $1 },
            standardOutput: log, standardError: log + ".err")
        #expect(await eventually { server.requests.filter { $0.path == "/respond/204" }.count == 4 })
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)

        let pushes = server.requests.filter { $0.path == "/" }
        #expect(pushes.count == 4)
        #expect(pushes.allSatisfy { $0.signatureValid == true && $0.headers["authorization"] == "Bearer t0ken" })
        let dead = StreamEntry.entries(
            from: try await redis.send(
                RedisCommand("XRANGE", [.string(QueueKeys(queue: try QueueName(queue)).deadLetter), "-", "+"])))
        #expect(dead.count == 1)
        #expect(dead.first?.value(of: "dead_letter.error") == Array("HTTP 422: answer 422".utf8))
        let logText = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(!logText.contains("t0ken") && !logText.contains("from-file"), "no secrets in logs")
    }

    @Test(
        "bad push settings are refused at start-up with exit code 2, before any job is read",
        arguments: [
            (["--push", "not a url"], "not a URL"),
            (["--push", "ftp://example.com/jobs"], "only http and https"),
            (["--push", "http:///jobs"], "no host"),
            (["--push", "http://127.0.0.1/", "--push-header", "NoColonHere"], "Name: value"),
            (["--push", "http://127.0.0.1/", "--push-secret-file", "/nonexistent/secret"], "cannot read the secret file"),
            (["--push", "http://127.0.0.1/", "--push-format", "xml"], "wrapped or raw"),
            (["--push", "http://127.0.0.1/", "--push-timeout", "soon"], "--push-timeout"),
            (["--push", "http://127.0.0.1/", "--push-permanent-statuses", "410,abc"], "status codes"),
            (["--push", "http://127.0.0.1/", "--exec", "true"], "not both"),
            (["--push", "http://127.0.0.1/", "--notify", "mailto:ops@example.com"], "--notify URL"),
        ] as [([String], String)])
    func badPushSettings(options: [String], message: String) async throws {
        let queue = uniqueName("badpush")
        let result = try await runProcess(
            try ferryExecutable(), ["worker", queue] + options,
            environment: ["FERRY_REDIS_URL": try await TestRedis.sharedURL()])
        #expect(result.status == 2, "\(result.standardError)")
        #expect(result.standardError.contains(message), "\(result.standardError)")
        let redis = try await TestRedis.connection()
        #expect(try await redis.send(RedisCommand("EXISTS", [.string(QueueKeys(queue: try QueueName(queue)).jobs)])).integer == 0)
    }
}
