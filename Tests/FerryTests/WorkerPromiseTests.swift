import FerryRedis
import FerryTestSupport
import Foundation
import Logging
import Synchronization
import Testing

@testable import Ferry

/// A failure whose description ends with the line that says what went wrong, after pages of output.
struct LongFailure: Error, CustomStringConvertible {
    var description: String { String(repeating: "progress line\n", count: 1000) + "FINAL: the input was rejected" }
}

// Promises the README makes, each checked where it broke before (issue 11).
extension WorkerTests {
    @Test("a long failure keeps its end (the last line) in the dead letter and the status, within 4 KiB")
    func longFailureKeepsItsEnd() async throws {
        let setup = try await Setup()
        let worker = setup.worker(["t": JobHandlerClosure { _ in throw LongFailure() }]) { $0.retry.maxAttempts = 1 }
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "long-1"))
            #expect(await eventually { try await setup.deadEntries().count == 1 })
        }
        let dead = try #require(try await setup.deadEntries().first)
        let reason = String(decoding: dead.value(of: "dead_letter.error") ?? [], as: UTF8.self)
        #expect(reason.hasSuffix("FINAL: the input was rejected"))
        #expect(reason.count <= FailureText.storedLimit)
        let status = try await setup.redis.send(
            RedisCommand("HGET", [.string(setup.keys.jobStatus(jobID: "long-1")), "workers.last_error"]))
        #expect(status.string?.hasSuffix("FINAL: the input was rejected") == true)
    }
}

extension WorkerTests {
    @Test("a worker cut off from Redis stops its keyed job before its lock expires: the reclaiming worker never runs beside it")
    func frozenWorkerKeyedJobNeverOverlaps() async throws {
        let setup = try await Setup()
        let targetPort = try #require(URLComponents(string: setup.url)?.port)
        let proxy = try await FreezableProxy(targetPort: targetPort)
        let overlap = OverlapDetector()
        let runs = Deliveries()
        let frozenLog = LogRecord()
        let handler = JobHandlerClosure { job in
            runs.record(job)
            overlap.enter()
            defer { overlap.leave() }
            // Runs far past the lease unless stopped; the second run returns at once.
            if job.deliveryAttempt == 1 { try await Task.sleep(for: .seconds(20)) }
        }
        var cutOff = setup.worker(["k": handler], logger: frozenLog.logger()) { $0.lease = .seconds(2) }
        cutOff = Worker(
            queue: setup.queue, redis: try RedisConfiguration(url: proxy.url), handlers: ["k": handler],
            configuration: cutOff.configuration, logger: frozenLog.logger())
        let healthy = setup.worker(["k": handler]) { $0.lease = .seconds(2) }
        let cutOffTask = Task { try await cutOff.run() }
        defer { Task { await proxy.stop() } }
        _ = try await setup.publisher.publish(JobMessage(type: "k", data: "", idempotencyKey: "only-one-at-a-time"))
        #expect(await eventually { runs.count == 1 }, "the first worker started the job")
        proxy.freeze()
        try await running(healthy) {
            #expect(await eventually(.seconds(30)) { try await setup.pendingCount() == 0 }, "the job ran to its end again")
        }
        #expect(!overlap.sawOverlap, "two deliveries of one key ran at the same time")
        #expect(runs.count == 2)
        proxy.thaw()
        cutOff.stop()
        try await cutOffTask.value
        #expect(frozenLog.messages.contains { $0.hasPrefix("lease_lost: the idempotency lock") })
        #expect(!frozenLog.messages.contains("job_completed"), "the cut-off worker never acknowledged the job")
    }
}

extension WorkerTests {
    @Test(
        "a group destroyed while workers run is made again after the last entry its worker read, with a warning: handled jobs do not run again"
    )
    func destroyedGroupIsNotReplayed() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let log = LogRecord()
        let worker = setup.worker(["t": JobHandlerClosure { seen.record($0) }], logger: log.logger())
        try await running(worker) {
            _ = try await setup.publisher.publish((0..<50).map { JobMessage(type: "t", data: "\($0)") })
            #expect(await eventually { seen.count == 50 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
            try await setup.redis.send(RedisCommand("XGROUP", ["DESTROY", .string(setup.keys.jobs), "workers"]))
            #expect(await eventually { try await setup.pendingCount() == 0 }, "the worker made the group again")
            let late = try await setup.publisher.publish(JobMessage(type: "t", data: "late", jobID: "late-1"))
            #expect(await eventually { seen.all.contains { $0.id == late.jobID } })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen.count == 51, "only the job published after the group was made again ran")
        #expect(log.messages.contains { $0.hasPrefix("group_recreated: ") && $0.contains("ferry group seek") })
    }

