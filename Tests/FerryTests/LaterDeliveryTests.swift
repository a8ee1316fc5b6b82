import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

/// Redis's clock in milliseconds since the epoch: the one the due times are written in.
func redisTime(_ redis: RedisConnection) async throws -> Int64 {
    let parts = try await redis.send(RedisCommand("TIME")).array?.compactMap(\.string) ?? []
    return (Int64(parts.first ?? "") ?? 0) * 1000 + (Int64(parts.last ?? "") ?? 0) / 1000
}

extension WorkerTests {
    @Test(
        "retries wait exactly 3 s then 6 s with --backoff exponential --min-backoff 3s --backoff-factor 2 --jitter none --max-attempts 3, in the status and the logs"
    )
    func exponentialRetryDelays() async throws {
        let setup = try await Setup("backoff")
        let log = LogRecord()
        let runs = Mutex<[Int64]>([])
        let worker = setup.worker(
            [
                "t": JobHandlerClosure { _ in
                    let now = try await redisTime(setup.redis)
                    runs.withLock { $0.append(now) }
                    throw PushBackError()
                }
            ], logger: log.logger()
        ) {
            $0.retry = RetryPolicy(
                maxAttempts: 3, minimumBackoff: .seconds(3), maximumBackoff: .seconds(60), strategy: .exponential(factor: 2),
                jitter: .none)
        }
        let nextAttempts = Mutex<[Int64: Int64]>([:])  // next_attempt_at -> updated_at, as the status said them
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "p-1"))
            #expect(
                await eventually(.seconds(60)) {
                    // One read of the three, so a poll never pairs one retry's time with another's.
                    let fields =
                        try await setup.redis.send(
                            RedisCommand(
                                "HMGET",
                                [
                                    .string(setup.keys.jobStatus(jobID: "p-1")), "workers.state", "workers.next_attempt_at",
                                    "workers.updated_at",
                                ])
                        ).array?.map(\.string) ?? []
                    guard fields.count == 3 else { return false }
                    if fields[0] == "retrying", let next = fields[1].flatMap(Int64.init),
                        let updated = fields[2].flatMap(Int64.init)
                    {
                        nextAttempts.withLock { $0[next] = updated }
                    }
                    return fields[0] == "dead"
                })
        }
        let delays = nextAttempts.withLock { $0.map { $0.key - $0.value }.sorted() }
        #expect(delays == [3000, 6000], "the status's next_attempt_at, from the moment each retry was recorded")
        let logged = log.entries.filter { $0.message == "retry_scheduled" }.compactMap { $0.metadata["ferry.backoff_ms"] }
        #expect(logged == ["3000", "6000"])
        let times = runs.withLock { $0 }
        try #require(times.count == 3)
        #expect(times[1] - times[0] >= 3000 && times[2] - times[1] >= 6000, "never early: \(times)")
        #expect(try await setup.deadEntries().count == 1)
    }

    @Test("a failed attempt leaves the pending list; it comes back to its own group only, never to one that succeeded")
    func retryReachesItsGroupOnly() async throws {
        let setup = try await Setup("retry-group")
        let flaky = Deliveries()
        let steady = Deliveries()
        let failing = setup.worker(
            [
                "t": JobHandlerClosure { job in
                    flaky.record(job)
                    if job.deliveryAttempt == 1 { throw PushBackError() }
                }
            ], group: "flaky"
        ) {
            // Parked long enough for a loaded machine's polls to see it there (2 s was missed once).
            $0.retry = RetryPolicy(maxAttempts: 3, minimumBackoff: .seconds(6), maximumBackoff: .seconds(6), jitter: .none)
        }
        let succeeding = setup.worker(["t": JobHandlerClosure { steady.record($0) }], group: "steady")
        try await running(failing, succeeding) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "g-1"))
            #expect(await eventually { flaky.count == 1 && steady.count == 1 })
            // One snapshot of both, taken inside Redis: parked, and not in the pending list.
            let snapshot = "return {redis.call('ZCARD', KEYS[1]), redis.call('XPENDING', KEYS[2], ARGV[1])[1]}"
            #expect(
                await eventually {
                    let reply = try await setup.redis.send(
                        RedisCommand(
                            "EVAL",
                            [
                                .string(snapshot), 2, .string(setup.keys.delayed(group: "flaky").due), .string(setup.keys.jobs),
                                "flaky",
                            ]))
                    return reply.array?.compactMap(\.integer) == [1, 0]
                }, "a waiting retry is parked, not in the pending list")
            #expect(await eventually { try await setup.pendingCount(group: "flaky") == 0 && flaky.count == 2 })
        }
        #expect(flaky.all.map(\.attempt) == [1, 2])
        #expect(steady.all.map(\.attempt) == [1], "the group that succeeded never saw the retry")
        let status = try #require(try await JobStatusRecord.load(jobID: "g-1", queue: setup.queue, connection: setup.redis))
        #expect(status.status(group: "flaky").state == .succeeded && status.groups["flaky"]?["attempts"] == "2")
        for key in [setup.keys.delayed(group: "flaky").due, setup.keys.delayed(group: "flaky").attempts] {
            #expect(try await setup.redis.send(RedisCommand("EXISTS", [.string(key)])).integer == 0, "\(key) emptied")
        }
    }

    @Test("a snooze spends no attempt: a job with max_attempts 1 snoozed twice still runs, and succeeds")
    func snoozeSpendsNoAttempt() async throws {
        let setup = try await Setup("snooze")
        let seen = Deliveries()
        let log = LogRecord()
        let worker = setup.worker(
            [
                "t": JobHandlerClosure { job in
                    seen.record(job)
                    if seen.count < 3 { throw JobSnooze(for: .milliseconds(300), reason: "the upload is not finished") }
                }
            ], logger: log.logger())
        var job = JobMessage(type: "t", data: "", jobID: "s-1")
        job.maxAttempts = 1
        try await running(worker) {
            _ = try await setup.publisher.publish(job)
            #expect(await eventually { try await setup.pendingCount() == 0 && seen.count == 3 })
        }
        #expect(seen.all.map(\.attempt) == [1, 1, 1])
        #expect(try await setup.deadEntries().isEmpty)
        let status = try await JobStatus.load(jobID: "s-1", queue: setup.queue, connection: setup.redis)
        #expect(status?.state == .succeeded && status?.fields["attempts"] == "1")
        #expect(log.entries.filter { $0.message == "job_snoozed" }.count == 2)
    }

    @Test("a plain XADD with deliver_at is parked by each group that reads it early, and runs once per group when due")
    func plainXaddDeliverAt() async throws {
        let setup = try await Setup("deliver-at")
        let runs = Mutex<[String: [(id: String, at: Int64)]]>([:])
        func handler(_ group: String) -> [String: any JobHandler] {
            [
                "t": JobHandlerClosure { job in
                    let now = try await redisTime(setup.redis)
                    runs.withLock { $0[group, default: []].append((job.id, now)) }
                    #expect(job.deliveryAttempt == 1, "waiting spent no attempt")
                }
            ]
        }
        func ran(_ id: String) -> [String: Int] {
            runs.withLock { $0.mapValues { $0.filter { $0.id == id }.count }.filter { $0.value > 0 } }
        }
        let soon = Mutex<Int64>(0)
        try await running(setup.worker(handler("a"), group: "a"), setup.worker(handler("b"), group: "b")) {
            #expect(await eventually { try await ConsumerGroups(queue: setup.queue, connection: setup.redis).names().count == 2 })
            // What any producer writes: redis-cli XADD 'ferry:{Q}:jobs' '*' type t deliver_at <ms>.
            // A minute ahead: both groups read it early, however loaded the machine.
            let later = try await redisTime(setup.redis) + 60_000
            _ = try await setup.redis.send(
                RedisCommand(
                    "XADD", [.string(setup.keys.jobs), "*", "type", "t", "job_id", "later", "deliver_at", .integer(later)]))
            #expect(
                await eventually {
                    let status = try await JobStatusRecord.load(jobID: "later", queue: setup.queue, connection: setup.redis)
                    return status?.status(group: "a").state == .scheduled && status?.status(group: "b").state == .scheduled
                })
            let indexed = try await setup.redis.send(
                RedisCommand("EXISTS", [.string(setup.keys.statusIndex(group: "a", state: .scheduled))]))
            #expect(indexed == .integer(0), "scheduled jobs have no index set: they wait in the due indexes")
            let pending = (try await setup.pendingCount(group: "a"), try await setup.pendingCount(group: "b"))
            #expect(pending == (0, 0), "parked entries leave the pending list")
            // Soon: never before its time by Redis's clock, once per group.
            let at = try await redisTime(setup.redis) + 1500
            soon.withLock { $0 = at }
            _ = try await setup.redis.send(
                RedisCommand("XADD", [.string(setup.keys.jobs), "*", "type", "t", "job_id", "soon", "deliver_at", .integer(at)]))
            #expect(await eventually { ran("soon") == ["a": 1, "b": 1] })
            #expect(ran("later").isEmpty, "a minute ahead: not run")
            // Made due now, as `ferry job run-now` would: each group runs its own parked reading once.
            for group in ["a", "b"] {
                let parked = try await setup.redis.send(
                    RedisCommand("ZRANGE", [.string(setup.keys.delayed(group: group).due), 0, -1]))
                for id in parked.array?.compactMap(\.string) ?? [] {
                    _ = try await setup.redis.send(
                        RedisCommand("ZADD", [.string(setup.keys.delayed(group: group).due), "XX", 0, .string(id)]))
                }
            }
            #expect(await eventually { ran("later") == ["a": 1, "b": 1] })
            #expect(
                await eventually {
                    let (a, b) = (try await setup.pendingCount(group: "a"), try await setup.pendingCount(group: "b"))
                    return a == 0 && b == 0
                })
        }
        #expect(ran("soon") == ["a": 1, "b": 1] && ran("later") == ["a": 1, "b": 1], "once per group")
        let at = soon.withLock { $0 }
        #expect(runs.withLock { $0.values.joined().filter { $0.id == "soon" }.allSatisfy { $0.at >= at } }, "never early")
        let status = try #require(try await JobStatusRecord.load(jobID: "later", queue: setup.queue, connection: setup.redis))
        #expect(status.status(group: "a").state == .succeeded && status.status(group: "b").state == .succeeded)
        #expect(try await setup.length(setup.keys.jobs) == 2, "entries are never copied")
    }

    @Test("retention never trims an entry parked for a later delivery; the retry still runs")
    func retentionKeepsParkedEntries() async throws {
        let setup = try await Setup("park-trim")
        let seen = Deliveries()
        let worker = setup.worker([
            "t": JobHandlerClosure { job in
                seen.record(job)
                if job.deliveryAttempt == 1 { throw PushBackError() }
            }
        ]) { $0.retry = RetryPolicy(maxAttempts: 2, minimumBackoff: .seconds(3), maximumBackoff: .seconds(3), jitter: .none) }
        var trimming = Publisher.Configuration()
        trimming.retention = .milliseconds(1)
        let trimmer = Publisher(queue: setup.queue, connection: setup.redis, configuration: trimming)
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "kept"))
            #expect(
                await eventually {
                    try await setup.redis.send(RedisCommand("ZCARD", [.string(setup.keys.delayed(group: "workers").due)])).integer
                        == 1
                })
            // Every group has acknowledged the entry and it is older than the retention: only the
            // parked retry keeps it.
            try await Task.sleep(for: .milliseconds(20))
            _ = try await trimmer.trimExpiredJobs()
            #expect(try await setup.length(setup.keys.jobs) == 1)
            #expect(await eventually { try await setup.pendingCount() == 0 && seen.count == 2 })
        }
        #expect(seen.all.map(\.attempt) == [1, 2])
        #expect(
            try await setup.redis.send(RedisCommand("EXISTS", [.string(setup.keys.delayed(group: "workers").entries)])).integer
                == 0,
            "nothing holds the entry back from retention any more")
    }

    @Test("upgrade: jobs left pending for an idle-time retry by the previous version are retried by the new worker, not lost")
    func idleTimeRetriesFromThePreviousVersion() async throws {
        let setup = try await Setup("upgrade-retry")
        _ = try await setup.publisher.publish((1...5).map { JobMessage(type: "t", data: "", jobID: "old-\($0)") })
        _ = try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        _ = try await setup.redis.send(
            RedisCommand(
                "XREADGROUP", ["GROUP", "workers", "old-worker", "COUNT", "10", "STREAMS", .string(setup.keys.jobs), ">"]))
        // What the previous retry.lua left: each failed entry idle for the lease (JUSTID keeps
        // its delivery count), an earliest time in the retry_after hash for one of them.
        let pending = try await setup.redis.send(RedisCommand("XPENDING", [.string(setup.keys.jobs), "workers", "-", "+", "10"]))
        let ids = (pending.array ?? []).compactMap { $0.array?.first?.string }
        try #require(ids.count == 5)
        for id in ids {
            _ = try await setup.redis.send(
                RedisCommand(
                    "XCLAIM", [.string(setup.keys.jobs), "workers", "old-worker", "0", .string(id), "IDLE", "1000", "JUSTID"]))
        }
        _ = try await setup.redis.send(
            RedisCommand(
                "HSET",
                [.string(setup.keys.retryAfter), .string(ids[0] + " workers"), .integer(Date().millisecondsSince1970 + 500)]))
        let seen = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            #expect(await eventually { try await setup.pendingCount() == 0 && seen.count == 5 })
        }
        #expect(Set(seen.all.map(\.id)) == Set((1...5).map { "old-\($0)" }))
        #expect(seen.all.allSatisfy { $0.attempt == 2 }, "their second attempt, as the previous version counted")
    }
}

