import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// `ferry cron` and the schedules it stores, run by real `ferry worker` processes.
@Suite("ferry cron")
struct CronCommandTests {
    func ferry(_ arguments: String...) async throws -> ProcessResult {
        try await runProcess(try ferryExecutable(), arguments, environment: ["FERRY_REDIS_URL": try await TestRedis.sharedURL()])
    }

    /// The job ids of the queue's stream, in order.
    func jobIDs(_ queue: String) async throws -> [String] {
        let redis = try await TestRedis.connection()
        let keys = QueueKeys(queue: try QueueName(queue))
        return try StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(keys.jobs), "-", "+"])))
            .compactMap { try $0.decodedJob().jobID }
    }

    @Test("10 worker processes over 20 ticks of --every 1s enqueue exactly 20 jobs, one per tick")
    func tenWorkersOneJobPerTick() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("cron-ten")
        let scratch = try WorkerProcessTests.Scratch()
        var workers: [ChildProcess] = []
        defer { for worker in workers { worker.signal(SIGKILL) } }
        for index in 0..<10 {
            workers.append(
                try WorkerProcessTests().startWorker(
                    queue, redisURL: url, exec: "cat > /dev/null", scratch: scratch, name: "cron-\(index)",
                    options: ["--concurrency", "2"]))
        }
        // Every worker is up before the schedule exists.
        #expect(
            await eventually(.seconds(90)) {
                (0..<10).allSatisfy { index in scratch.lines("cron-\(index).log").contains { $0.contains("worker_started") } }
            })
        let set = try await ferry("cron", "set", queue, "every-second", "--every", "1s", "--type", "t")
        #expect(set.status == 0, "\(set.standardError)")
        let first = try #require(
            try await CronSchedules(queue: try QueueName(queue), connection: redis).get("every-second")?.nextAt)
        let window = (0..<20).map { "cron-every-second-\(first.millisecondsSince1970 + Int64($0) * 1000)" }
        let after = "cron-every-second-\(first.millisecondsSince1970 + 20_000)"
        #expect(await eventually(.seconds(90)) { try await jobIDs(queue).contains(after) })
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers { _ = await worker.waitForExit() }
        let ids = try await jobIDs(queue)
        #expect(ids.filter { window.contains($0) } == window, "each of the 20 ticks once, in order")
        #expect(Set(ids).count == ids.count, "no tick enqueued twice: \(ids.count) entries")
        let enqueuedBy = Set(
            workers.indices.filter { index in scratch.lines("cron-\(index).log").contains { $0.contains("cron_enqueued") } })
        #expect(!enqueuedBy.isEmpty)
    }

    @Test("set, list, pause, resume and delete say what they did; list shows the next and last runs")
    func lifecycle() async throws {
        let queue = uniqueName("cron-cli")
        let set = try await ferry(
            "cron", "set", queue, "nightly", "--cron", "30 2 * * mon-fri", "--tz", "Europe/Paris", "--type", "report",
            "--data", #"{"kind":"daily"}"#, "--catch-up", "one", "--overlap", "skip")
        #expect(set.status == 0, "\(set.standardError)")
        #expect(set.standardOutput.contains("schedule nightly created on \(queue): 30 2 * * mon-fri Europe/Paris; next run "))
        let again = try await ferry("cron", "set", queue, "nightly", "--every", "1h", "--type", "report")
        #expect(again.standardOutput.contains("schedule nightly replaced"))
        let list = try await ferry("cron", "list", queue, "--json")
        let row = try #require(
            try JSONSerialization.jsonObject(with: Data(list.standardOutput.utf8)) as? [String: Any])
        #expect(row["schedule"] as? String == "every 1h" && row["paused"] as? Bool == false && row["next_run"] is String)
        #expect(try await ferry("cron", "pause", queue, "nightly").standardOutput.contains("schedule nightly paused"))
        let paused = try await ferry("cron", "list", queue)
        #expect(paused.standardOutput.contains("yes"), "\(paused.standardOutput)")
        #expect(try await ferry("cron", "resume", queue, "nightly").status == 0)
        #expect(try await ferry("cron", "delete", queue, "nightly").standardOutput.contains("schedule nightly deleted"))
        let gone = try await ferry("cron", "delete", queue, "nightly")
        #expect(gone.status == 1 && gone.standardError.contains("no schedule \"nightly\""))
        #expect(try await ferry("cron", "list", queue).standardOutput.contains("no schedules on \(queue)"))
    }

    @Test(
        "bad input exits 2 naming what is wrong, and writes nothing",
        arguments: [
            (["--cron", "61 * * * *"], "the minute field"), (["--cron", "* * *"], "has 3"),
            (["--cron", "* * * * *", "--tz", "Mars/Olympus"], "unknown time zone \"Mars/Olympus\""),
            (["--every", "1s", "--cron", "* * * * *"], "give the schedule once"), (["--every", "1.5s"], "--every"),
            (["--every", "1s", "--tz", "UTC"], "a time zone applies to a cron expression"),
            (["--every", "1s", "--catch-up", "some"], "skip, one, all"),
            (["--every", "1s", "--overlap", "never"], "allow, skip"),
        ])
    func badInput(options: [String], message: String) async throws {
        let queue = uniqueName("cron-bad")
        let result = try await runProcess(
            try ferryExecutable(), ["cron", "set", queue, "bad"] + options + ["--type", "t"],
            environment: ["FERRY_REDIS_URL": try await TestRedis.sharedURL()])
        #expect(result.status == 2)
        #expect(result.standardError.contains(message), "\(result.standardError)")
        let named = try await runProcess(
            try ferryExecutable(), ["cron", "set", queue, "no spaces", "--every", "1s", "--type", "t"],
            environment: ["FERRY_REDIS_URL": try await TestRedis.sharedURL()])
        #expect(named.status == 2 && named.standardError.contains("the schedule name \"no spaces\""))
        let redis = try await TestRedis.connection()
        let written = try await redis.send(RedisCommand("KEYS", [.string("ferry:{\(queue)}*")]))
        #expect(written.array?.isEmpty == true, "nothing written: \(written)")
    }
}