    @Test(
        "a group that disappears with an emptied stream (a flush) is made again at its start: nothing published after is missed")
    func flushedStreamGroupStartsAtZero() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let worker = setup.worker(["t": JobHandlerClosure { seen.record($0) }])
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "first"))
            #expect(await eventually { seen.count == 1 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
            try await setup.redis.send(RedisCommand("DEL", [.string(setup.keys.jobs)]))
            // Published before the worker notices: the group must be made where it sees this.
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "after the flush"))
            #expect(await eventually { seen.count == 2 })
        }
    }
}

extension WorkerTests {
    @Test("while Redis refuses acknowledgements, a worker takes no new jobs and re-runs none; the acks land once allowed again")
    func refusedAcknowledgementsPauseReads() async throws {
        let setup = try await Setup()
        let user = uniqueName("acker"), password = "pw-\(user)"
        try await setup.redis.send(
            RedisCommand("ACL", ["SETUSER", .string(user), "on", .string(">" + password), "~*", "&*", "+@all"]))
        defer { Task { _ = try? await setup.redis.send(RedisCommand("ACL", ["DELUSER", .string(user)])) } }
        let port = try #require(URLComponents(string: setup.url)?.port)
        let runs = Deliveries()
        let log = LogRecord()
        var worker = setup.worker(["t": JobHandlerClosure { runs.record($0) }]) { $0.concurrency = 4 }
        worker = Worker(
            queue: setup.queue, redis: try RedisConfiguration(url: "redis://\(user):\(password)@127.0.0.1:\(port)"),
            handlers: ["t": JobHandlerClosure { runs.record($0) }], configuration: worker.configuration, logger: log.logger())
        try await running(worker) {
            // XACK refused, as after an ACL change: ack.lua fails; reads and claims still work.
            try await setup.redis.send(RedisCommand("ACL", ["SETUSER", .string(user), "-xack"]))
            _ = try await setup.publisher.publish((0..<3).map { JobMessage(type: "t", data: "\($0)") })
            #expect(await eventually { runs.count == 3 })
            #expect(await eventually { log.messages.contains { $0.hasPrefix("reads_paused") } })
            let late = try await setup.publisher.publish(JobMessage(type: "t", data: "late", jobID: "late"))
            // The held jobs' leases extended twelve times, every quarter lease: three leases have
            // passed, after each of which the jobs used to run again (and the late one be read).
            #expect(await eventually(.seconds(30)) { log.messages.filter { $0 == "lease_extended" }.count >= 12 })
            #expect(runs.count == 3, "each job ran once; no new job was taken while acks failed")
            try await setup.redis.send(RedisCommand("ACL", ["SETUSER", .string(user), "+xack"]))
            #expect(await eventually { runs.all.contains { $0.id == late.jobID } })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(log.messages.contains { $0.hasPrefix("reads_resumed") })
        #expect(Set(runs.all.map(\.id)).count == 4 && runs.count == 4, "every job ran exactly once")
    }
}

extension WorkerTests {
    @Test("an entry deleted (XDEL) while its job runs is recorded: status deleted, a warning with the job id, never lease_lost")
    func entryDeletedWhileRunning() async throws {
        let setup = try await Setup()
        let gate = Mutex((started: false, open: false))
        let log = LogRecord()
        let worker = setup.worker(
            [
                "t": JobHandlerClosure { _ in
                    gate.withLock { $0.started = true }
                    while !gate.withLock({ $0.open }) { try await Task.sleep(for: .milliseconds(10)) }
                }
            ], logger: log.logger())
        let receipt = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "erased-1"))
        try await running(worker) {
            #expect(await eventually { gate.withLock { $0.started } }, "the job was running")
            try await setup.redis.send(RedisCommand("XDEL", [.string(setup.keys.jobs), .string(receipt.entryID ?? "")]))
            let statusKey = setup.keys.jobStatus(jobID: "erased-1")
            #expect(
                await eventually {
                    try await setup.redis.send(RedisCommand("HGET", [.string(statusKey), "workers.state"])).string == "deleted"
                })
            gate.withLock { $0.open = true }
            #expect(await eventually { log.messages.contains { $0.hasPrefix("the handler finished; its entry was deleted") } })
        }
        #expect(log.messages.contains { $0.hasPrefix("entry_deleted: the entry was deleted") })
        #expect(!log.messages.contains { $0.hasPrefix("lease_lost") })
        #expect(try await setup.pendingCount() == 0)
    }

    @Test("a pending entry deleted before a worker reclaims it is recorded as deleted, with a warning")
    func pendingEntryDeletedIsRecorded() async throws {
        let setup = try await Setup()
        let receipt = try await setup.publisher.publish(JobMessage(type: "t", data: "trimmed"))
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        _ = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), ">"]))
        try await setup.redis.send(RedisCommand("XDEL", [.string(setup.keys.jobs), .string(receipt.jobID)]))
        let log = LogRecord()
        try await running(setup.worker(["t": JobHandlerClosure { _ in }], logger: log.logger())) {
            #expect(await eventually { try await setup.pendingCount() == 0 })
            #expect(await eventually { log.messages.contains { $0.hasPrefix("entry_deleted: a pending entry") } })
        }
        let state = try await setup.redis.send(
            RedisCommand("HGET", [.string(setup.keys.jobStatus(jobID: receipt.jobID)), "workers.state"]))
        #expect(state.string == "deleted", "the job's id is its entry ID: its status says what happened")
    }
}

