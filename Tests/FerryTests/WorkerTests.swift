import FerryRedis
import FerryTestSupport
import Foundation
import Logging
import Synchronization
import Testing

@testable import Ferry

/// Notices when two handlers run at the same time.
final class OverlapDetector: Sendable {
    private let state = Mutex((active: 0, overlapped: false))
    func enter() {
        state.withLock {
            $0.active += 1
            if $0.active > 1 { $0.overlapped = true }
        }
    }
    func leave() { state.withLock { $0.active -= 1 } }
    var sawOverlap: Bool { state.withLock { $0.overlapped } }
}

/// Records what handlers saw, from any task.
final class Deliveries: Sendable {
    private let seen = Mutex<[(id: String, attempt: Int)]>([])
    func record(_ job: Job) { record(id: job.id, attempt: job.deliveryAttempt) }
    func record(id: String, attempt: Int) { seen.withLock { $0.append((id, attempt)) } }
    var all: [(id: String, attempt: Int)] { seen.withLock { $0 } }
    var count: Int { seen.withLock { $0.count } }
}

/// Records the job events a worker reports, from any task.
final class RecordedEvents: JobEventObserver {
    private let events = Mutex<[JobEvent]>([])
    func jobFinished(_ event: JobEvent) { events.withLock { $0.append(event) } }
    var all: [JobEvent] { events.withLock { $0 } }
}

@Suite("Worker")
struct WorkerTests {
    typealias Setup = TestQueue

    /// Runs `worker` while `body` runs, then stops it gracefully and waits for it to return.
    func running(_ workers: Worker..., body: () async throws -> Void) async throws {
        let tasks = workers.map { worker in Task { try await worker.run() } }
        do {
            try await body()
        } catch {
            workers.forEach { $0.stop() }
            throw error
        }
        workers.forEach { $0.stop() }
        for task in tasks { try await task.value }
    }

