import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// `ferry worker --admin-port`: /metrics, /healthz and /readyz of a real worker process.
@Suite("ferry worker admin endpoints")
struct AdminEndpointTests {
    /// GET on loopback with curl (a real HTTP client), returning status and body.
    func get(_ port: Int, _ path: String) async throws -> (status: Int, body: String) {
        let result = try await runProcess(
            try executable(named: "curl"), ["-s", "-m", "5", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)\(path)"])
        var lines = result.standardOutput.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let status = Int(lines.popLast() ?? "") ?? 0
        return (status, lines.joined(separator: "\n"))
    }

    /// The value of one sample line of /metrics, or nil when absent.
    func sample(_ metrics: String, _ prefix: String) -> Double? {
        metrics.split(separator: "\n").first { $0.hasPrefix(prefix + " ") }.flatMap {
            Double($0.split(separator: " ").last ?? "")
        }
    }

    func startWorker(
        _ queue: String, redisURL: String, port: Int, exec: String, options: [String] = [],
        log: String = FileManager.default.temporaryDirectory.appending(path: uniqueName("admin")).path()
    ) throws -> ChildProcess {
        try ChildProcess(
            try ferryExecutable(), ["worker", queue, "--exec", exec, "--admin-port", "\(port)", "--max-attempts", "1"] + options,
            environment: ProcessInfo.processInfo.environment.merging(["FERRY_REDIS_URL": redisURL]) { $1 },
            standardOutput: log, standardError: log + ".err")
    }

    @Test("ferry queue pause shows in /metrics (ferry_queue_paused 1), ferry inspect and the resume message")
    func pauseIsVisible() async throws {
        let url = try await TestRedis.sharedURL()
        let queue = uniqueName("paused")
        let port = try freeLoopbackPort()
        let worker = try startWorker(queue, redisURL: url, port: port, exec: "exit 0")
        defer { worker.signal(SIGKILL) }
        let environment = ["FERRY_REDIS_URL": url]
        let gauge = #"ferry_queue_paused{queue="\#(queue)",group="workers"}"#
        #expect(await eventually { sample(try await get(port, "/metrics").body, gauge) == 0 })
        let paused = try await runProcess(try ferryExecutable(), ["queue", "pause", queue], environment: environment)
        #expect(paused.status == 0 && paused.standardOutput.contains("\(queue): every group paused"), "\(paused.standardError)")
        #expect(await eventually { sample(try await get(port, "/metrics").body, gauge) == 1 })
        let inspect = try await runProcess(try ferryExecutable(), ["inspect", queue], environment: environment)
        #expect(inspect.standardOutput.contains("\(queue): PAUSED (every group)"), "\(inspect.standardOutput)")
        let resumed = try await runProcess(try ferryExecutable(), ["queue", "resume", queue], environment: environment)
        #expect(resumed.standardOutput.contains("\(queue): every group resumed"))
        #expect(await eventually { sample(try await get(port, "/metrics").body, gauge) == 0 })
    }

    @Test("metrics scraped from a running worker change as jobs run; healthz and readyz answer 200")
    func metricsFollowJobs() async throws {
        let url = try await TestRedis.sharedURL()
        let queue = uniqueName("metrics")
        let port = try freeLoopbackPort()
        let worker = try startWorker(queue, redisURL: url, port: port, exec: #"[ "$(cat)" = poison ] && exit 65; exit 0"#)
        defer { worker.signal(SIGKILL) }
        #expect(await eventually { try await get(port, "/healthz").status == 200 })
        #expect(await eventually { try await get(port, "/readyz").status == 200 })
        let before = try await get(port, "/metrics").body
        #expect(before.contains("ferry_worker_start_time_seconds"))
        #expect(sample(before, #"ferry_jobs_total{queue="\#(queue)",group="workers",type="t",outcome="completed"}"#) == nil)

        let publisher = Publisher(queue: try QueueName(queue), connection: try await TestRedis.connection())
        _ = try await publisher.publish(
            (0..<3).map { JobMessage(type: "t", data: "ok-\($0)") } + [JobMessage(type: "t", data: "poison")])
        let labels = #"queue="\#(queue)",group="workers",type="t""#
        #expect(
            await eventually {
                sample(try await get(port, "/metrics").body, "ferry_jobs_total{\(labels),outcome=\"completed\"}") == 3
            })
        let after = try await get(port, "/metrics").body
        #expect(sample(after, "ferry_jobs_total{\(labels),outcome=\"dead_lettered\"}") == 1)
        #expect(sample(after, "ferry_jobs_total{\(labels),outcome=\"failed\"}") == 1)
        #expect(sample(after, "ferry_job_duration_seconds_count{\(labels)}") == 4)
        #expect(sample(after, #"ferry_job_start_latency_seconds_count{queue="\#(queue)",group="workers"}"#) == 4)
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
    }

    @Test(
        "the queue is sampled into gauges without touching Redis per scrape: length, dead letters, lag (at least 10,000 when Redis cannot tell)"
    )
    func sampledQueueGauges() async throws {
        let url = try await TestRedis.sharedURL()
        let queue = uniqueName("sampled")
        let keys = QueueKeys(queue: try QueueName(queue))
        let redis = try await TestRedis.connection()
        _ = try await Publisher(queue: try QueueName(queue), connection: redis).publish([
            JobMessage(type: "t", data: "1"), JobMessage(type: "t", data: "2"),
        ])
        try await redis.send(RedisCommand("XADD", [.string(keys.deadLetter), "*", "type", "t"]))
        // The worker's group starts at the end (nothing to run); another tool placed `audit`
        // mid-stream without ENTRIESREAD, with more entries left than the inspector counts.
        let receipts = try await Publisher(queue: try QueueName(queue), connection: redis).publish(
            (0...QueueInspector.lagCountLimit + 1).map { JobMessage(type: "t", data: "\($0)") })
        // Not the first entry, whose count Redis works out on its own.
        try await redis.send(RedisCommand("XGROUP CREATE", [.string(keys.jobs), "audit", .string(receipts[1].jobID)]))
        try await redis.send(RedisCommand("XGROUP CREATE", [.string(keys.jobs), "workers", "$"]))
        let port = try freeLoopbackPort()
        let worker = try startWorker(queue, redisURL: url, port: port, exec: "cat >/dev/null")
        defer { worker.signal(SIGKILL) }
        let length = Double(QueueInspector.lagCountLimit + 4)
        let sampled = await eventually {
            let metrics = try await get(port, "/metrics").body
            return sample(metrics, #"ferry_stream_length{queue="\#(queue)"}"#) == length
                && sample(metrics, #"ferry_dead_letters{queue="\#(queue)"}"#) == 1
                && sample(metrics, #"ferry_group_lag{queue="\#(queue)",group="workers"}"#) == 0
                && sample(metrics, #"ferry_group_lag{queue="\#(queue)",group="audit"}"#) == 10_000
        }
        let samples = try await get(port, "/metrics").body.split(separator: "\n").filter {
            $0.contains(queue) && !$0.hasPrefix("#")
        }
        #expect(sampled, "\(samples)")
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
    }

    @Test("readyz turns unready when Redis stops and ready again when it returns; healthz stays 200")
    func readinessFollowsRedis() async throws {
        let server = try await RedisServerProcess()
        defer { Task { await server.stop() } }
        let port = try freeLoopbackPort()
        let worker = try startWorker(uniqueName("ready"), redisURL: server.url, port: port, exec: "cat >/dev/null")
        defer { worker.signal(SIGKILL) }
        #expect(await eventually { try await get(port, "/readyz").status == 200 })
        await server.stop()
        #expect(await eventually { try await get(port, "/readyz").status == 503 })
        let unready = try await get(port, "/readyz")
        #expect(unready.body.contains("Redis"), "\(unready.body)")
        #expect(try await get(port, "/healthz").status == 200, "the process is alive: no restart for a Redis outage")
        try await server.start()
        #expect(await eventually(.seconds(20)) { try await get(port, "/readyz").status == 200 })
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit(killAfter: .seconds(30)) == 0)
    }

    @Test("an admin port already in use stops the worker with a clear error")
    func portInUse() async throws {
        let url = try await TestRedis.sharedURL()
        let port = try freeLoopbackPort()
        let first = try startWorker(uniqueName("busy"), redisURL: url, port: port, exec: "true")
        defer { first.signal(SIGKILL) }
        #expect(await eventually { try await get(port, "/healthz").status == 200 })
        let second = try await runProcess(
            try ferryExecutable(), ["worker", uniqueName("busy"), "--exec", "true", "--admin-port", "\(port)"],
            environment: ["FERRY_REDIS_URL": url], timeout: .seconds(30))
        #expect(second.status == 2)
        #expect(second.standardError.contains("the admin port \(port) is in use"), "\(second.standardError)")
        #expect(!second.standardError.contains("bind("), "no NIO call in the message")
    }

    @Test(
        "an admin port out of range (65536, 99999, -1) is refused with exit 2, never silently left off",
        arguments: ["65536", "99999", "-1"])
    func portOutOfRange(port: String) async throws {
        let result = try await runProcess(
            try ferryExecutable(), ["worker", uniqueName("range"), "--exec", "true", "--admin-port", port],
            environment: ["FERRY_REDIS_URL": try await TestRedis.sharedURL()], timeout: .seconds(30))
        #expect(result.status == 2)
        #expect(result.standardError.contains("invalid value \"\(port)\" for --admin-port"), "\(result.standardError)")
    }
}