extension WorkerTests {
    @Test(
        "a live worker deletes consumers idle past the limit that hold nothing (left by kill -9), never one with pending entries")
    func idleConsumersArePruned() async throws {
        let setup = try await Setup()
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "held by the ghost"))
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        _ = try await setup.redis.send(
            RedisCommand(
                "XREADGROUP", ["GROUP", "workers", "holding-ghost", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), ">"]))
        try await setup.redis.send(
            RedisCommand("XGROUP", ["CREATECONSUMER", .string(setup.keys.jobs), "workers", "empty-ghost"]))
        func consumers() async throws -> Set<String> {
            let reply = try await setup.redis.send(RedisCommand("XINFO", ["CONSUMERS", .string(setup.keys.jobs), "workers"]))
            return Set((reply.array ?? []).compactMap { $0.array?[1].string })
        }
        #expect(try await consumers() == ["holding-ghost", "empty-ghost"])
        let worker = setup.worker(["t": JobHandlerClosure { _ in try await Task.sleep(for: .seconds(30)) }]) {
            $0.pruneIdleConsumersAfter = .seconds(1)
            $0.lease = .seconds(60)  // the ghost keeps its entry for this test
        }
        try await running(worker) {
            #expect(await eventually { try await !consumers().contains("empty-ghost") })
        }
        #expect(try await consumers().contains("holding-ghost"), "a consumer with a pending entry is kept")
    }
}

extension WorkerTests {
    @Test("reclaimed and lease_extended lines name the job id; a job's lines carry its traceparent")
    func logLinesNameTheJob() async throws {
        let setup = try await Setup()
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        var message = JobMessage(type: "t", data: "", jobID: "left-by-a-crash")
        message.traceparent = traceparent
        _ = try await setup.publisher.publish(message)
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        _ = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "crashed", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), ">"]))
        let log = LogRecord()
        let release = Mutex(false)
        let worker = setup.worker(
            [
                "t": JobHandlerClosure { _ in
                    while !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
                }
            ], logger: log.logger())
        try await running(worker) {
            #expect(await eventually { log.entries.contains { $0.message == "lease_extended" } })
            release.withLock { $0 = true }
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        let reclaimed = try #require(log.entries.first { $0.message == "reclaimed" })
        #expect(reclaimed.metadata["ferry.job_id"] == "left-by-a-crash")
        let extended = try #require(log.entries.first { $0.message == "lease_extended" })
        #expect(extended.metadata["ferry.job_ids"]?.contains("left-by-a-crash") == true, "\(extended.metadata)")
        let started = try #require(log.entries.first { $0.message == "job_started" })
        #expect(started.metadata["trace.traceparent"] == traceparent)
    }
}