    @Test("jobs published before the first worker starts are delivered, run once each, and acknowledged")
    func deliversAndAcknowledges() async throws {
        let setup = try await Setup()
        let receipts = try await setup.publisher.publish((0..<50).map { JobMessage(type: "t", data: "\($0)") })
        let seen = Deliveries()
        let worker = setup.worker(["t": JobHandlerClosure { seen.record($0) }])
        try await running(worker) {
            #expect(await eventually { seen.count == 50 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(Set(seen.all.map(\.id)) == Set(receipts.map(\.jobID)))
        #expect(seen.all.allSatisfy { $0.attempt == 1 })
    }

    @Test("a failing job is delivered again after the backoff, with a growing attempt, until it succeeds")
    func retriesWithBackoff() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let worker = setup.worker([
            "flaky": JobHandlerClosure { job in
                seen.record(job)
                if job.deliveryAttempt < 3 { throw PushBackError() }
            }
        ]) { $0.retry = RetryPolicy(maxAttempts: 5, minimumBackoff: .milliseconds(200), maximumBackoff: .milliseconds(200)) }
        let start = ContinuousClock.now
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "flaky", data: ""))
            #expect(await eventually { seen.count == 3 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen.all.map(\.attempt) == [1, 2, 3])
        #expect(ContinuousClock.now - start >= .milliseconds(200), "two backoffs of at least 100 ms (half of 200 ms, jittered)")
        #expect(try await setup.deadEntries().isEmpty)
    }

    @Test("a poison job is dead-lettered after exactly max attempts with its fields and every dead_letter field")
    func poisonJob() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let worker = setup.worker([
            "poison": JobHandlerClosure { job in
                seen.record(job)
                throw PushBackError()
            }
        ])
        try await running(worker) {
            _ = try await setup.publisher.publish(
                JobMessage(type: "poison", data: [0xFF, 0x00], jobID: "p-1", attributes: ["k": "v"]))
            #expect(await eventually { try await setup.deadEntries().count == 1 })
        }
        #expect(seen.all.map(\.attempt) == [1, 2, 3])
        #expect(try await setup.pendingCount() == 0, "acknowledged in its group")
        let dead = try #require(try await setup.deadEntries().first)
        func text(_ field: String) -> String? { dead.value(of: field).map { String(decoding: $0, as: UTF8.self) } }
        #expect(dead.value(of: "data") == [0xFF, 0x00])
        #expect(text("job_id") == "p-1")
        #expect(text("attr.k") == "v")
        #expect(text("dead_letter.source_stream") == setup.keys.jobs)
        #expect(text("dead_letter.source_group") == "workers")
        #expect(text("dead_letter.source_id")?.contains("-") == true)
        #expect(text("dead_letter.delivery_count") == "3")
        #expect(text("dead_letter.error_class") == "PushBackError")
        #expect(text("dead_letter.error")?.contains("pushed back") == true)
        #expect(text("dead_letter.failed_at").flatMap { Int64($0) } ?? 0 > 1_700_000_000_000)
        #expect(text("dead_letter.consumer")?.hasPrefix("c-") == true)
    }

    @Test("a malformed entry written by hand is dead-lettered at once, naming the field; no handler runs")
    func malformedEntry() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        try await setup.redis.send(RedisCommand("XADD", [.string(setup.keys.jobs), "*", "data", "no type here"]))
        try await setup.redis.send(RedisCommand("XADD", [.string(setup.keys.jobs), "*", "type", "t", "max_attempts", "0"]))
        let worker = setup.worker(["t": JobHandlerClosure { seen.record($0) }])
        try await running(worker) {
            #expect(await eventually { try await setup.deadEntries().count == 2 })
        }
        // Jobs run concurrently: the dead-letter stream's order is not the job stream's.
        let dead = try await setup.deadEntries().sorted {
            ($0.value(of: "dead_letter.source_id").map { String(decoding: $0, as: UTF8.self) } ?? "")
                < ($1.value(of: "dead_letter.source_id").map { String(decoding: $0, as: UTF8.self) } ?? "")
        }
        #expect(
            dead.map { String(decoding: $0.value(of: "dead_letter.error_class") ?? [], as: UTF8.self) } == [
                "malformed_entry", "malformed_entry",
            ])
        #expect(String(decoding: dead[0].value(of: "dead_letter.error") ?? [], as: UTF8.self).contains("field \"type\": missing"))
        #expect(String(decoding: dead[1].value(of: "dead_letter.error") ?? [], as: UTF8.self).contains("max_attempts"))
        #expect(dead[0].value(of: "data") == Array("no type here".utf8), "the original fields are kept")
        #expect(seen.count == 0)
    }

    @Test("an unknown type and a permanent failure are dead-lettered at once")
    func immediateDeadLetters() async throws {
        let setup = try await Setup()
        let worker = setup.worker(["refuse": JobHandlerClosure { _ in throw PermanentJobError("the invoice is cancelled") }])
        try await running(worker) {
            _ = try await setup.publisher.publish([
                JobMessage(type: "nobody-handles-this", data: ""), JobMessage(type: "refuse", data: ""),
            ])
            #expect(await eventually { try await setup.deadEntries().count == 2 })
        }
        let dead = try await setup.deadEntries()
        let classes = Set(dead.map { String(decoding: $0.value(of: "dead_letter.error_class") ?? [], as: UTF8.self) })
        #expect(classes == ["unknown_type", "permanent_failure"])
        #expect(dead.allSatisfy { $0.value(of: "dead_letter.delivery_count") == Array("1".utf8) })
    }

    @Test("on Redis Cluster, through a node that does not serve the queue: publish, retry, dead-letter and ack all land")
    func clusterRedirections() async throws {
        let cluster = try await RedisClusterProcess()
        var setup = try await Setup("cluster", url: cluster.nodes[0].url)
        while try await cluster.node(servingKeyOf: setup.keys.jobs).node.port == cluster.nodes[0].port {
            setup = try await Setup("cluster", url: cluster.nodes[0].url)
        }
        let owner = try await cluster.node(servingKeyOf: setup.keys.jobs).node
        let seen = Deliveries()
        let worker = setup.worker([
            "t": JobHandlerClosure { job in
                seen.record(job)
                if job.message.data == Array("flaky".utf8) && job.deliveryAttempt == 1 { throw PushBackError() }
            },
            "refuse": JobHandlerClosure { _ in throw PermanentJobError("refused") },
        ])
        _ = try await setup.publisher.publish((0..<20).map { JobMessage(type: "t", data: Array("\($0)".utf8)) })
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: Array("flaky".utf8)))
        _ = try await setup.publisher.publish(JobMessage(type: "refuse", data: []))
        for _ in 0..<2 { _ = try await setup.publisher.publish(JobMessage(type: "t", data: [], idempotencyKey: "once")) }
        try await running(worker) {
            #expect(await eventually { seen.count == 23 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
            #expect(await eventually { try await setup.deadEntries().count == 1 })
        }
        #expect(try await RedisClusterProcess.send(owner, "XLEN", setup.keys.jobs).integer == 23)
        #expect(try await RedisClusterProcess.send(cluster.nodes[0], "DBSIZE").integer == 0, "nothing landed on the node dialled")

        // `SCAN` sees one node; listing queues visits every primary.
        var local = try await Setup("cluster", url: cluster.nodes[0].url)
        while try await cluster.node(servingKeyOf: local.keys.jobs).node.port != cluster.nodes[0].port {
            local = try await Setup("cluster", url: cluster.nodes[0].url)
        }
        _ = try await local.publisher.publish(JobMessage(type: "t", data: []))
        let listed = try await QueueInspector(connection: try RedisConnection(url: cluster.nodes[0].url)).queues()
        #expect(Set(listed) == [setup.queue, local.queue])
    }

    @Test("two groups on one queue each process every job")
    func fanOut() async throws {
        let setup = try await Setup()
        let billing = Deliveries(), audit = Deliveries()
        let workers = [
            setup.worker(["t": JobHandlerClosure { billing.record($0) }], group: "billing"),
            setup.worker(["t": JobHandlerClosure { audit.record($0) }], group: "audit"),
        ]
        try await running(workers[0], workers[1]) {
            _ = try await setup.publisher.publish((0..<20).map { JobMessage(type: "t", data: "\($0)") })
            #expect(await eventually { billing.count == 20 && audit.count == 20 })
        }
        #expect(Set(billing.all.map(\.id)) == Set(audit.all.map(\.id)))
    }

    @Test(
        "with thousands of jobs waiting, a worker holds at most its concurrency and read-ahead taken, plus as many acknowledging",
        arguments: [0, 20])
    func readsNoMoreThanItCanStart(readAhead: Int) async throws {
        let setup = try await Setup()
        var published = 0
        while published < 3000 {
            published += try await setup.publisher.publish((0..<500).map { JobMessage(type: "t", data: "\($0)") }).count
        }
        let seen = Deliveries()
        var mostPending: Int64 = 0
        let worker = setup.worker(["t": JobHandlerClosure { seen.record($0) }]) {
            $0.concurrency = 4
            $0.readAhead = readAhead
        }
        try await running(worker) {
            let deadline = ContinuousClock.now + .seconds(60)
            while seen.count < 3000 && ContinuousClock.now < deadline {
                mostPending = max(mostPending, (try? await setup.pendingCount()) ?? 0)  // NOGROUP until the worker starts
            }
        }
        #expect(seen.count == 3000)
        #expect(Set(seen.all.map(\.id)).count == 3000 && seen.all.allSatisfy { $0.attempt == 1 }, "each ran once")
        #expect(mostPending <= 2 * (4 + Int64(readAhead)), "the most entries pending at once was \(mostPending)")
        // Quick jobs: the worker reads ahead of its free slots.
        if readAhead > 0 { #expect(mostPending > 8, "the most entries pending at once was \(mostPending)") }
    }

    @Test("a worker whose jobs run slowly reads none ahead: it holds no job another worker could start")
    func slowJobsNotReadAhead() async throws {
        let setup = try await Setup()
        _ = try await setup.publisher.publish((0..<24).map { JobMessage(type: "t", data: "\($0)") })
        let seen = Deliveries()
        var mostPending: Int64 = 0
        let worker = setup.worker(
            [
                "t": JobHandlerClosure { job in
                    seen.record(job)
                    try await Task.sleep(for: .milliseconds(150))
                }
            ]
        ) { $0.concurrency = 2 }
        try await running(worker) {
            let deadline = ContinuousClock.now + .seconds(60)
            while seen.count < 24 && ContinuousClock.now < deadline {
                mostPending = max(mostPending, (try? await setup.pendingCount()) ?? 0)
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        #expect(seen.count == 24)
        // About 13 starts a second: under one job in the read-ahead's 50 ms.
        #expect(mostPending <= 4, "the most entries pending at once was \(mostPending)")
    }

    @Test(
        "at a stop, the jobs a worker read ahead go back to the group unrun: none stays pending, and another worker runs each once at attempt 1"
    )
    func readAheadHandedBackAtStop() async throws {
        let setup = try await Setup()
        var published = 0
        while published < 3000 {
            published += try await setup.publisher.publish((0..<500).map { JobMessage(type: "t", data: "\($0)") }).count
        }
        let first = Deliveries(), second = Deliveries()
        // Past the 2,000th job both handlers wait until the stop: the jobs read ahead by then
        // (the rate of 2,000 quick starts) stay in line.
        let held = JobSlotsTests.Gate()
        let stopping = setup.worker(
            [
                "t": JobHandlerClosure { job in
                    first.record(job)
                    if first.count > 2000 { await held.wait() }
                }
            ]
        ) {
            $0.concurrency = 2
            $0.readAhead = 200
        }
        let run = Task { try await stopping.run() }
        #expect(await eventually { first.count >= 2002 }, "both handlers wait")
        stopping.stop()
        held.open()
        try await run.value
        #expect(first.count < 3000, "stopped part-way: \(first.count) ran")
        #expect(try await setup.pendingCount() == 0, "nothing left pending on the stopped worker")
        let due = setup.keys.delayed(group: "workers").due
        #expect(
            try await setup.redis.send(RedisCommand("ZCARD", [.string(due)])).integer ?? 0 > 0,
            "jobs read ahead were handed back")
        try await running(setup.worker(["t": JobHandlerClosure { second.record($0) }])) {
            #expect(await eventually { first.count + second.count >= 3000 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        let all = first.all + second.all
        #expect(all.count == 3000 && Set(all.map(\.id)).count == 3000, "each ran once")
        #expect(all.allSatisfy { $0.attempt == 1 }, "no attempt was spent on a job handed back")
    }

    @Test("workers of one group share the jobs: each runs once")
    func sharedGroup() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let handler = JobHandlerClosure { job in
            try await Task.sleep(for: .milliseconds(5))
            seen.record(job)
        }
        try await running(setup.worker(["t": handler]), setup.worker(["t": handler])) {
            _ = try await setup.publisher.publish((0..<60).map { JobMessage(type: "t", data: "\($0)") })
            #expect(await eventually { seen.count >= 60 })
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(seen.count == 60)
        #expect(Set(seen.all.map(\.id)).count == 60)
    }

    @Test("an entry left pending by a vanished consumer is reclaimed after the lease and runs with attempt 2")
    func reclaimsFromDeadConsumer() async throws {
        let setup = try await Setup()
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "orphan"))
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        _ = try await setup.redis.send(
            RedisCommand(
                "XREADGROUP", ["GROUP", "workers", "crashed-container", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), ">"]))
        let seen = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            #expect(await eventually { seen.count == 1 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen.all.first?.attempt == 2)
    }

    @Test("a job slower than the lease, on a live worker, is not stolen and runs once")
    func slowJobKeepsItsLease() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let slow = JobHandlerClosure { job in
            seen.record(job)
            try await Task.sleep(for: .seconds(10))
        }
        // Unextended, the entry is reclaimable after 4 s, well before the job ends; extended every
        // second, it survives a worker stalled for 3 s by a loaded machine (a fresh CI machine
        // stalled past a 2 s lease at the suite's start).
        let configure = { (configuration: inout Worker.Configuration) in
            configuration.lease = .seconds(4)
            configuration.retry = RetryPolicy(maxAttempts: 3, minimumBackoff: .seconds(1), maximumBackoff: .seconds(1))
        }
        try await running(setup.worker(["t": slow], configure: configure), setup.worker(["t": slow], configure: configure)) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: ""))
            #expect(await eventually { try await setup.pendingCount() == 0 && seen.count > 0 })
        }
        #expect(seen.count == 1)
        #expect(seen.all.first?.attempt == 1)
    }

    @Test("a job reclaimed after its workers died max-attempts times is dead-lettered without running")
    func workerLost() async throws {
        let setup = try await Setup()
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: ""))
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        let read = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), ">"]))
        let id = try #require(read.array?.first?.array?[1].array?.first?.array?.first?.string)
        for _ in 0..<2 {  // two more deliveries that "crashed": the count is now 3, the maximum
            try await setup.redis.send(RedisCommand("XCLAIM", [.string(setup.keys.jobs), "workers", "ghost", "0", .string(id)]))
        }
        let seen = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            #expect(await eventually { try await setup.deadEntries().count == 1 })
        }
        #expect(seen.count == 0)
        let dead = try await setup.deadEntries()[0]
        #expect(dead.value(of: "dead_letter.error_class") == Array("worker_lost".utf8))
        #expect(dead.value(of: "dead_letter.delivery_count") == Array("4".utf8))
    }

    /// Reads one entry as a consumer that then "crashes", and returns its ID and when it was read.
    func readAsCrashedConsumer(_ setup: Setup) async throws -> (id: String, readAt: ContinuousClock.Instant) {
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        let readAt = ContinuousClock.now
        let read = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), ">"]))
        return (try #require(read.array?.first?.array?[1].array?.first?.array?.first?.string), readAt)
    }

    @Test("lease extensions that race acknowledgements report no lost lease: only a claim by another consumer is a loss")
    func noSpuriousLeaseLoss() async throws {
        let setup = try await Setup()
        let log = LogRecord()
        let seen = Deliveries()
        let worker = setup.worker(["t": JobHandlerClosure { seen.record($0) }], logger: log.logger()) {
            $0.concurrency = 64
            $0.lease = .milliseconds(200)  // an extension every 50 ms, while acknowledgements land
        }
        // One worker: no other consumer can take an entry, so any lease_lost would be false.
        try await running(worker) {
            _ = try await setup.publisher.publish((0..<5000).map { _ in JobMessage(type: "t", data: "") })
            #expect(await eventually { seen.count == 5000 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(log.messages.contains("lease_extended"), "extensions ran while jobs were acknowledged")
        #expect(log.messages.filter { $0 == "lease_lost" }.isEmpty)
    }

    @Test("a crashed worker's job comes back once its lease has run out, not before (retries alone wait a backoff)")
    func leaseExpiryWaitsTheLease() async throws {
        let setup = try await Setup()
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: ""))
        let (_, readAt) = try await readAsCrashedConsumer(setup)
        let startedAt = Mutex<ContinuousClock.Instant?>(nil)
        let worker = setup.worker(["t": JobHandlerClosure { _ in startedAt.withLock { $0 = .now } }]) {
            $0.lease = .milliseconds(1500)
            $0.retry = RetryPolicy(maxAttempts: 5, minimumBackoff: .seconds(60), maximumBackoff: .seconds(60))
        }
        try await running(worker) {
            #expect(await eventually { startedAt.withLock { $0 } != nil })
        }
        let waited = try #require(startedAt.withLock { $0 }) - readAt
        #expect(waited >= .milliseconds(1500), "the lease is 1.5 s; it came back after \(waited)")
        #expect(waited < .seconds(60), "no backoff on a lease expiry: a minute's would have held it")
    }

    @Test("a backoff longer than the lease is kept in full")
    func backoffLongerThanLease() async throws {
        let setup = try await Setup()
        let attempts = Mutex<[ContinuousClock.Instant]>([])
        let worker = setup.worker([
            "t": JobHandlerClosure { _ in
                let count = attempts.withLock {
                    $0.append(.now)
                    return $0.count
                }
                if count == 1 { throw PushBackError() }
            }
        ]) {
            $0.lease = .milliseconds(200)
            // No jitter: the default (equal) would place the retry anywhere from 0.75 s to 1.5 s.
            $0.retry = RetryPolicy(
                maxAttempts: 5, minimumBackoff: .milliseconds(1500), maximumBackoff: .milliseconds(1500), jitter: .none)
        }
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: ""))
            #expect(await eventually { attempts.withLock { $0.count } == 2 })
        }
        let times = attempts.withLock { $0 }
        try #require(times.count >= 2, "the retry came")
        #expect(times[1] - times[0] >= .milliseconds(1500), "the retry came after \(times[1] - times[0])")
    }

    @Test("an entry already running in this worker is not started a second time")
    func noSecondCopyOfARunningEntry() async {
        let slots = JobSlots(limit: 4)
        let release = AsyncStream<Void>.makeStream()
        #expect(
            slots.start(entryID: "1-0", jobID: "j") { _ in
                for await _ in release.stream {}
                return .done
            })
        #expect(!slots.start(entryID: "1-0", jobID: "j") { _ in .done }, "a reclaim of its own running entry starts nothing")
        #expect(slots.used == 1)
        release.continuation.finish()
        await slots.waitUntilIdle()
        #expect(slots.start(entryID: "1-0", jobID: "j") { _ in .done }, "once finished, a later delivery runs")
        await slots.waitUntilIdle()
    }

    @Test("a job whose acknowledgement is on its way frees its slot but stays running; such jobs are bounded too")
    func acknowledgingJobs() async throws {
        let slots = JobSlots(limit: 2)
        #expect(slots.start(entryID: "2-0", jobID: "j") { _ in .acknowledging })
        #expect(await eventually { slots.used == 0 }, "the handler returned")
        #expect(await slots.waitForFreeSlots() == 2, "the handler is done, so the next read may overlap the acknowledgement")
        #expect(slots.running["2-0"] != nil, "its lease is still extended until it is acknowledged")
        #expect(!slots.start(entryID: "2-0", jobID: "j") { _ in .done }, "and a reclaim of it starts nothing")
        #expect(slots.start(entryID: "3-0", jobID: "k") { _ in .acknowledging })
        #expect(await eventually { slots.used == 0 }, "the second handler returned")
        #expect(!slots.hasFreeSlot, "as many acknowledgements outstanding as the limit: nothing more is read")
        let waiting = Task { await slots.waitForFreeSlots() }
        slots.finishAcknowledging("2-0")
        #expect(await waiting.value == 2, "one acknowledgement landed: the read loop goes on, never with a count of 0")
        slots.finishAcknowledging("3-0")
        await slots.waitUntilIdle()
        #expect(slots.running.isEmpty)
    }

    @Test("a cancel request is forgotten with its job, however the job ends, so a later delivery starts unflagged")
    func cancelRequestForgotten() async throws {
        let slots = JobSlots(limit: 2)
        // Asked while the acknowledgement is on its way: the handler has returned already.
        #expect(slots.start(entryID: "4-0", jobID: "j") { _ in .acknowledging })
        #expect(await eventually { slots.used == 0 }, "the handler returned")
        slots.cancelOnRequest("4-0")
        #expect(slots.wasCancelledOnRequest("4-0"))
        slots.finishAcknowledging("4-0")
        #expect(!slots.wasCancelledOnRequest("4-0"))
        // Asked while running, by a handler that finishes anyway.
        let release = AsyncStream<Void>.makeStream()
        #expect(
            slots.start(entryID: "5-0", jobID: "k") { _ in
                for await _ in release.stream {}
                return .done
            })
        slots.cancelOnRequest("5-0")
        release.continuation.finish()
        await slots.waitUntilIdle()
        #expect(!slots.wasCancelledOnRequest("5-0"))
        // Asked after the job is gone: nothing to remember.
        slots.cancelOnRequest("6-0")
        #expect(!slots.wasCancelledOnRequest("6-0"))
    }

    @Test("an entry deleted while pending is cleared from the pending list; the others still run")
    func deletedWhilePending() async throws {
        let setup = try await Setup()
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "trimmed", jobID: "gone"))
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "kept", jobID: "kept"))
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        let read = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "ghost", "COUNT", "2", "STREAMS", .string(setup.keys.jobs), ">"]))
        let first = try #require(read.array?.first?.array?[1].array?.first?.array?.first?.string)
        try await setup.redis.send(RedisCommand("XDEL", [.string(setup.keys.jobs), .string(first)]))
        let seen = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen.all.map(\.id) == ["kept"])
        #expect(try await setup.deadEntries().isEmpty)
    }

    @Test("a job interrupted by shutdown is recorded as failed with its next attempt, and runs again on another worker")
    func interruptedJobIsFailed() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let stopping = setup.worker([
            "t": JobHandlerClosure { job in
                seen.record(job)
                try await Task.sleep(for: .seconds(30))
            }
        ]) { $0.shutdownGrace = .milliseconds(100) }
        let task = Task { try await stopping.run() }
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "cut-short"))
        #expect(await eventually { seen.count == 1 })
        stopping.stop()
        try await task.value
        let status = try #require(try await JobStatus.load(jobID: "cut-short", queue: setup.queue, connection: setup.redis))
        #expect(status.fields["state"] == "failed")
        #expect(status.fields["error_class"] == "interrupted")
        let recordedAt = try #require(status.fields["updated_at"].flatMap { Int64($0) })
        let next = try #require(status.fields["next_attempt_at"].flatMap { Int64($0) })
        #expect(next - recordedAt >= 3000, "at least the lease (3 s) after the interruption")
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen.all.map(\.attempt) == [1, 2])
    }

    @Test("stop() lets a running job finish and acknowledges it; nothing more is read")
    func gracefulStop() async throws {
        let setup = try await Setup()
        let started = Deliveries(), finished = Deliveries()
        let worker = setup.worker([
            "t": JobHandlerClosure { job in
                started.record(job)
                try await Task.sleep(for: .milliseconds(700))
                finished.record(job)
            }
        ]) { $0.concurrency = 1 }
        let task = Task { try await worker.run() }
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "1"))
        #expect(await eventually { started.count == 1 })
        worker.stop()
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "2"))
        try await task.value
        #expect(finished.count == 1)
        #expect(started.count == 1, "nothing is read after stop()")
        #expect(try await setup.pendingCount() == 0)
    }

    @Test("a consumer that exits cleanly holding nothing removes itself; one that holds entries stays")
    func consumerCleanup() async throws {
        let setup = try await Setup()
        let worker = setup.worker(["t": JobHandlerClosure { _ in }], consumer: "leaving-cleanly")
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: ""))
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        let consumers = try await setup.redis.send(RedisCommand("XINFO CONSUMERS", [.string(setup.keys.jobs), "workers"]))
        #expect(consumers.array?.isEmpty == true)

        _ = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "holder", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), "0"]))
        try await setup.redis.send(RedisCommand("XADD", [.string(setup.keys.jobs), "*", "type", "t"]))
        _ = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "holder", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), ">"]))
        let released = try await setup.redis.run(
            Worker.releaseConsumerScript, keys: [.string(setup.keys.jobs)], arguments: ["workers", "holder"])
        #expect(released == .integer(0))
    }

    @Test("a worker that lost its lease cannot acknowledge, extend or dead-letter the new owner's delivery")
    func zombieCannotInterfere() async throws {
        let setup = try await Setup()
        let receipt = try await setup.publisher.publish(JobMessage(type: "t", data: ""))
        let keys: [RedisArgument] = [.string(setup.keys.jobs)]
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        _ = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "zombie", "STREAMS", .string(setup.keys.jobs), ">"]))
        try await setup.redis.send(
            RedisCommand("XCLAIM", [.string(setup.keys.jobs), "workers", "new-owner", "0", .string(receipt.jobID)]))

        let statusKey = setup.keys.jobStatus(jobID: receipt.jobID)
        let ack = try await setup.redis.run(
            Worker.ackScript, keys: keys + [.string(statusKey)],
            arguments: [
                "workers", "zombie", 1_000, 60_000, 60_000, .string(setup.keys.statusIndexPrefix),
                .string(receipt.jobID), .string(receipt.jobID), 1,
                .string(receipt.jobID), 2, .string(receipt.jobID), "succeeded", 5, "", "", "", "",
            ])
        #expect(ack == .array([.bulk(Array(receipt.jobID.utf8))]), "reported as lost, not acknowledged")
        let state = try await setup.redis.send(RedisCommand("HGET", [.string(statusKey), "workers.state"]))
        #expect(state != .bulk(Array("succeeded".utf8)), "the zombie's success is not recorded for the new owner's delivery")
        let lease = try await setup.redis.run(
            Worker.leaseScript, keys: keys, arguments: ["workers", "zombie", 0, .string(receipt.jobID)])
        #expect(lease.array?.first?.array?.count == 1, "reported as another consumer's")
        let dead = try await setup.redis.run(
            Worker.deadLetterScript, keys: keys + [.string(setup.keys.deadLetter)],
            arguments: [
                "workers", "zombie", .string(receipt.jobID), 1_000, 60_000, .string(setup.keys.statusIndexPrefix),
                .string(receipt.jobID), 1, "e", "x", "", "dead_letter.error", "x",
            ])
        #expect(dead == .null)
        #expect(try await setup.pendingCount() == 1, "still pending for the new owner")
        #expect(try await setup.deadEntries().isEmpty)
    }

    @Test("a handler that returns after its entry was claimed by another consumer reports no success")
    func lostLeaseReportsNoSuccess() async throws {
        let setup = try await Setup()
        let gate = Mutex((started: false, open: false))
        let events = RecordedEvents()
        var configuration = Worker.Configuration()
        configuration.consumer = uniqueName("c")
        configuration.lease = .seconds(30)  // no extension runs while the test does its work
        let worker = Worker(
            queue: setup.queue, redis: setup.redisConfiguration,
            handlers: [
                "held": JobHandlerClosure { _ in
                    gate.withLock { $0.started = true }
                    while !gate.withLock({ $0.open }) { try await Task.sleep(for: .milliseconds(10)) }
                },
                "t": JobHandlerClosure { _ in },
            ], configuration: configuration, observer: events)
        let held = try await setup.publisher.publish(JobMessage(type: "held", data: []))
        var nextJobID = ""
        try await running(worker) {
            #expect(await eventually { gate.withLock { $0.started } })
            try await setup.redis.send(
                RedisCommand("XCLAIM", [.string(setup.keys.jobs), "workers", "new-owner", "0", .string(held.jobID)]))
            gate.withLock { $0.open = true }
            // Acknowledgements flush in order: once the next job's success is heard, the held one's ack has landed.
            nextJobID = try await setup.publisher.publish(JobMessage(type: "t", data: [])).jobID
            #expect(await eventually { events.all.contains { $0.jobID == nextJobID } })
        }
        #expect(events.all.map(\.jobID) == [nextJobID], "no success for the held job, whose entry another consumer owns")
        #expect(try await setup.pendingCount() == 1, "still pending, for the new owner")
    }

    @Test("if the group disappears mid-run (a flush), the worker recreates it and goes on")
    func groupRecreated() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "before"))
            #expect(await eventually { seen.count == 1 })
            try await setup.redis.send(RedisCommand("DEL", [.string(setup.keys.jobs)]))
            try await Task.sleep(for: .milliseconds(300))
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "after"))
            #expect(await eventually { seen.count == 2 })
        }
    }

    @Test(
        "a delivery whose entry another worker took and parked as busy while its handler ran still marks the key done and frees the lock, so the key never runs twice"
    )
    func completionAfterLostEntryMarksKey() async throws {
        let setup = try await Setup()
        let entry = try #require(
            try await setup.redis.send(
                RedisCommand("XADD", [.string(setup.keys.jobs), "*", "type", "t", "idempotency_key", "k"])
            )
            .string)
        try await setup.redis.send(RedisCommand("XGROUP", ["CREATE", .string(setup.keys.jobs), "workers", "0"]))
        try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "a", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), ">"]))
        let lock = setup.keys.inFlightLock(idempotencyKey: "k"), done = setup.keys.completed(idempotencyKey: "k")
        try await setup.redis.send(RedisCommand("SET", [.string(lock), "token-a"]))
        // Another worker reclaimed the entry, found the key busy and parked it: acknowledged here.
        try await setup.redis.send(RedisCommand("XACK", [.string(setup.keys.jobs), "workers", .string(entry)]))
        let reply = try await setup.redis.run(
            Worker.completeScript, keys: [.string(setup.keys.jobs), .string(done), .string(lock)],
            arguments: ["workers", "a", .string(entry), 86_400_000, "job-k", "token-a"])
        #expect(reply.integer == 0, "the entry is not this delivery's to acknowledge")
        #expect(try await setup.redis.send(RedisCommand("GET", [.string(done)])).string == "job-k")
        #expect(try await setup.redis.send(RedisCommand("EXISTS", [.string(lock)])) == .integer(0))
        // A delivery that no longer holds the lock marks nothing.
        try await setup.redis.send(RedisCommand("DEL", [.string(done)]))
        try await setup.redis.send(RedisCommand("SET", [.string(lock), "token-b"]))
        _ = try await setup.redis.run(
            Worker.completeScript, keys: [.string(setup.keys.jobs), .string(done), .string(lock)],
            arguments: ["workers", "a", .string(entry), 86_400_000, "job-k", "token-a"])
        #expect(try await setup.redis.send(RedisCommand("EXISTS", [.string(done)])) == .integer(0))
    }

    @Test("two entries with one idempotency key, on two workers: the handler runs once, never concurrently")
    func idempotencyGuard() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let overlap = OverlapDetector()
        let handler = JobHandlerClosure { job in
            overlap.enter()
            seen.record(job)
            try await Task.sleep(for: .milliseconds(300))
            overlap.leave()
        }
        // Written with XADD, so publish dedup does not apply: the worker's guard must.
        for _ in 0..<2 {
            try await setup.redis.send(
                RedisCommand("XADD", [.string(setup.keys.jobs), "*", "type", "t", "idempotency_key", "order-7"]))
        }
        let done = setup.keys.completed(idempotencyKey: "order-7")
        try await running(setup.worker(["t": handler]), setup.worker(["t": handler])) {
            // Done: the key marked, nothing pending, nothing parked (a busy delivery waits there).
            #expect(
                await eventually(.seconds(30)) {
                    let parked = try await setup.redis.send(
                        RedisCommand("ZCARD", [.string(setup.keys.delayed(group: "workers").due)]))
                    let marked = try await setup.redis.send(RedisCommand("EXISTS", [.string(done)]))
                    let pending = try await setup.pendingCount()
                    return marked == .integer(1) && pending == 0 && parked == .integer(0)
                })
        }
        #expect(seen.count == 1)
        #expect(!overlap.sawOverlap)
        let ttl = try await setup.redis.send(RedisCommand("PTTL", [.string(done)])).integer ?? 0
        #expect(ttl > 23 * 3600 * 1000, "the key is remembered for 24 h")
        #expect(
            try await setup.redis.send(RedisCommand("EXISTS", [.string(setup.keys.inFlightLock(idempotencyKey: "order-7"))]))
                == .integer(0))
    }

    @Test("a job whose key already completed is acknowledged without running; a first publish of a key still runs")
    func idempotentSkip() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        try await setup.redis.send(
            RedisCommand("SET", [.string(setup.keys.completed(idempotencyKey: "done-before")), "earlier-job"]))
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            _ = try await setup.publisher.publish([
                JobMessage(type: "t", data: "", jobID: "skipped", idempotencyKey: "done-before"),
                JobMessage(type: "t", data: "", jobID: "first-time", idempotencyKey: "new-key"),
            ])
            #expect(await eventually { try await setup.pendingCount() == 0 && seen.count == 1 })
        }
        #expect(seen.all.map(\.id) == ["first-time"])
        #expect(try await setup.deadEntries().isEmpty)
    }

    @Test(
        "a job's status goes running, with reported progress, to succeeded, and expires after that; with an idempotency key too",
        arguments: [nil, "render-doc-1"])
    func statusLifecycle(idempotencyKey: String?) async throws {
        let setup = try await Setup()
        // The handler stays at 40% until the test has seen it there, however slow the machine.
        let progressSeen = Mutex(false)
        let worker = setup.worker([
            "render": JobHandlerClosure { job in
                await job.reportProgress(40, stage: "rendering")
                while !progressSeen.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
                try await Task.sleep(for: .milliseconds(400))
            }
        ]) {
            // A keyed job's lock lives two leases and 2 s past its last renewal: with a 1 s test
            // lease, a fresh CI machine starting the suite stalled past it and the lock's fence
            // stopped the handler (attempt 2). This test is about status, not stalls.
            $0.lease = .seconds(5)
        }
        let status = { () async throws -> [String: String] in
            (try await JobStatus.load(jobID: "doc-1", queue: setup.queue, connection: setup.redis))?.fields ?? [:]
        }
        try await running(worker) {
            _ = try await setup.publisher.publish(
                JobMessage(type: "render", data: "", jobID: "doc-1", idempotencyKey: idempotencyKey))
            #expect(await eventually { try await status()["progress"] == "40" })
            let midway = try await status()
            #expect(midway["state"] == "running")
            #expect(midway["stage"] == "rendering")
            progressSeen.withLock { $0 = true }
            #expect(await eventually { try await status()["state"] == "succeeded" })
        }
        let final = try await status()
        #expect(final["attempts"] == "1")
        #expect(final["progress"] == "100")
        #expect(final["type"] == "render")
        let started = try #require(final["started_at"].flatMap { Int64($0) })
        let finished = try #require(final["finished_at"].flatMap { Int64($0) })
        #expect(finished - started >= 400)
        let ttl = try await setup.redis.send(RedisCommand("PTTL", [.string(setup.keys.jobStatus(jobID: "doc-1"))])).integer ?? 0
        #expect(ttl > 3500 * 1000 && ttl <= 3600 * 1000, "expires an hour after it succeeded (keepSucceeded)")
    }

    @Test(
        "neither a job's running record nor progress reported just before it returns lands after its success: the status ends succeeded and expires",
        arguments: [false, true])
    func statusEndsSucceeded(reportsProgress: Bool) async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        // No-op handlers: a job's acknowledgement often goes to Redis in the same flush as its
        // own running record, the ordering this proves.
        let worker = setup.worker([
            "t": JobHandlerClosure { job in
                if reportsProgress { await job.reportProgress(90, stage: "finishing") }
                seen.record(job)
            }
        ]) { $0.concurrency = 32 }
        let ids = (0..<300).map { "p-\($0)" }
        try await running(worker) {
            _ = try await setup.publisher.publish(ids.map { JobMessage(type: "t", data: "", jobID: $0) })
            // 300 jobs: generous on a 2-core machine the whole suite loads.
            #expect(await eventually(.seconds(60)) { seen.count == 300 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        var wrong: [String] = []
        for id in ids {
            let key = setup.keys.jobStatus(jobID: id)
            let fields = try await JobStatus.load(jobID: id, queue: setup.queue, connection: setup.redis)?.fields ?? [:]
            let ttl = try await setup.redis.send(RedisCommand("PTTL", [.string(key)])).integer ?? 0
            if fields["state"] != "succeeded" || fields["progress"] != "100" || ttl <= 0 { wrong.append(id) }
        }
        #expect(wrong.isEmpty, "\(wrong.count) statuses were overwritten after success, e.g. \(wrong.prefix(3))")
    }

    @Test(
        "a job that fails at once ends dead (or retrying), never overwritten by its own running record: one ordered write path",
        arguments: [true, false])
    func failureNotOverwrittenByRunning(permanent: Bool) async throws {
        let setup = try await Setup()
        let worker = setup.worker([
            "t": JobHandlerClosure { _ in
                if permanent { throw PermanentJobError("no") }
                throw PushBackError()
            }
        ]) {
            $0.concurrency = 32
            // One attempt's outcome is all this looks at: the retry comes long after the checks.
            $0.retry = RetryPolicy(maxAttempts: 2, minimumBackoff: .seconds(60), maximumBackoff: .seconds(60))
        }
        let ids = (0..<200).map { "f-\($0)" }
        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        let final: JobState = permanent ? .dead : .retrying
        try await running(worker) {
            _ = try await setup.publisher.publish(ids.map { JobMessage(type: "t", data: "", jobID: $0) })
            #expect(await eventually(.seconds(60)) { try await index.counts(group: "workers")[final] == 200 })
            var wrong: [String] = []
            for id in ids {
                let status = try await JobStatus.load(jobID: id, queue: setup.queue, connection: setup.redis)
                let ttl = try await setup.redis.send(RedisCommand("PTTL", [.string(setup.keys.jobStatus(jobID: id))])).integer
                if status?.state != final || (permanent && (ttl ?? 0) <= 0) { wrong.append(id) }
            }
            #expect(wrong.isEmpty, "\(wrong.count) statuses were overwritten after the outcome, e.g. \(wrong.prefix(3))")
            #expect(try await index.counts(group: "workers")[.running] == 0)
        }
    }

    @Test("a failing job's status shows retrying with its error and next attempt time, then dead")
    func statusOfFailingJob() async throws {
        let setup = try await Setup()
        let worker = setup.worker(["t": JobHandlerClosure { _ in throw PushBackError() }]) {
            // The job shows `retrying` for the whole backoff: long enough for a loaded machine's polls to see it.
            $0.retry = RetryPolicy(maxAttempts: 2, minimumBackoff: .seconds(3), maximumBackoff: .seconds(3))
        }
        let status = { () async throws -> [String: String] in
            (try await JobStatus.load(jobID: "j-9", queue: setup.queue, connection: setup.redis))?.fields ?? [:]
        }
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "j-9"))
            #expect(await eventually { try await status()["state"] == "retrying" })
            let retrying = try await status()
            #expect(retrying["last_error"] == "pushed back by the test handler")
            #expect(retrying["error_class"] == "PushBackError")
            let next = try #require(retrying["next_attempt_at"].flatMap { Int64($0) })
            let updated = try #require(retrying["updated_at"].flatMap { Int64($0) })
            // The backoff after the failure (equal jitter: half to all of 3 s), whenever the poll ran.
            #expect((1500...3000).contains(next - updated), "next attempt \(next - updated) ms after the failure")
            #expect(await eventually { try await status()["state"] == "dead" })
        }
        #expect(try await status()["attempts"] == "2")
    }

    @Test("with status recording off, the worker writes nothing to the status hash")
    func statusOff() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }]) { $0.recordsStatus = false }) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "quiet"))
            #expect(await eventually { seen.count == 1 })
        }
        let status = try await JobStatus.load(jobID: "quiet", queue: setup.queue, connection: setup.redis)
        #expect(status?.state == .queued, "as the publisher left it")
        #expect(status?.fields["started_at"] == nil)
    }

    @Test(
        "a job cancelled before it starts is acknowledged as cancelled without running, in every group, status kept or not",
        arguments: [true, false])
    func cancelBeforeStart(recordsStatus: Bool) async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "not-wanted"))
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "wanted"))
        #expect(
            try await JobStatus.requestCancellation(jobID: "not-wanted", queue: setup.queue, connection: setup.redis) == .queued
        )
        let handler = JobHandlerClosure { seen.record($0) }
        try await running(
            setup.worker(["t": handler]) { $0.recordsStatus = recordsStatus },
            setup.worker(["t": handler], group: "audit") { $0.recordsStatus = recordsStatus }
        ) {
            #expect(await eventually { seen.count == 2 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
            #expect(await eventually { try await setup.pendingCount(group: "audit") == 0 })
        }
        #expect(seen.all.map(\.id) == ["wanted", "wanted"], "each group ran the other job, neither the cancelled one")
        let state = try await JobStatus.load(jobID: "not-wanted", queue: setup.queue, connection: setup.redis)?.state
        #expect(state == .queued || recordsStatus, "a worker that keeps no status writes none")
        #expect(state == .cancelled || !recordsStatus)
    }

    @Test(
        "a job whose id is its entry ID has no queued status, yet is found queued and cancelled before it starts; one every group finished is left alone"
    )
    func cancelBeforeStartWithoutQueuedRecord() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let unwanted = try await setup.publisher.publish(JobMessage(type: "t", data: "unwanted"))
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "wanted"))
        let statusKey = setup.keys.jobStatus(jobID: unwanted.jobID)
        #expect(try await setup.redis.send(RedisCommand("EXISTS", [.string(statusKey)])).integer == 0)
        #expect(
            try await JobStatus.requestCancellation(jobID: unwanted.jobID, queue: setup.queue, connection: setup.redis)
                == .queued)
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            #expect(await eventually { seen.count == 1 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen.all.map(\.id) != [unwanted.jobID], "the other job ran, not the cancelled one")
        #expect(
            try await JobStatus.load(jobID: unwanted.jobID, queue: setup.queue, connection: setup.redis)?.state == .cancelled)
        // Its ids are written with the cancel, as a record at its start would have (a retry
        // finds its entry by them).
        let hash = try await setup.redis.send(RedisCommand("HMGET", [.string(statusKey), "job_id", "entry_id"]))
        #expect(hash.array?.map(\.string) == [unwanted.jobID, unwanted.entryID])
        let finished = try #require(seen.all.first?.id)
        #expect(
            try await JobStatus.requestCancellation(jobID: finished, queue: setup.queue, connection: setup.redis)
                == .succeeded, "its status says it is done")
        #expect(
            try await JobStatus.requestCancellation(jobID: "1-1", queue: setup.queue, connection: setup.redis) == nil,
            "no such entry: nothing recorded")
    }

    @Test(
        "a job of a type no worker handles, cancelled before it is delivered, ends cancelled, not in the dead-letter stream")
    func cancelBeforeStartOfUnknownType() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        _ = try await setup.publisher.publish(JobMessage(type: "nobody-handles", data: "", jobID: "orphan"))
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "wanted"))
        #expect(
            try await JobStatus.requestCancellation(jobID: "orphan", queue: setup.queue, connection: setup.redis) == .queued)
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            #expect(await eventually { seen.count == 1 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(try await JobStatus.load(jobID: "orphan", queue: setup.queue, connection: setup.redis)?.state == .cancelled)
        #expect(try await setup.deadEntries().isEmpty, "nothing to act on: it was cancelled")
    }

    @Test("a running job that is cancelled sees cancellation, and is acknowledged as cancelled, not retried")
    func cancelWhileRunning() async throws {
        let setup = try await Setup()
        let seen = Deliveries(), sawCancellation = Deliveries()
        let worker = setup.worker([
            "t": JobHandlerClosure { job in
                seen.record(job)
                do {
                    try await Task.sleep(for: .seconds(30))
                } catch {
                    sawCancellation.record(job)
                    throw error
                }
            }
        ])
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "long-export"))
            #expect(await eventually { seen.count == 1 })
            // The running record lands with the worker's next write flush, just after the handler starts.
            #expect(
                await eventually {
                    try await JobStatus.load(jobID: "long-export", queue: setup.queue, connection: setup.redis)?.state
                        == .running
                })
            #expect(
                try await JobStatus.requestCancellation(jobID: "long-export", queue: setup.queue, connection: setup.redis)
                    == .running)
            #expect(await eventually { sawCancellation.count == 1 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen.count == 1, "not retried")
        #expect(try await JobStatus.load(jobID: "long-export", queue: setup.queue, connection: setup.redis)?.state == .cancelled)
        #expect(
            try await JobStatus.requestCancellation(jobID: "long-export", queue: setup.queue, connection: setup.redis)
                == .cancelled)
    }

    @Test("invalid settings are refused before anything is read")
    func invalidConfiguration() async throws {
        let setup = try await Setup()
        let worker = setup.worker([:]) { $0.concurrency = 0 }
        await #expect(throws: FerryError.self) { try await worker.run() }
    }
}

