import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

/// What ordered handlers saw: each key's starts and ends, in the order they happened.
final class OrderLog: Sendable {
    private let events = Mutex<[(key: String, index: Int, start: Bool)]>([])
    private let overlap = Mutex(false)
    private let running = Mutex<Set<String>>([])
    func start(_ key: String, _ index: Int) {
        running.withLock { if !$0.insert(key).inserted { overlap.withLock { $0 = true } } }
        events.withLock { $0.append((key, index, true)) }
    }
    func end(_ key: String, _ index: Int) {
        _ = running.withLock { $0.remove(key) }
        events.withLock { $0.append((key, index, false)) }
    }
    var sawOverlap: Bool { overlap.withLock { $0 } }
    /// The indexes of `key`'s jobs in the order they started (a retry shows its index again).
    func starts(_ key: String) -> [Int] { events.withLock { $0.filter { $0.key == key && $0.start }.map(\.index) } }
    func ends(_ key: String) -> [Int] { events.withLock { $0.filter { $0.key == key && !$0.start }.map(\.index) } }
    var endCount: Int { events.withLock { $0.filter { !$0.start }.count } }
}

extension WorkerTests {
    /// A handler that logs each ordered job's start and end, and fails the first attempt of the
    /// jobs `failFirst` names.
    func orderedHandler(_ log: OrderLog, failFirst: Set<String> = [], holdFor: Duration = .milliseconds(5)) -> JobHandlerClosure {
        JobHandlerClosure { job in
            let parts = String(decoding: job.data, as: UTF8.self).split(separator: " ")
            let key = String(parts[0]), index = Int(parts[1]) ?? -1
            log.start(key, index)
            defer { log.end(key, index) }
            try await Task.sleep(for: holdFor)
            if job.deliveryAttempt == 1 && failFirst.contains(job.id) { throw PushBackError() }
        }
    }

    func orderedJobs(keys: Int, each: Int) -> [JobMessage] {
        (0..<each).flatMap { index in
            (0..<keys).map { key in
                JobMessage(type: "t", data: Array("k\(key) \(index)".utf8), jobID: "k\(key)-\(index)", orderingKey: "k\(key)")
            }
        }
    }

    @Test(
        "ordering keys: two workers run each key's jobs one at a time in publish order, retries keeping their place; keys run in parallel"
    )
    func orderingKeysHoldAcrossWorkersAndRetries() async throws {
        let setup = try await Setup("order")
        let log = OrderLog()
        let jobs = orderedJobs(keys: 6, each: 15)
        let failing = Set(jobs.map { $0.jobID ?? "" }.filter { $0.hasSuffix("-3") || $0.hasSuffix("-7") })
        _ = try await setup.publisher.publish(jobs)
        let parallel = Mutex(0)
        let handler = orderedHandler(log, failFirst: failing)
        let watching = JobHandlerClosure { job in
            parallel.withLock { $0 = max($0, log.starts("k0").count > 0 && log.starts("k1").count > 0 ? 2 : 1) }
            try await handler.handle(job)
        }
        try await running(
            setup.worker(["t": watching]) { $0.concurrency = 16 }, setup.worker(["t": watching]) { $0.concurrency = 16 }
        ) {
            // Every job of every key started (a stalled machine's reclaims can add runs, so the
            // count of ends alone could be reached early), and the failing ones' retries ended.
            #expect(
                await eventually(.seconds(90)) {
                    (0..<6).allSatisfy { Set(log.starts("k\($0)")).isSuperset(of: 0..<15) }
                        && log.endCount >= jobs.count + failing.count
                })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(!log.sawOverlap, "two jobs of one key never ran at once")
        for key in 0..<6 {
            let starts = log.starts("k\(key)")
            #expect(starts == starts.sorted(), "k\(key) started in publish order: \(starts)")
            #expect(Set(starts) == Set(0..<15))
        }
        #expect(parallel.withLock { $0 } == 2, "keys ran side by side")
        for key in 0..<6 {
            let turn = setup.keys.orderingTurn(group: "workers", key: "k\(key)").turn
            #expect(try await setup.redis.send(RedisCommand("HGET", [.string(turn), "owner"])) == .null, "no turn is left held")
        }
    }