extension WorkerTests {
    @Test(
        "a job waiting for its retry: ferry job cancel ends it at once (it never runs again); run-now runs it as its next attempt"
    )
    func cancelAndRunNowOfAWaitingRetry() async throws {
        let setup = try await Setup("park-cancel")
        let seen = Deliveries()
        let worker = setup.worker([
            "t": JobHandlerClosure { job in
                seen.record(job)
                if job.deliveryAttempt == 1 { throw PushBackError() }
            }
        ]) { $0.retry = RetryPolicy(maxAttempts: 3, minimumBackoff: .seconds(600), maximumBackoff: .seconds(600)) }
        let parked = setup.keys.delayed(group: "workers")
        try await running(worker) {
            _ = try await setup.publisher.publish([
                JobMessage(type: "t", data: "", jobID: "to-cancel"), JobMessage(type: "t", data: "", jobID: "to-run"),
            ])
            #expect(
                await eventually { try await setup.redis.send(RedisCommand("ZCARD", [.string(parked.due)])).integer == 2 })
            let before = try await JobStatus.requestCancellation(jobID: "to-cancel", queue: setup.queue, connection: setup.redis)
            #expect(before == .retrying)
            let cancelled = try await JobStatus.load(jobID: "to-cancel", queue: setup.queue, connection: setup.redis)
            #expect(cancelled?.state == .cancelled && cancelled?.fields["retryable"] == "0", "at once, not at its retry time")
            #expect(try await setup.redis.send(RedisCommand("ZCARD", [.string(parked.due)])).integer == 1)
            #expect(
                try await setup.redis.send(RedisCommand("ZSCORE", [.string(setup.keys.cancelRequests), "to-cancel"])) == .null,
                "no request left waiting for a delivery that will not come")

