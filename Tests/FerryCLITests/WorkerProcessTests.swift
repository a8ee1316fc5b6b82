import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

/// `ferry worker --exec` as real processes against a real redis-server: crashes, SIGTERM,
/// the exit-code contract, a Redis restart.
@Suite("ferry worker processes")
struct WorkerProcessTests {
    /// A scratch folder where handler commands leave their traces.
    final class Scratch: @unchecked Sendable {
        let url = FileManager.default.temporaryDirectory.appending(path: uniqueName("worker"))
        init() throws { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
        deinit { try? FileManager.default.removeItem(at: url) }
        func path(_ name: String) -> String { url.appending(path: name).path() }
        func lines(_ name: String) -> [String] {
            ((try? String(contentsOfFile: path(name), encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
    }

    func startWorker(
        _ queue: String, redisURL: String, exec: String, scratch: Scratch, name: String, options: [String] = []
    ) throws -> ChildProcess {
        try ChildProcess(
            try ferryExecutable(), ["worker", queue, "--exec", exec, "--consumer", name] + options,
            environment: ProcessInfo.processInfo.environment.merging(["FERRY_REDIS_URL": redisURL]) { $1 },
            standardOutput: scratch.path("\(name).log"), standardError: scratch.path("\(name).err"))
    }

    func pending(_ redis: RedisConnection, _ queue: String) async throws -> Int64 {
        let keys = QueueKeys(queue: try QueueName(queue))
        return try await redis.send(RedisCommand("XPENDING", [.string(keys.jobs), "workers"])).array?.first?.integer ?? -1
    }

    @Test("kill -9 of a worker and its job mid-run: the job completes on another worker after the lease, once")
    func crashedWorker() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("crash"), scratch = try Scratch()
        // The job records its process group, works, then records completion. The first delivery
        // works for long enough that the kill lands mid-job however loaded the machine is (with
        // a short sleep, a test starved for seconds saw the victim finish before the kill).
        let exec =
            "echo $$ >> '\(scratch.path("groups"))'; if [ \"$FERRY_DELIVERY_ATTEMPT\" = 1 ]; then sleep 60; fi; "
            + "echo $FERRY_JOB_ID >> '\(scratch.path("done"))'"
        let victim = try startWorker(
            queue, redisURL: url, exec: exec, scratch: scratch, name: "victim", options: ["--lease", "1s"])
        let receipt = try await Publisher(queue: try QueueName(queue), connection: redis).publish(JobMessage(type: "t", data: ""))
        #expect(await eventually { scratch.lines("groups").count == 1 })

        // A container crash: the worker and everything it started die at once.
        victim.signal(SIGKILL)
        kill(-(pid_t(scratch.lines("groups")[0]) ?? 0), SIGKILL)
        await victim.waitForExit()
        let survivor = try startWorker(
            queue, redisURL: url, exec: exec, scratch: scratch, name: "survivor", options: ["--lease", "1s"])
        #expect(await eventually(.seconds(20)) { scratch.lines("done").count == 1 })
        #expect(await eventually { try await pending(redis, queue) == 0 })
        survivor.signal(SIGTERM)
        #expect(await survivor.waitForExit() == 0)
        #expect(scratch.lines("done") == [receipt.jobID], "completed exactly once")
        #expect(scratch.lines("groups").count == 2, "started by the victim, then by the survivor")
    }

    @Test(
        "--backoff exponential --min-backoff 1s --backoff-factor 3 --jitter none: a failing command's retries wait exactly 1 s, then 3 s"
    )
    func backoffFlagsReachTheRetries() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("flags"), scratch = try Scratch()
        let keys = QueueKeys(queue: try QueueName(queue))
        _ = try await Publisher(queue: try QueueName(queue), connection: redis).publish(
            JobMessage(type: "t", data: "", jobID: "b-1"))
        let worker = try startWorker(
            queue, redisURL: url, exec: "exit 1", scratch: scratch, name: "flags",
            options: [
                "--backoff", "exponential", "--min-backoff", "1s", "--backoff-factor", "3", "--jitter", "none",
                "--max-attempts", "3", "--lease", "5s",
            ])
        defer { worker.signal(SIGKILL) }
        let delays = Mutex<Set<Int64>>([])
        #expect(
            await eventually(.seconds(60)) {
                let fields =
                    try await redis.send(
                        RedisCommand(
                            "HMGET",
                            [
                                .string(keys.jobStatus(jobID: "b-1")), "workers.state", "workers.next_attempt_at",
                                "workers.updated_at",
                            ])
                    ).array?.map(\.string) ?? []
                if fields.count == 3, fields[0] == "retrying", let next = fields[1].flatMap(Int64.init),
                    let updated = fields[2].flatMap(Int64.init)
                {
                    delays.withLock { _ = $0.insert(next - updated) }
                }
                return fields.first == "dead"
            })
        // The log has every retry; the status polls may miss a short one on a loaded machine.
        let logged = scratch.lines("flags.log").filter { $0.contains("retry_scheduled") }.compactMap { line in
            line.firstMatch(of: /"backoff_ms":"?(\d+)/).map { String($0.1) }
        }
        #expect(logged == ["1000", "3000"], "\(scratch.lines("flags.log").suffix(3))")
        #expect(delays.withLock { $0 }.isSubset(of: [1000, 3000]) && !delays.withLock { $0 }.isEmpty)
    }

    @Test("SIGTERM during a batch: running jobs finish and are acknowledged, none is lost or run twice")
    func sigtermDrains() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("drain"), scratch = try Scratch()
        let exec =
            "echo $FERRY_JOB_ID >> '\(scratch.path("started"))'; sleep 0.7; echo $FERRY_JOB_ID >> '\(scratch.path("done"))'"
        let receipts = try await Publisher(queue: try QueueName(queue), connection: redis)
            .publish((0..<8).map { JobMessage(type: "t", data: "\($0)") })
        let first = try startWorker(
            queue, redisURL: url, exec: exec, scratch: scratch, name: "first", options: ["--concurrency", "3"])
        #expect(await eventually { scratch.lines("started").count >= 3 })
        first.signal(SIGTERM)
        #expect(await first.waitForExit() == 0)
        let startedByFirst = Set(scratch.lines("started"))
        #expect(Set(scratch.lines("done")) == startedByFirst, "every job the first worker started finished before it exited")
        #expect(try await pending(redis, queue) == 0, "and was acknowledged")

        let second = try startWorker(
            queue, redisURL: url, exec: exec, scratch: scratch, name: "second", options: ["--concurrency", "8"])
        #expect(await eventually(.seconds(15)) { scratch.lines("done").count >= 8 })
        // On a loaded machine the first worker may have run all 8 before its SIGTERM landed: the
        // second is signalled only once it is up (a CI run signalled it mid-start, exit 143).
        #expect(await eventually { scratch.lines("second.log").contains { $0.contains("worker_started") } })
        second.signal(SIGTERM)
        let status = await second.waitForExit()
        #expect(status == 0, "exit \(status): \(scratch.lines("second.err").suffix(5)) \(scratch.lines("second.log").suffix(3))")
        #expect(scratch.lines("done").sorted() == receipts.map(\.jobID).sorted(), "every job ran exactly once")
    }

    @Test("--exec exit codes: 0 acks, 75 retries, 65 dead-letters at once, others retry to max attempts; redis-py jobs run")
    func exitCodeContract() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("codes"), scratch = try Scratch()
        let keys = QueueKeys(queue: try QueueName(queue))
        let script = """
            import sys, redis
            r = redis.Redis.from_url(sys.argv[1])
            for kind in ["ok", "tempfail", "dataerr", "other"]:
                r.xadd(sys.argv[2], {"type": kind, "data": "from python"})
            """
        #expect(try await runPython(script, [url, keys.jobs]).status == 0)
        let exec = """
            echo "$FERRY_JOB_TYPE $FERRY_DELIVERY_ATTEMPT $(cat)" >> '\(scratch.path("runs"))'
            case $FERRY_JOB_TYPE in
              ok) exit 0 ;;
              tempfail) [ "$FERRY_DELIVERY_ATTEMPT" -ge 2 ] && exit 0; exit 75 ;;
              dataerr) echo 'bad input: field x' >&2; exit 65 ;;
              *) echo 'always broken' >&2; exit 3 ;;
            esac
            """
        let worker = try startWorker(
            queue, redisURL: url, exec: exec, scratch: scratch, name: "codes",
            options: ["--max-attempts", "2", "--min-backoff", "100ms", "--max-backoff", "100ms", "--lease", "1s"])
        let deadEntries = { () async throws -> [StreamEntry] in
            StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(keys.deadLetter), "-", "+"])))
        }
        // The retried job's second run too: between its runs it is pending nowhere (it waits
        // in the group's later deliveries), so a drained pending list alone is not the end.
        #expect(
            await eventually(.seconds(30)) {
                let deadCount = try await deadEntries().count
                let pendingCount = try await pending(redis, queue)
                return deadCount == 2 && pendingCount == 0 && scratch.lines("runs").contains("tempfail 2 from python")
            })
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)

        let runs = scratch.lines("runs").sorted()
        #expect(
            runs == [
                "dataerr 1 from python", "ok 1 from python", "other 1 from python", "other 2 from python",
                "tempfail 1 from python", "tempfail 2 from python",
            ])
        let dead = Dictionary(
            uniqueKeysWithValues: try await deadEntries().map { entry in
                (String(decoding: entry.value(of: "type") ?? [], as: UTF8.self), entry)
            })
        func text(_ type: String, _ field: String) -> String? {
            dead[type]?.value(of: field).map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(text("dataerr", "dead_letter.error") == "bad input: field x")
        #expect(text("dataerr", "dead_letter.delivery_count") == "1")
        #expect(text("other", "dead_letter.delivery_count") == "2")
        #expect(text("other", "dead_letter.error")?.contains("always broken") == true)
        let deadJob = try #require(text("dataerr", "dead_letter.source_id"))
        let status = try await runProcess(try ferryExecutable(), ["job", "status", queue, deadJob, "--json", "--redis", url])
        let statusObject = try JSONSerialization.jsonObject(with: Data(status.outputBytes)) as? [String: Any]
        #expect(statusObject?["state"] as? String == "dead")
        #expect(statusObject?["last_error"] as? String == "bad input: field x")
        let log = (try? String(contentsOfFile: scratch.path("codes.log"), encoding: .utf8)) ?? ""
        #expect(log.contains(#""event":"retry_scheduled""#) && log.contains(#""event":"dead_lettered""#))
        #expect(!log.contains("from python"), "payloads never reach the logs")
        let lines = log.split(separator: "\n").map {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(!lines.isEmpty && lines.allSatisfy { $0 != nil }, "every line is one JSON object:\n\(log)")
        #expect(lines.contains { $0?["delivery_attempt"] as? Int == 2 }, "integers are JSON numbers")
        #expect(lines.allSatisfy { ($0?["ts"] as? String)?.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/) != nil })
    }

    @Test("Redis restarted mid-run (AOF on): the worker reconnects and finishes every job")
    func redisRestart() async throws {
        let server = try await RedisServerProcess(extraArguments: ["--appendonly", "yes", "--appendfsync", "always"])
        let redis = try RedisConnection(url: server.url)
        let queue = uniqueName("restart"), scratch = try Scratch()
        let publisher = Publisher(queue: try QueueName(queue), connection: redis)
        let exec = "echo $FERRY_JOB_ID >> '\(scratch.path("done"))'"
        let worker = try startWorker(
            queue, redisURL: server.url, exec: exec, scratch: scratch, name: "steady", options: ["--lease", "1s"])
        var ids = try await publisher.publish((0..<20).map { JobMessage(type: "t", data: "\($0)") }).map(\.jobID)
        let firstBatchDone = await eventually { Set(scratch.lines("done")).count == 20 }
        if !firstBatchDone {
            let status = await worker.waitForExit(killAfter: .milliseconds(1))
            Issue.record("status: \(status) \(scratch.lines("steady.err").suffix(8))")
        }

        try await server.restart()
        var published: [PublishReceipt] = []
        for attempt in 0..<20 where published.isEmpty {
            published = (try? await publisher.publish((20..<40).map { JobMessage(type: "t", data: "\($0)") })) ?? []
            if published.isEmpty { try await Task.sleep(for: .milliseconds(100 * (attempt + 1))) }
        }
        ids += published.map(\.jobID)
        #expect(ids.count == 40)
        #expect(await eventually(.seconds(20)) { Set(scratch.lines("done")) == Set(ids) })
        #expect(await eventually { try await pending(redis, queue) == 0 })
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
    }

    @Test("a worker whose log reader goes away (ferry worker | head) keeps working and exits 0 on SIGTERM")
    func closedStandardOutput() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("closedout"), scratch = try Scratch()
        // head exits after the first byte, so every later log line meets a closed pipe.
        let pipeline = """
            "$FERRY_BIN" worker "$QUEUE" --pass-env DONE --exec 'echo $FERRY_JOB_ID >> "$DONE"' | head -c 1 > /dev/null
            echo "worker exit ${PIPESTATUS[0]}" > "$STATUS"
            """
        let shell = try ChildProcess(
            try executable(named: "bash"), ["-c", pipeline],
            environment: ProcessInfo.processInfo.environment.merging([
                "FERRY_BIN": try ferryExecutable().path(), "FERRY_REDIS_URL": url, "QUEUE": queue,
                "DONE": scratch.path("done"), "STATUS": scratch.path("status"),
            ]) { $1 })
        try await Task.sleep(for: .milliseconds(500))
        let receipts = try await Publisher(queue: try QueueName(queue), connection: redis)
            .publish((0..<5).map { JobMessage(type: "t", data: "\($0)") })
        #expect(await eventually { scratch.lines("done").count == 5 })
        #expect(Set(scratch.lines("done")) == Set(receipts.map(\.jobID)))
        _ = try await runProcess(try executable(named: "pkill"), ["-TERM", "-f", "worker \(queue)"])
        await shell.waitForExit(killAfter: .seconds(30))
        #expect(scratch.lines("status") == ["worker exit 0"])
    }

    @Test(
        "bad settings are refused at start-up with exit code 2, before any job is read",
        arguments: [
            (["--lease", "5x"], [:], "--lease"),
            (["--concurrency", "0"], [:], "concurrency"),
            ([], ["FERRY_MAX_ATTEMPTS": "many"], "FERRY_MAX_ATTEMPTS"),
            ([], ["FERRY_MIN_BACKOFF": "10"], "FERRY_MIN_BACKOFF"),
            (["--min-backoff", "2m", "--max-backoff", "1m"], [:], "backoff"),
        ] as [([String], [String: String], String)])
    func badSettings(options: [String], environment: [String: String], message: String) async throws {
        let result = try await runProcess(
            try ferryExecutable(), ["worker", uniqueName("bad"), "--exec", "true"] + options,
            environment: environment.merging(["FERRY_REDIS_URL": try await TestRedis.sharedURL()]) { $1 })
        #expect(result.status == 2)
        #expect(result.standardError.contains(message), "\(result.standardError)")
    }
}