struct PushBackError: Error, CustomStringConvertible {
    var description: String { "pushed back by the test handler" }
}

extension TestQueue {
    init() async throws { try await self.init("work") }

    func worker(
        _ handlers: [String: any JobHandler], group: String = "workers", consumer: String = uniqueName("c"),
        logger: Logger = Logger(label: "ferry.worker"), configure: (inout Worker.Configuration) -> Void = { _ in }
    ) -> Worker {
        var configuration = Worker.Configuration()
        configuration.group = group
        configuration.consumer = consumer
        // Long enough that lease extensions keep up on a machine loaded by the whole suite: at
        // 1 s, a stall of the 2-core CI machine let a second worker reclaim running jobs.
        configuration.lease = .seconds(3)
        configuration.retry = RetryPolicy(
            maxAttempts: 3, minimumBackoff: .milliseconds(50), maximumBackoff: .milliseconds(100))
        configuration.shutdownGrace = .seconds(5)
        configure(&configuration)
        return Worker(
            queue: queue, redis: redisConfiguration, handlers: handlers, configuration: configuration, logger: logger)
    }
}

extension WorkerTests {
    @Test(
        "a cancelled job retried runs again, once, in the group that cancelled it only; a running or succeeded job is not retried; a trimmed one says so"
    )
    func retryCancelledJob() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let handler = JobHandlerClosure { seen.record($0) }
        // The audit group runs the job first; then it is cancelled before the workers group starts it.
        try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create("workers")
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "export"))
        try await running(setup.worker(["t": handler], group: "audit")) {
            #expect(await eventually { seen.count == 1 })
            #expect(await eventually { try await setup.pendingCount(group: "audit") == 0 })
        }
        #expect(
            try await JobStatus.requestCancellation(jobID: "export", queue: setup.queue, connection: setup.redis) == .queued)
        try await running(setup.worker(["t": handler])) {
            #expect(
                await eventually {
                    try await JobStatus.load(jobID: "export", queue: setup.queue, connection: setup.redis)?.state == .cancelled
                })
        }
        #expect(seen.count == 1, "the workers group acknowledged it unrun")
        let retry = try await JobStatus.retry(jobID: "export", queue: setup.queue, connection: setup.redis)
        #expect(retry.requeued.map(\.group) == ["workers"] && retry.requeued.first?.from == .cancelled, "\(retry)")
        #expect(retry.refused == ["audit": "succeeded"])
        #expect(try await JobStatus.load(jobID: "export", queue: setup.queue, connection: setup.redis)?.state == .queued)
        let again = try await JobStatus.retry(jobID: "export", queue: setup.queue, connection: setup.redis)
        #expect(again.requeued.isEmpty && again.refused["workers"] == "queued", "retried once only: \(again)")
        try await running(setup.worker(["t": handler]), setup.worker(["t": handler], group: "audit")) {
            #expect(await eventually { seen.count == 2 })
            #expect(
                await eventually {
                    try await JobStatus.load(jobID: "export", queue: setup.queue, connection: setup.redis)?.state == .succeeded
                })
            #expect(await eventually { try await setup.pendingCount(group: "audit") == 0 })
        }
        #expect(seen.count == 2, "audit, which had run it, acknowledged the new entry unrun")
        let status = try #require(try await JobStatus.load(jobID: "export", queue: setup.queue, connection: setup.redis))
        #expect(status.fields["cancel_requested"] == nil && status.fields["redriven_at"] != nil, "\(status.fields)")

        // Its entry trimmed: nothing to run again, and it says why.
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "gone"))
        _ = try await JobStatus.requestCancellation(jobID: "gone", queue: setup.queue, connection: setup.redis)
        try await running(setup.worker(["t": handler]), setup.worker(["t": handler], group: "audit")) {
            #expect(
                await eventually {
                    try await JobStatus.load(jobID: "gone", queue: setup.queue, connection: setup.redis)?.state == .cancelled
                })
        }
        let entryID = try #require(
            try await setup.redis.send(RedisCommand("HGET", [.string(setup.keys.jobStatus(jobID: "gone")), "entry_id"])).string)
        _ = try await setup.redis.send(RedisCommand("XDEL", [.string(setup.keys.jobs), .string(entryID)]))
        let gone = try await JobStatus.retry(jobID: "gone", queue: setup.queue, connection: setup.redis)
        #expect(gone.requeued.isEmpty && gone.refused["workers"]?.contains("no longer in the stream") == true, "\(gone)")
        #expect(try await JobStatus.load(jobID: "gone", queue: setup.queue, connection: setup.redis)?.state == .cancelled)
    }
}