            #expect(try await ScheduledJobs(queue: setup.queue, connection: setup.redis).runNow(jobID: "to-run"))
            #expect(await eventually { try await setup.pendingCount() == 0 && seen.count == 3 })
        }
        #expect(seen.all.filter { $0.id == "to-run" }.map(\.attempt) == [1, 2])
        #expect(seen.all.filter { $0.id == "to-cancel" }.map(\.attempt) == [1])
        #expect(try await ScheduledJobs(queue: setup.queue, connection: setup.redis).runNow(jobID: "to-cancel") == false)
        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        let counts = try await index.counts(group: "workers")
        #expect(counts[.cancelled] == 1 && counts[.succeeded] == 1 && (counts[.retrying] ?? 0) == 0)
    }
}

extension WorkerTests {
    @Test("a retry due while its failed attempt's task is still ending here runs as attempt 2 at once, not after the lease")
    func retryDueBeforeItsTaskEnded() async throws {
        let setup = try await Setup("retry-race")
        let seen = Deliveries()
        // Holds the failed attempt's task in its retry_scheduled line, after the job was parked.
        let log = LogRecord(pausing: "retry_scheduled", for: .milliseconds(800))
        let worker = setup.worker(
            [
                "t": JobHandlerClosure { job in
                    seen.record(job)
                    if job.deliveryAttempt == 1 { throw PushBackError() }
                }
            ], logger: log.logger()
        ) {
            $0.retry = RetryPolicy(maxAttempts: 2, minimumBackoff: .milliseconds(1), maximumBackoff: .milliseconds(1))
            $0.lease = .seconds(120)  // a retry left behind would wait two minutes for its lease
        }
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "r-1"))
            #expect(await eventually(.seconds(60)) { try await setup.pendingCount() == 0 && seen.count == 2 })
        }
        #expect(seen.all.map(\.attempt) == [1, 2])
        #expect(try await setup.deadEntries().isEmpty)
    }
}