    @Test(
        "a dead-lettered job stops its ordering key (block): its next jobs wait, listed blocked, until resume runs them in order")
    func deadLetterBlocksTheKey() async throws {
        let setup = try await Setup("order-block")
        let runs = OrderLog()
        let base = orderedHandler(runs)
        let handler = JobHandlerClosure { job in
            if job.id == "k0-0" { throw PermanentJobError("cannot") }
            try await base.handle(job)
        }
        _ = try await setup.publisher.publish(orderedJobs(keys: 2, each: 3))
        let ordering = QueueOrdering(queue: setup.queue, connection: setup.redis)
        // The dead letter's task holds still after it lands, longer than the lease after which
        // the key's waiting jobs look again: none may take the turn before the block lands.
        let log = LogRecord(pausing: "dead_lettered", for: .seconds(4))
        try await running(setup.worker(["t": handler], logger: log.logger())) {
            #expect(await eventually { runs.ends("k1") == [0, 1, 2] })
            #expect(await eventually { try await ordering.blocked().first?.waiting == 2 })
            try await Task.sleep(for: .milliseconds(500))
            #expect(runs.starts("k0").isEmpty, "nothing of the stopped key ran")
            let blocked = try await ordering.blocked()
            #expect(blocked.map(\.key) == ["k0"] && blocked.first?.group == "workers" && blocked.first?.deadEntryID != nil)
            #expect(try await ordering.blockedCount() == 1)
            #expect(try await ordering.resume(key: "k0", group: "workers") != nil)
            #expect(await eventually { runs.ends("k0") == [1, 2] })
        }
        #expect(try await ordering.blocked().isEmpty)
        #expect(try await ordering.resume(key: "k0", group: "workers") == nil, "not blocked any more")
    }

    @Test("--ordering-on-dead skip: a dead-lettered job's key goes on with its next job")
    func deadLetterSkipsOn() async throws {
        let setup = try await Setup("order-skip")
        let log = OrderLog()
        let base = orderedHandler(log)
        let handler = JobHandlerClosure { job in
            if job.id == "k0-1" { throw PermanentJobError("cannot") }
            try await base.handle(job)
        }
        _ = try await setup.publisher.publish(orderedJobs(keys: 1, each: 4))
        try await running(setup.worker(["t": handler]) { $0.orderingOnDead = .skip }) {
            #expect(await eventually { log.ends("k0") == [0, 2, 3] })
        }
        #expect(try await QueueOrdering(queue: setup.queue, connection: setup.redis).blocked().isEmpty)
        #expect(try await setup.deadEntries().count == 1)
    }
}

extension WorkerTests {
    @Test("one key's 150 jobs published at once (many in one millisecond) all run, in publish order")
    func orderingKeyWithManyJobsPerMillisecond() async throws {
        let setup = try await Setup("order-dense")
        let log = OrderLog()
        let jobs = orderedJobs(keys: 1, each: 150)
        _ = try await setup.publisher.publish(jobs)
        let listed =
            try await setup.redis.send(
                RedisCommand("ZRANGE", [.string(setup.keys.orderedJobs(key: "k0")), "0", "-1", "WITHSCORES"])
            ).array?.compactMap(\.string) ?? []
        // Scores are exact (ms × 1000 + sequence), however many jobs share a millisecond.
        for pair in stride(from: 0, to: listed.count, by: 2) {
            let parts = listed[pair].split(separator: "-").compactMap { Int64($0) }
            #expect(listed[pair + 1] == "\(parts[0] * 1000 + min(parts[1], 999))", "\(listed[pair])")
        }
        try await running(setup.worker(["t": orderedHandler(log, holdFor: .zero)]) { $0.concurrency = 32 }) {
            #expect(await eventually(.seconds(60)) { log.ends("k0").count == 150 })
        }
        #expect(log.starts("k0") == Array(0..<150))
    }
}
