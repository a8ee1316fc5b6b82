import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

/// Counts handlers running at once, per key and in all, and remembers the most seen.
final class RunningCounter: Sendable {
    private let state = Mutex((running: [String: Int](), most: [String: Int](), starts: [(String, ContinuousClock.Instant)]()))
    func enter(_ keys: String...) {
        state.withLock { state in
            for key in keys {
                state.running[key, default: 0] += 1
                state.most[key] = max(state.most[key] ?? 0, state.running[key] ?? 0)
                state.starts.append((key, .now))
            }
        }
    }
    func leave(_ keys: String...) { state.withLock { state in for key in keys { state.running[key, default: 0] -= 1 } } }
    func most(_ key: String) -> Int { state.withLock { $0.most[key] ?? 0 } }
    func running(_ key: String) -> Int { state.withLock { $0.running[key] ?? 0 } }
    func starts(_ key: String) -> [ContinuousClock.Instant] { state.withLock { $0.starts.filter { $0.0 == key }.map(\.1) } }

    /// A handler that counts itself running under "all", records each job in `seen`, and takes `duration`.
    func handler(recording seen: Deliveries, taking duration: Duration) -> JobHandlerClosure {
        JobHandlerClosure { job in
            self.enter("all")
            defer { self.leave("all") }
            seen.record(job)
            try await Task.sleep(for: duration)
        }
    }
}

@Suite("Limits")
struct LimitModelTests {
    @Test("rates read as N/s, N/m, N/h, N/d or N/<duration>, and write back the same")
    func rates() throws {
        #expect(try QueueLimit.parseRate("100/s") == (100, .seconds(1)))
        #expect(try QueueLimit.parseRate("30/d") == (30, .seconds(86_400)))
        #expect(try QueueLimit.parseRate("5/10s") == (5, .seconds(10)))
        #expect(try QueueLimit.parseRate("7/250ms") == (7, .milliseconds(250)))
        for text in ["100/s", "10/m", "3/h", "30/d", "5/10s", "7/250ms", "2/2h"] {
            let (count, period) = try QueueLimit.parseRate(text)
            #expect(QueueLimit.rateText(count: count, period: period) == text)
        }
        for bad in ["100", "0/s", "x/s", "10/fortnight", "10/", "/s", "-1/s"] {
            #expect(throws: FerryError.self, "\(bad)") { try QueueLimit.parseRate(bad) }
        }
    }

    @Test("a limit names what is wrong with it; its JSON form reads back the same")
    func validation() throws {
        let bad: [(QueueLimit, String)] = [
            (QueueLimit(name: "a b", kind: .concurrency(1)), "limit name"),
            (QueueLimit(name: "", kind: .concurrency(1)), "limit name"),
            (QueueLimit(name: "c", kind: .concurrency(0)), "at least 1"),
            (QueueLimit(name: "r", kind: .rate(count: 0, period: .seconds(1), burst: 1)), "at least 1 job"),
            (QueueLimit(name: "r", kind: .rate(count: 1, period: .seconds(1), burst: 0)), "burst"),
            (QueueLimit(name: "r", kind: .rate(count: 2_000_000, period: .seconds(1), burst: 1)), "1,000,000"),
            (QueueLimit(name: "t", kind: .concurrency(1), type: ""), "type"),
        ]
        for (limit, words) in bad {
            #expect(throws: FerryError.self) { try limit.validate() }
            do { try limit.validate() } catch { #expect(error.message.contains(words), "\(error.message)") }
        }
        for limit in [
            QueueLimit(name: "api", kind: .rate(count: 30, period: .seconds(86_400), burst: 30), type: "upload", perKey: true),
            QueueLimit(name: "c", kind: .concurrency(5)),
        ] {
            let json = try JSONEncoder.sortedKeys.encode(limit)
            #expect(try JSONDecoder().decode(QueueLimit.self, from: json) == limit)
        }
        #expect(
            QueueLimit(name: "api", kind: .rate(count: 30, period: .seconds(86_400), burst: 30), type: "upload", perKey: true)
                .summary == "rate 30/d burst 30 type upload per key")
    }