extension WorkerTests {
    @Test(
        "a keyed job that is dead-lettered or parked for a retry releases its lock at once: the key's next job need not wait for it to lapse"
    )
    func keyedLockReleasedWhenTheJobLeaves() async throws {
        let setup = try await Setup("lock-release")
        let worker = setup.worker([
            "doomed": JobHandlerClosure { _ in throw PermanentJobError("never") },
            "flaky": JobHandlerClosure { job in if job.deliveryAttempt == 1 { throw PushBackError() } },
        ]) {
            $0.lease = .seconds(10)  // a lock lives 22 s past its last renewal: far longer than this test looks
            $0.retry = RetryPolicy(maxAttempts: 2, minimumBackoff: .seconds(600), maximumBackoff: .seconds(600))
        }
        try await running(worker) {
            _ = try await setup.publisher.publish([
                JobMessage(type: "doomed", data: "", jobID: "d-1", idempotencyKey: "key-d"),
                JobMessage(type: "flaky", data: "", jobID: "f-1", idempotencyKey: "key-f"),
            ])
            #expect(await eventually { try await setup.deadEntries().count == 1 })
            #expect(
                await eventually {
                    try await setup.redis.send(RedisCommand("ZCARD", [.string(setup.keys.delayed(group: "workers").due)])).integer
                        == 1
                })
            for key in ["key-d", "key-f"] {
                let lock = try await setup.redis.send(
                    RedisCommand("EXISTS", [.string(setup.keys.inFlightLock(idempotencyKey: key))]))
                #expect(lock == .integer(0), "\(key)'s lock released")
            }
        }
    }
}