extension WorkerProcessTests {
    @Test(
        "kill -9 of a worker the moment a job reaches its outcome leaves a status that agrees with the stream",
        arguments: ["succeeded", "dead", "cancelled"])
    func killedAfterOutcome(outcome: String) async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("atomic"), scratch = try Scratch()
        let name = try QueueName(queue)
        let keys = QueueKeys(queue: name)
        let receipt = try await Publisher(queue: name, connection: redis).publish(JobMessage(type: "t", data: "", jobID: "j-1"))
        if outcome == "cancelled" {
            _ = try await JobStatus.requestCancellation(jobID: receipt.jobID, queue: name, connection: redis)
        }
        let worker = try ChildProcess(
            try ferryExecutable(), ["worker", queue, "--exec", outcome == "dead" ? "exit 65" : "true"],
            environment: ProcessInfo.processInfo.environment.merging([
                "FERRY_REDIS_URL": url, "FERRY_FAULT_KILL_AFTER": outcome,
            ]) { $1 }, standardOutput: scratch.path("w.log"), standardError: scratch.path("w.err"))
        #expect(await worker.waitForExit(killAfter: .seconds(30)) == 128 + SIGKILL, "killed at the fault point")

        let status = try await JobStatus.load(jobID: "j-1", queue: name, connection: redis)
        #expect(status?.state?.rawValue == outcome, "\(status?.fields ?? [:])")
        #expect(try await pending(redis, queue) == 0, "the entry left the pending list with its status")
        let dead = try await redis.send(RedisCommand("XLEN", [.string(keys.deadLetter)])).integer
        #expect(dead == (outcome == "dead" ? 1 : 0))
        let counts = try await JobIndex(queue: name, connection: redis).counts(group: "workers")
        #expect(counts.filter { $0.value > 0 }.map(\.key.rawValue) == [outcome], "\(counts)")
    }
}