    @Test("a limit covers jobs of its type, and a per-key limit only jobs with a key")
    func covers() {
        let keyed = JobMessage(type: "a", key: "user-1"), plain = JobMessage(type: "a"), other = JobMessage(type: "b")
        let all = QueueLimit(name: "all", kind: .concurrency(1))
        let typed = QueueLimit(name: "typed", kind: .concurrency(1), type: "a")
        let perKey = QueueLimit(name: "perkey", kind: .concurrency(1), perKey: true)
        #expect([keyed, plain, other].map(all.covers) == [true, true, true])
        #expect([keyed, plain, other].map(typed.covers) == [true, true, false])
        #expect([keyed, plain, other].map(perKey.covers) == [true, false, false])
    }
}

extension WorkerTests {
    /// Sets `limits` on the queue before the workers start.
    func setLimits(_ setup: Setup, _ limits: QueueLimit...) async throws {
        for limit in limits { try await QueueLimits(queue: setup.queue, connection: setup.redis).set(limit) }
    }

    @Test("a concurrency limit holds across two workers; waiting jobs spend no attempt, show waiting, and all finish")
    func concurrencyLimitAcrossWorkers() async throws {
        let setup = try await Setup("limit-c")
        try await setLimits(setup, QueueLimit(name: "three", kind: .concurrency(3)))
        let counter = RunningCounter(), seen = Deliveries()
        let handler = counter.handler(recording: seen, taking: .milliseconds(30))
        let ids = (0..<60).map { "c-\($0)" }
        _ = try await setup.publisher.publish(ids.map { JobMessage(type: "t", data: "", jobID: $0) })
        var sawWaiting = false
        try await running(
            setup.worker(["t": handler]) { $0.concurrency = 16 }, setup.worker(["t": handler]) { $0.concurrency = 16 }
        ) {
            #expect(
                await eventually {
                    if !sawWaiting,
                        let status = try await JobStatus.load(jobID: ids[59], queue: setup.queue, connection: setup.redis),
                        status.state == .waiting
                    {
                        sawWaiting = status.fields["waiting_for"] == "three" && status.attempts == 0
                    }
                    return seen.count == 60
                })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(counter.most("all") <= 3)
        #expect(counter.most("all") >= 2, "the limit lets several run")
        #expect(sawWaiting, "the last job was seen waiting on the limit, with no attempt spent")
        #expect(seen.all.allSatisfy { $0.attempt == 1 }, "waiting spends no attempt")
        #expect(Set(seen.all.map(\.id)) == Set(ids))
        for id in ids {
            let status = try #require(try await JobStatus.load(jobID: id, queue: setup.queue, connection: setup.redis))
            #expect(status.state == .succeeded)
            #expect(status.attempts == 1)
        }
        let slots = setup.keys.limitState(name: "three", key: nil)
        #expect(
            await eventually { try await setup.redis.send(RedisCommand("HGET", [.string(slots.held), "*"])).string == "0" },
            "every slot was released")
        #expect(try await setup.redis.send(RedisCommand("EXISTS", [.string(slots.waiting)])).integer == 0)
    }

    @Test("a per-key limit: each key runs one at a time, and a key with one job is not held back by a key with many")
    func perKeyLimitIsFair() async throws {
        let setup = try await Setup("limit-key")
        try await setLimits(setup, QueueLimit(name: "one-per-user", kind: .concurrency(1), perKey: true))
        let counter = RunningCounter(), seen = Deliveries()
        let handler = JobHandlerClosure { job in
            let key = job.message.key ?? "none"
            counter.enter(key)
            defer { counter.leave(key) }
            seen.record(job)
            try await Task.sleep(for: .milliseconds(20))
        }
        _ = try await setup.publisher.publish((0..<100).map { JobMessage(type: "t", jobID: "a-\($0)", key: "a") })
        _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "b-0", key: "b"))
        _ = try await setup.publisher.publish((0..<5).map { JobMessage(type: "t", data: "", jobID: "n-\($0)") })
        try await running(setup.worker(["t": handler]) { $0.concurrency = 32 }) {
            #expect(await eventually { seen.all.contains { $0.id == "b-0" } })
            let heavyDone = seen.all.filter { $0.id.hasPrefix("a-") }.count
            #expect(heavyDone < 50, "b's one job ran while a's backlog was under way (\(heavyDone) of 100 done)")
            #expect(await eventually(.seconds(60)) { seen.count == 106 })
        }
        #expect(counter.most("a") == 1)
        #expect(counter.most("none") >= 1, "jobs without a key are not held by a per-key limit")
        #expect(seen.all.allSatisfy { $0.attempt == 1 })
    }

    @Test("a rate limit spaces starts: 40 jobs at 20/s take about 39 × 50 ms from first start to last")
    func rateLimitSpacesStarts() async throws {
        let setup = try await Setup("limit-rate")
        try await setLimits(setup, QueueLimit(name: "twenty", kind: .rate(count: 20, period: .seconds(1), burst: 1)))
        let counter = RunningCounter(), seen = Deliveries()
        let log = LogRecord()
        let handler = JobHandlerClosure { job in
            counter.enter("all")
            counter.leave("all")
            seen.record(job)
        }
        _ = try await setup.publisher.publish((0..<40).map { JobMessage(type: "t", data: "", jobID: "r-\($0)") })
        try await running(setup.worker(["t": handler], logger: log.logger()) { $0.concurrency = 16 }) {
            #expect(await eventually { seen.count == 40 })
        }
        let starts = counter.starts("all")
        let span = try #require(starts.last) - (try #require(starts.first))
        // Each start waits for the time the limit gave it; a loaded machine may start the first
        // one late (the span then shrinks by that much), never a later one early. Without the
        // limit the 40 jobs start within a few milliseconds.
        #expect(span >= .milliseconds(39 * 50 - 100), "\(span)")
        #expect(log.messages.contains { $0.hasPrefix("job_waiting") })
        #expect(seen.all.allSatisfy { $0.attempt == 1 })
    }

    @Test("a limit changed while workers run applies to waiting jobs at once; deleting it lets every job start")
    func limitChangesWhileRunning() async throws {
        let setup = try await Setup("limit-change")
        let limits = QueueLimits(queue: setup.queue, connection: setup.redis)
        try await limits.set(QueueLimit(name: "gate", kind: .concurrency(1)))
        let counter = RunningCounter(), release = Mutex(false)
        let handler = JobHandlerClosure { _ in
            counter.enter("all")
            defer { counter.leave("all") }
            while !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
        }
        _ = try await setup.publisher.publish((0..<6).map { JobMessage(type: "t", data: "", jobID: "g-\($0)") })
        // A long lease: waiting jobs come back on their own only after it, so what starts them is the change.
        try await running(
            setup.worker(["t": handler]) {
                $0.concurrency = 16; $0.lease = .seconds(60)
            }
        ) {
            #expect(await eventually { counter.running("all") == 1 })
            #expect(await eventually { try await limits.usage(of: QueueLimit(name: "gate", kind: .concurrency(1))).waiting == 5 })
            try await limits.set(QueueLimit(name: "gate", kind: .concurrency(3)))
            #expect(await eventually(.seconds(20)) { counter.running("all") == 3 })
            #expect(try await limits.delete(name: "gate"))
            #expect(try await limits.delete(name: "gate") == false)
            #expect(await eventually(.seconds(20)) { counter.running("all") == 6 })
            release.withLock { $0 = true }
        }
        #expect(counter.most("all") == 6)
    }

    @Test("a job running longer than its lease keeps its slot: the next job waits for it to end")
    func slotExtendedWithLease() async throws {
        let setup = try await Setup("limit-lease")
        try await setLimits(setup, QueueLimit(name: "solo", kind: .concurrency(1)))
        let counter = RunningCounter()
        let handler = JobHandlerClosure { job in
            counter.enter("all")
            defer { counter.leave("all") }
            if job.id == "long" { try await Task.sleep(for: .seconds(18)) }
        }
        // An 8 s lease: shorter ones lapsed when the whole suite loaded the machine (a worker that
        // cannot extend its slots for a lease loses them, as it loses its entries).
        try await running(
            setup.worker(["t": handler]) {
                $0.concurrency = 4; $0.lease = .seconds(8)
            }
        ) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "long"))
            #expect(await eventually { counter.running("all") == 1 })
            _ = try await setup.publisher.publish((0..<3).map { JobMessage(type: "t", data: "", jobID: "next-\($0)") })
            #expect(await eventually { counter.starts("all").count == 4 })
        }
        #expect(counter.most("all") == 1, "the slot outlived two leases of the long job")
    }

    @Test("a job waiting on a limit can be cancelled: it leaves the group's later deliveries and never runs")
    func cancelWaitingJob() async throws {
        let setup = try await Setup("limit-cancel")
        try await setLimits(setup, QueueLimit(name: "solo", kind: .concurrency(1)))
        let seen = Deliveries(), release = Mutex(false)
        let handler = JobHandlerClosure { job in
            seen.record(job)
            while !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
        }
        try await running(setup.worker(["t": handler]) { $0.lease = .seconds(60) }) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "first"))
            #expect(await eventually { seen.count == 1 })
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "second"))
            #expect(
                await eventually {
                    try await JobStatus.load(jobID: "second", queue: setup.queue, connection: setup.redis)?.state == .waiting
                })
            #expect(
                try await JobStatus.requestCancellation(jobID: "second", queue: setup.queue, connection: setup.redis)
                    == .waiting)
            #expect(try await JobStatus.load(jobID: "second", queue: setup.queue, connection: setup.redis)?.state == .cancelled)
            release.withLock { $0 = true }
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen.all.map(\.id) == ["first"])
    }

    @Test(
        "slots left counted by a write the worker could not confirm lapse once the jobs that took slots under that name end, though the worker keeps running limited jobs"
    )
    func uncertainSlotWriteLapses() async throws {
        let setup = try await Setup("limit-orphan")
        try await setLimits(setup, QueueLimit(name: "two", kind: .concurrency(2)))
        let gates = Mutex<Set<String>>([]), started = Deliveries()
        let handler = JobHandlerClosure { job in
            started.record(job)
            while !gates.withLock({ $0.contains(job.id) }) { try await Task.sleep(for: .milliseconds(10)) }
        }
        let slots = setup.keys.limitState(name: "two", key: nil)
        let worker = setup.worker(["t": handler], consumer: "orphan-c") { $0.lease = .seconds(3) }
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "first"))
            #expect(await eventually { started.count == 1 })
            // A write of the worker's slots it could not confirm: new slots go under a new name.
            worker.renewSlotHolder(after: "a test's lost reply")
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "keeper"))
            #expect(await eventually { started.count == 2 })
            #expect(try await setup.redis.send(RedisCommand("HGET", [.string(slots.held), "orphan-c#1"])).string == "1")
            // What that write left: a slot counted under the old name that no job of the worker holds.
            try await setup.redis.send(RedisCommand("HINCRBY", [.string(slots.held), "orphan-c", 1]))
            try await setup.redis.send(RedisCommand("HINCRBY", [.string(slots.held), "*", 1]))
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "next"))
            #expect(
                await eventually {
                    try await JobStatus.load(jobID: "next", queue: setup.queue, connection: setup.redis)?.state == .waiting
                }, "the limit is full")
            gates.withLock { _ = $0.insert("first") }
            // first's end leaves the orphaned count under the old name, which nothing extends now:
            // it lapses a lease later, and next takes its slot while keeper still runs.
            #expect(
                await eventually(.seconds(30)) { started.all.contains { $0.id == "next" } },
                "the orphaned slot lapsed while keeper kept the worker's new name extended")
            #expect(gates.withLock { !$0.contains("keeper") }, "keeper was still running")
            gates.withLock { $0.formUnion(["keeper", "next"]) }
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        let releasedAll = await eventually {
            try await setup.redis.send(RedisCommand("HGET", [.string(slots.held), "*"])).string == "0"
        }
        let held = try await setup.redis.send(RedisCommand("HGETALL", [.string(slots.held)]))
        #expect(releasedAll, "every slot was released: \(held)")
    }

    @Test("a failed concurrency check renews the name the worker's slots are counted under; its later jobs run")
    func failedAcquireRenewsHolder() async throws {
        let setup = try await Setup("limit-renew")
        try await setLimits(setup, QueueLimit(name: "two", kind: .concurrency(2)))
        let slots = setup.keys.limitState(name: "two", key: nil)
        // A key of the wrong type makes acquire.lua fail with Redis's WRONGTYPE error.
        try await setup.redis.send(RedisCommand("SET", [.string(slots.held), "not a hash"]))
        let seen = Deliveries(), log = LogRecord()
        let worker = setup.worker(["t": JobHandlerClosure { seen.record($0) }], consumer: "renew-c", logger: log.logger()) {
            $0.lease = .seconds(2)
        }
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "j1"))
            #expect(await eventually { log.messages.contains { $0.hasPrefix("slot_holder_renewed: ") } })
            try await setup.redis.send(RedisCommand("DEL", [.string(slots.held)]))
            #expect(await eventually(.seconds(30)) { seen.count == 1 }, "it came back after the lease and ran")
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(worker.slotHolder.hasPrefix("renew-c#"))
    }
}
