import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// Rate and concurrency limits held by real `ferry worker` processes sharing one Redis.
@Suite("ferry limit with worker processes")
struct LimitProcessTests {
    typealias Scratch = WorkerProcessTests.Scratch

    func startWorkers(
        _ count: Int, queue: String, url: String, exec: String, scratch: Scratch, options: [String]
    ) throws -> [ChildProcess] {
        try (0..<count).map { index in
            try WorkerProcessTests().startWorker(
                queue, redisURL: url, exec: exec, scratch: scratch, name: "w\(index)", options: options)
        }
    }

    /// The `ts` of each line of a JSON log with `"event":"<event>"`, as ms since the epoch.
    func times(of event: String, in lines: [String]) -> [Int64] {
        lines.filter { $0.contains("\"event\":\"\(event)\"") }.compactMap { line in
            guard let match = line.firstMatch(of: /"ts":"([^"]+)"/) else { return nil }
            return (try? Date(String(match.1), strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true)))
                .map(\.millisecondsSince1970)
        }
    }

    @Test(
        "3 workers × concurrency 32 never run more than a concurrency limit of 5, nor 2 of one key; no attempt is spent waiting"
    )
    func concurrencyAcrossProcesses() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("climit"), scratch = try Scratch()
        let name = try QueueName(queue)
        let limits = QueueLimits(queue: name, connection: redis)
        try await limits.set(QueueLimit(name: "five", kind: .concurrency(5)))
        try await limits.set(QueueLimit(name: "two-per-user", kind: .concurrency(2), perKey: true))
        // Each start counts itself in Redis and keeps the most seen, in one atomic step (so the
        // figure is exact, not sampled); each end counts itself out and records its attempt.
        let counters = "test:{\(queue)}"
        let enter = """
            local a = redis.call('INCR', KEYS[1]) local b = redis.call('INCR', KEYS[2]) \
            if a > tonumber(redis.call('GET', KEYS[3]) or '0') then redis.call('SET', KEYS[3], a) end \
            if b > tonumber(redis.call('GET', KEYS[4]) or '0') then redis.call('SET', KEYS[4], b) end
            """
        let leave = "redis.call('DECR', KEYS[1]) redis.call('DECR', KEYS[2]) redis.call('RPUSH', KEYS[3], ARGV[1])"
        let exec = """
            redis-cli -u '\(url)' EVAL "\(enter)" 4 \(counters):all \(counters):key:$FERRY_JOB_KEY \(counters):most \
            \(counters):most:$FERRY_JOB_KEY > /dev/null; sleep 0.2; \
            redis-cli -u '\(url)' EVAL "\(leave)" 3 \(counters):all \(counters):key:$FERRY_JOB_KEY \(counters):attempts \
            "$FERRY_JOB_ID $FERRY_DELIVERY_ATTEMPT" > /dev/null
            """
        let users = (0..<6).map { "user-\($0)" }
        let jobs = (0..<90).map { JobMessage(type: "t", jobID: "j-\($0)", key: users[$0 % users.count]) }
        _ = try await Publisher(queue: name, connection: redis).publish(jobs)
        let workers = try startWorkers(
            3, queue: queue, url: url, exec: exec, scratch: scratch, options: ["--concurrency", "32", "--lease", "5s"])
        defer { workers.forEach { $0.signal(SIGKILL) } }
        func get(_ key: String) async throws -> Int {
            Int(try await redis.send(RedisCommand("GET", [.string(key)])).string ?? "0") ?? 0
        }
        #expect(
            await eventually(.seconds(120)) {
                try await redis.send(RedisCommand("LLEN", [.string("\(counters):attempts")])).integer == 90
            })
        #expect(try await get("\(counters):most") == 5, "the limit of 5 was reached, never passed")
        for user in users {
            #expect(try await get("\(counters):most:\(user)") <= 2, "\(user)")
        }
        let ends =
            try await redis.send(RedisCommand("LRANGE", [.string("\(counters):attempts"), "0", "-1"])).array?
            .compactMap(\.string) ?? []
        #expect(Set(ends).count == 90, "each job ran once")
        #expect(ends.allSatisfy { $0.hasSuffix(" 1") }, "every job ran at its first attempt: waiting spent none")
        let waited = workers.indices.flatMap { scratch.lines("w\($0).log") }.filter { $0.contains("\"event\":\"job_waiting\"") }
        #expect(!waited.isEmpty, "jobs waited on the limits")
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers { #expect(await worker.waitForExit() == 0) }
        let keys = QueueKeys(queue: name)
        let held = try await redis.send(RedisCommand("HGET", [.string(keys.limitState(name: "five", key: nil).held), "*"]))
        #expect(held.string == "0", "every slot was released")
    }

    @Test("a rate limit of 50/s holds within 10% over 10 s across 3 worker processes")
    func rateAcrossProcesses() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("rlimit"), scratch = try Scratch()
        let name = try QueueName(queue)
        try await QueueLimits(queue: name, connection: redis).set(
            QueueLimit(name: "fifty", kind: .rate(count: 50, period: .seconds(1), burst: 1)))
        // More than the 13 s the rate takes for them, so the backlog never runs dry in the window.
        _ = try await Publisher(queue: name, connection: redis).publish((0..<700).map { JobMessage(type: "t", jobID: "r-\($0)") })
        // Pushed to a real endpoint rather than run as commands: 700 jobs stay light on the machine.
        let server = try await PushEndpointServer()
        let workers = try (0..<3).map { index in
            try ChildProcess(
                try ferryExecutable(),
                ["worker", queue, "--push", server.url(), "--consumer", "w\(index)", "--concurrency", "32", "--lease", "10s"],
                environment: ProcessInfo.processInfo.environment.merging(["FERRY_REDIS_URL": url]) { $1 },
                standardOutput: scratch.path("w\(index).log"), standardError: scratch.path("w\(index).err"))
        }
        defer { workers.forEach { $0.signal(SIGKILL) } }
        func starts() -> [Int64] {
            workers.indices.flatMap { times(of: "job_started", in: scratch.lines("w\($0).log")) }.sorted()
        }
        #expect(await eventually(.seconds(60)) { (starts().last ?? 0) - (starts().first ?? .max) > 12_000 })
        let all = starts()
        let first = try #require(all.first)
        // The first second is left out: the workers may start at different moments.
        let window = all.filter { $0 >= first + 1000 && $0 < first + 11_000 }
        #expect((450...550).contains(window.count), "\(window.count) starts in 10 s at 50/s")
        #expect(Set(workers.indices.filter { !times(of: "job_started", in: scratch.lines("w\($0).log")).isEmpty }).count >= 2)
    }

    @Test("kill -9 of a worker holding both slots of a limit: its slots free after the lease, and every job runs")
    func killedWorkerSlotsFree() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("klimit"), scratch = try Scratch()
        let name = try QueueName(queue)
        let keys = QueueKeys(queue: name)
        try await QueueLimits(queue: name, connection: redis).set(QueueLimit(name: "two", kind: .concurrency(2)))
        _ = try await Publisher(queue: name, connection: redis).publish((0..<4).map { JobMessage(type: "t", jobID: "k-\($0)") })
        let lease = 3
        let victim = try WorkerProcessTests().startWorker(
            queue, redisURL: url, exec: "echo $$ >> '\(scratch.path("groups"))'; sleep 60", scratch: scratch, name: "victim",
            options: ["--lease", "\(lease)s"])
        let slots = keys.limitState(name: "two", key: nil)
        #expect(
            await eventually {
                let waiting = try await redis.send(RedisCommand("ZCARD", [.string(slots.waiting)])).integer ?? 0
                return scratch.lines("groups").count == 2 && waiting == 2
            })
        // When the victim's slots lapse unless it extends them again: it dies before it can.
        let lapse = try await redis.send(RedisCommand("ZSCORE", [.string(slots.holders), "victim"])).string.flatMap(Double.init)
        victim.signal(SIGKILL)
        for group in scratch.lines("groups") { kill(-(pid_t(group) ?? 0), SIGKILL) }
        await victim.waitForExit()
        let survivor = try WorkerProcessTests().startWorker(
            queue, redisURL: url, exec: "echo $FERRY_JOB_ID >> '\(scratch.path("done"))'", scratch: scratch,
            name: "survivor", options: ["--lease", "\(lease)s"])
        defer { survivor.signal(SIGKILL) }
        #expect(await eventually(.seconds(60)) { Set(scratch.lines("done")).count == 4 })
        let started = times(of: "job_started", in: scratch.lines("survivor.log"))
        let lapsed = try #require(lapse, "the victim held slots")
        #expect(Double(started.min() ?? 0) >= lapsed - 50, "no job started before the dead worker's slots lapsed")
        #expect(await eventually { try await redis.send(RedisCommand("HGET", [.string(slots.held), "*"])).string == "0" })
        survivor.signal(SIGTERM)
        #expect(await survivor.waitForExit() == 0)
    }
}