extension WorkerProcessTests {
    @Test("a second SIGTERM cancels the running jobs at once: the worker exits 0 and the job stays pending for another worker")
    func secondSignalCancelsRunningJobs() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("twice"), scratch = try Scratch()
        let worker = try startWorker(
            queue, redisURL: url, exec: "echo started >> '\(scratch.path("started"))'; sleep 60", scratch: scratch,
            name: "draining", options: ["--shutdown-grace", "60s"])
        _ = try await Publisher(queue: try QueueName(queue), connection: redis).publish(
            JobMessage(type: "t", data: "", jobID: "long"))
        #expect(await eventually { scratch.lines("started").count == 1 }, "the job had started")
        worker.signal(SIGTERM)
        #expect(await eventually { scratch.lines("draining.log").contains { $0.contains("worker_stopping") } })
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit(killAfter: .seconds(30)) == 0, "exits long before the 60 s grace")
        #expect(try await pending(redis, queue) == 1, "left pending for another worker")
        let status = try await JobStatus.load(jobID: "long", queue: try QueueName(queue), connection: redis)
        #expect(status?.state == .failed && status?.fields["error_class"] == "interrupted", "\(status?.fields ?? [:])")
    }
}

extension WorkerProcessTests {
    @Test(
        "kill -9 of a worker that has begun moving due jobs (each batch of 100 is one script): none lost, none moved twice, another worker runs the rest"
    )
    func killedWhileMovingDueJobs() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("due-kill"), scratch = try Scratch()
        let name = try QueueName(queue)
        let keys = QueueKeys(queue: name)
        var publishing = Publisher.Configuration()
        publishing.recordsStatus = false
        let ids = (0..<600).map { "d-\($0)" }
        _ = try await Publisher(queue: name, connection: redis, configuration: publishing).schedule(
            ids.map { JobMessage(type: "t", data: "", jobID: $0) }, .at(Date().addingTimeInterval(-1)))
        let exec = "echo $FERRY_JOB_ID >> '\(scratch.path("done"))'"
        let victim = try startWorker(
            queue, redisURL: url, exec: exec, scratch: scratch, name: "victim", options: ["--lease", "1s"])
        // Killed once it has moved some of the due jobs, and before it could have moved them all.
        #expect(await eventually { try await redis.send(RedisCommand("XLEN", [.string(keys.jobs)])).integer ?? 0 > 0 })
        victim.signal(SIGKILL)
        await victim.waitForExit()
        let movedByVictim = try await redis.send(RedisCommand("XLEN", [.string(keys.jobs)])).integer ?? 0
        let survivor = try startWorker(
            queue, redisURL: url, exec: exec, scratch: scratch, name: "survivor",
            options: ["--lease", "1s", "--concurrency", "64"])
        defer { survivor.signal(SIGKILL) }
        #expect(await eventually(.seconds(120)) { Set(scratch.lines("done")) == Set(ids) }, "every job ran")
        #expect(await eventually { try await pending(redis, queue) == 0 })
        survivor.signal(SIGTERM)
        #expect(await survivor.waitForExit() == 0)
        #expect(
            try await redis.send(RedisCommand("XLEN", [.string(keys.jobs)])).integer == 600,
            "each moved once (\(movedByVictim) by the victim)")
        #expect(try await redis.send(RedisCommand("ZCARD", [.string(keys.scheduled)])).integer == 0)
    }
}