extension WorkerTests {
    @Test("the status says how long the last attempt ran (processing_ms) and whether another attempt will come (retryable)")
    func statusHasRetryGuidance() async throws {
        let setup = try await Setup()
        let worker = setup.worker(
            [
                "flaky": JobHandlerClosure { job in
                    try await Task.sleep(for: .milliseconds(60))
                    if job.deliveryAttempt == 1 { throw PushBackError() }
                },
                "doomed": JobHandlerClosure { _ in throw PushBackError() },
            ]) { $0.retry = RetryPolicy(maxAttempts: 2, minimumBackoff: .seconds(3), maximumBackoff: .seconds(3)) }
        func field(_ job: String, _ name: String) async throws -> String? {
            try await setup.redis.send(
                RedisCommand("HGET", [.string(setup.keys.jobStatus(jobID: job)), .string("workers." + name)])
            ).string
        }
        try await running(worker) {
            _ = try await setup.publisher.publish([
                JobMessage(type: "flaky", data: "", jobID: "flaky-1"), JobMessage(type: "doomed", data: "", jobID: "doomed-1"),
            ])
            // Held in retrying by the 3 s backoff: another attempt will come.
            #expect(await eventually { try await field("flaky-1", "state") == "retrying" })
            #expect(try await field("flaky-1", "retryable") == "1")
            #expect(try await field("flaky-1", "processing_ms").flatMap { Int($0) } ?? 0 >= 60)
            #expect(await eventually(.seconds(20)) { try await field("flaky-1", "state") == "succeeded" })
            #expect(try await field("flaky-1", "retryable") == "0")
            #expect(try await field("flaky-1", "processing_ms").flatMap { Int($0) } ?? 0 >= 60)
            #expect(await eventually(.seconds(20)) { try await field("doomed-1", "state") == "dead" })
            #expect(try await field("doomed-1", "retryable") == "0")
        }
    }
}

/// Lines written by the middleware and handlers of one test, in order.
final class TraceLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

/// Records what passes through it, under a name, and can stop a job before its handler.
struct TracingMiddleware: JobMiddleware {
    let name: String
    let trace: TraceLines
    let skip: @Sendable (Job) -> Bool
    var refuse: @Sendable (Job) -> Bool = { _ in false }

    func handle(_ job: Job, next: @Sendable (Job) async throws -> Void) async throws {
        trace.append("\(name) before \(job.id)")
        if skip(job) { return }
        if refuse(job) { throw PermanentJobError("refused by \(name)") }
        try await next(job)
        trace.append("\(name) after \(job.id)")
    }
}

extension WorkerTests {
    @Test("middleware runs around every handler, the first outermost; one may skip the handler, and its error fails the job")
    func middlewareWrapsHandlers() async throws {
        let setup = try await Setup()
        let trace = TraceLines()
        let seen = Deliveries()
        var configuration = Worker.Configuration()
        configuration.consumer = uniqueName("c")
        configuration.retry = RetryPolicy(maxAttempts: 1)
        let worker = Worker(
            queue: setup.queue, redis: setup.redisConfiguration,
            handlers: [
                "t": JobHandlerClosure { job in
                    trace.append("handler \(job.id)")
                    seen.record(job)
                }
            ], configuration: configuration,
            middleware: [
                TracingMiddleware(name: "outer", trace: trace, skip: { _ in false }, refuse: { $0.id == "refused" }),
                TracingMiddleware(name: "inner", trace: trace, skip: { $0.id == "skipped" }),
            ])
        try await running(worker) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "run"))
            #expect(await eventually { trace.all.contains("outer after run") })
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "skipped"))
            #expect(await eventually { trace.all.contains("outer after skipped") })
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "refused"))
            #expect(await eventually { try await setup.deadEntries().count == 1 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        let dead = try await setup.deadEntries()
        let text = { (field: String) in dead.first?.value(of: field).map { String(decoding: $0, as: UTF8.self) } }
        #expect(text("job_id") == "refused")
        #expect(text("dead_letter.error") == "refused by outer")
        let lines = trace.all
        #expect(
            Array(lines.prefix(5)) == [
                "outer before run", "inner before run", "handler run", "inner after run", "outer after run",
            ])
        #expect(lines.contains("inner before skipped") && !lines.contains("handler skipped"), "the inner middleware skipped it")
        #expect(seen.all.map(\.id) == ["run"])
    }
}