extension WorkerProcessTests {
    @Test(
        "a 300 KB payload published with ferry publish goes by reference and reaches an --exec handler byte for byte; one gone from Redis is dead-lettered payload_missing"
    )
    func largePayloadToExec() async throws {
        let setup = try await TestQueue("bigexec")
        let scratch = try Scratch()
        let payload = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        try Data(payload).write(to: URL(fileURLWithPath: scratch.path("payload")))
        for id in ["one", "two"] {
            let published = try await setup.ferry([
                "publish", setup.name, "--type", "t", "--job-id", id, "--data-file", scratch.path("payload"),
            ])
            #expect(published.status == 0, "\(published.standardError)")
        }
        let entries = StreamEntry.entries(
            from: try await setup.redis.send(RedisCommand("XRANGE", [.string(setup.keys.jobs), "-", "+"])))
        #expect(entries.count == 2 && entries.allSatisfy { $0.text(of: "data_ref") == "redis" && $0.value(of: "data") == nil })
        // A producer's reference to a payload it never stored.
        _ = try await setup.redis.send(
            RedisCommand(
                "XADD",
                [
                    .string(setup.keys.jobs), "*", "type", "t", "job_id", "gone", "data_ref", "redis", "data_sha256",
                    .string(String(repeating: "0", count: 64)), "data_size", "300000",
                ]))
        let worker = try startWorker(
            setup.name, redisURL: setup.url, exec: "cat > \(scratch.path("out"))-$FERRY_JOB_ID", scratch: scratch, name: "w0")
        defer { worker.signal(SIGKILL) }
        #expect(
            await eventually(.seconds(60)) {
                let dead = try await setup.length(setup.keys.deadLetter)
                return try await setup.pendingCount() == 0 && dead == 1
            })
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
        for id in ["one", "two"] {
            #expect(FileManager.default.contents(atPath: scratch.path("out-\(id)")).map { Array($0) } == payload)
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out-gone")), "never given to the handler")
        let dead = try await setup.deadEntries()
        #expect(dead.first?.text(of: "dead_letter.error_class") == "payload_missing")
    }
}
