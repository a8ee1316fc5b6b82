import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

/// The jobs handlers started, in order, by their data.
final class StartOrder: Sendable {
    private let started = Mutex<[String]>([])
    func record(_ job: Job) { started.withLock { $0.append(String(decoding: job.data, as: UTF8.self)) } }
    var all: [String] { started.withLock { $0 } }
    var count: Int { started.withLock { $0.count } }
}

@Suite("Priorities")
struct PriorityModelTests {
    @Test("a priority reads as high, normal, low or 0-9 and writes back the same; anything else is refused with the field named")
    func priorities() throws {
        #expect(JobPriority(text: "high") == .high && JobPriority.high.level == 0)
        #expect(JobPriority(text: "normal") == .normal && JobPriority.normal.level == 5)
        #expect(JobPriority(text: "low") == .low && JobPriority.low.level == 9)
        #expect(JobPriority(text: "3")?.level == 3 && JobPriority(text: "3")?.description == "3")
        for bad in ["urgent", "10", "-1", "", "05", "1.5"] { #expect(JobPriority(text: bad) == nil, "\(bad)") }
        #expect(throws: FerryError.self) { try JobPriority(level: 10) }
        #expect(JobPriority.high < JobPriority.normal && JobPriority.normal < JobPriority.low)
        #expect([JobPriority.high, .normal, .low].map(\.weight) == [10, 5, 1])

        let decoded = try JobMessage(decoding: [JobField("type", "t"), JobField("priority", "high")])
        #expect(decoded.priority == .high)
        #expect(
            JobMessage(type: "t", priority: .low).encodedFields().contains {
                if case .string("priority") = $0.0, case .string("low") = $0.1 { return true }
                return false
            })
        do {
            _ = try JobMessage(decoding: [JobField("type", "t"), JobField("priority", "urgent")])
            Issue.record("accepted priority urgent")
        } catch {
            #expect(error.field == "priority" && error.problem.contains("high, normal, low"), "\(error)")
        }
        do {
            try JobMessage(type: "t", orderingKey: "k", priority: .high).validateForPublishing(maxPayloadBytes: 100)
            Issue.record("accepted a priority with an ordering key")
        } catch {
            #expect(error.message.contains("ordering key"), "\(error)")
        }
    }
}

extension WorkerTests {
    /// The streams of `setup`'s lanes that exist, and every entry pending in any of them.
    func pendingInLanes(_ setup: Setup) async throws -> Int64 {
        var pending: Int64 = 0
        for priority in JobPriority.all {
            let stream = setup.keys.lane(priority)
            guard try await setup.redis.send(RedisCommand("EXISTS", [.string(stream)])).integer == 1 else { continue }
            let summary = try await setup.redis.send(RedisCommand("XPENDING", [.string(stream), "workers"]))
            pending += summary.array?.first?.integer ?? 0
        }
        return pending
    }

    @Test(
        "strict priorities: a backlog published before the worker starts runs most urgent lane first, each lane in publish order")
    func strictPriorityOrder() async throws {
        let setup = try await Setup("prio-strict")
        let levels: [JobPriority] = [.low, .normal, try JobPriority(level: 3), .high]
        // Interleaved, so publish order alone would give the wrong answer.
        let jobs = (0..<5).flatMap { index in
            levels.map { JobMessage(type: "t", data: Array("\($0.level)-\(index)".utf8), priority: $0) }
        }
        let receipts = try await setup.publisher.publish(jobs)
        let ids = receipts.compactMap(\.entryID)
        #expect(Set(ids).count == jobs.count, "entry IDs are unique across the lanes")
        for level in levels {
            let lane = zip(jobs, ids).filter { $0.0.priority == level }.map(\.1)
            #expect(lane == lane.sorted { StreamEntry.isID($0, atOrBefore: $1) }, "lane \(level) in publish order")
        }

        let order = StartOrder()
        try await running(setup.worker(["t": JobHandlerClosure { order.record($0) }]) { $0.concurrency = 1 }) {
            #expect(await eventually(.seconds(30)) { order.count == jobs.count })
            #expect(await eventually { try await pendingInLanes(setup) == 0 })
        }
        let expected = [0, 3, 5, 9].flatMap { level in (0..<5).map { "\(level)-\($0)" } }
        #expect(order.all == expected)
    }

    @Test("strict priorities: with a backlog of low jobs running, a high job published meanwhile starts next")
    func highJumpsTheBacklog() async throws {
        let setup = try await Setup("prio-jump")
        _ = try await setup.publisher.publish(
            (0..<40).map { JobMessage(type: "t", data: Array("low-\($0)".utf8), priority: .low) })
        let order = StartOrder()
        let handler = JobHandlerClosure { job in
            order.record(job)
            try await Task.sleep(for: .milliseconds(40))
        }
        try await running(setup.worker(["t": handler]) { $0.concurrency = 1 }) {
            #expect(await eventually(.seconds(30)) { order.count >= 3 }, "the low backlog is running")
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: Array("high".utf8), priority: .high))
            let before = order.count  // the high job is in Redis from here on
            #expect(await eventually(.seconds(30)) { order.all.contains("high") })
            let at = order.all.firstIndex(of: "high") ?? .max
            // The one slot was busy with a low job when the high one came; at most one read
            // already on its way may start before it.
            #expect(at <= before + 1, "started \(at - before) jobs after its publish: \(order.all.suffix(6))")
        }
    }

    @Test("weighted priorities: with backlogs in high and low, low still progresses, high gets most starts")
    func weightedLowProgresses() async throws {
        let setup = try await Setup("prio-weighted")
        _ = try await setup.publisher.publish(
            (0..<200).flatMap { index in
                [
                    JobMessage(type: "t", data: Array("high-\(index)".utf8), priority: .high),
                    JobMessage(type: "t", data: Array("low-\(index)".utf8), priority: .low),
                ]
            })
        let order = StartOrder()
        try await running(
            setup.worker(["t": JobHandlerClosure { order.record($0) }]) {
                $0.concurrency = 1
                $0.priorityMode = .weighted
            }
        ) {
            #expect(await eventually(.seconds(60)) { order.count >= 150 })
        }
        let first = order.all.prefix(150)
        let lows = first.filter { $0.hasPrefix("low") }.count
        // Reads take high 10 : 1 low; none in 150 would be a chance of under one in a million.
        #expect(lows >= 1, "low progressed")
        #expect(150 - lows > lows * 3, "high got most: \(lows) low of 150")

        // Strict, on the same backlog: nothing low while high jobs wait.
        let strict = StartOrder()
        let next = try await Setup("prio-weighted-strict")
        _ = try await next.publisher.publish(
            (0..<30).flatMap { index in
                [
                    JobMessage(type: "t", data: Array("high".utf8), priority: .high),
                    JobMessage(type: "t", data: Array("low".utf8), priority: .low),
                ]
            })
        try await running(next.worker(["t": JobHandlerClosure { strict.record($0) }]) { $0.concurrency = 4 }) {
            #expect(await eventually(.seconds(30)) { strict.count == 60 })
        }
        // A read fills its free slots from the high lane first; only the batch that takes the last
        // high jobs may add low ones beside them (4 slots), whose handlers may start first.
        let lastHigh = try #require(strict.all.lastIndex(of: "high"))
        #expect(lastHigh < 30 + 3, "\(strict.all.prefix(34))")
    }

    @Test(
        "a job in a priority lane retries, dead-letters with its reason, is redriven back to its lane, runs once under its idempotency key, and is reclaimed after a crash"
    )
    func laneJobsKeepEveryGuarantee() async throws {
        let setup = try await Setup("prio-paths")
        // A consumer that read a high job and vanished (kill -9): its entry idles in the lane.
        let orphan = try await setup.publisher.publish(JobMessage(type: "t", data: Array("orphan".utf8), priority: .high))
        let lane = setup.keys.lane(.high)
        try await setup.redis.send(RedisCommand("XGROUP", ["CREATE", .string(lane), "workers", "0", "MKSTREAM"]))
        let stolen = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", .string(lane), ">"]))
        #expect(stolen.array?.isEmpty == false, "the ghost holds the orphan")
        _ = try await setup.publisher.publish([
            JobMessage(type: "t", data: Array("flaky".utf8), priority: .high),
            JobMessage(type: "t", data: Array("poison".utf8), priority: .high),
            JobMessage(type: "t", data: Array("once".utf8), idempotencyKey: "k-1", priority: .high),
            JobMessage(type: "t", data: Array("once".utf8), idempotencyKey: "k-1", priority: .high),
        ])
        let seen = Deliveries()
        let handler = JobHandlerClosure { job in
            seen.record(id: String(decoding: job.data, as: UTF8.self), attempt: job.deliveryAttempt)
            let data = String(decoding: job.data, as: UTF8.self)
            if data == "flaky" && job.deliveryAttempt == 1 { throw PushBackError() }
            if data == "poison" { throw PermanentJobError("poison pill") }
        }
        try await running(setup.worker(["t": handler]) { $0.lease = .seconds(2) }) {
            #expect(await eventually(.seconds(30)) { seen.all.contains { $0.id == "flaky" && $0.attempt == 2 } })
            #expect(await eventually(.seconds(30)) { seen.all.contains { $0.id == "orphan" } }, "reclaimed from the lane")
            #expect(await eventually(.seconds(30)) { try await setup.deadEntries().count == 1 })
            #expect(await eventually { try await pendingInLanes(setup) == 0 })
        }
        #expect(seen.all.filter { $0.id == "once" }.count == 1)
        let status = try await JobStatus.load(jobID: orphan.jobID, queue: setup.queue, connection: setup.redis)
        #expect(status?.state == .succeeded)

        let letters = DeadLetters(queue: setup.queue, connection: setup.redis)
        let letter = try #require(try await letters.all().first)
        #expect(letter.error?.contains("poison pill") == true, "\(letter.error ?? "")")
        let back = try #require(try await letters.redrive(letter))
        #expect(
            try await setup.redis.send(RedisCommand("XRANGE", [.string(lane), .string(back), .string(back)])).array?.count == 1,
            "the redriven job is back in its lane")
    }

    @Test("a bounded queue counts every lane: the depth over all priorities refuses the job past it")
    func boundedQueueCountsLanes() async throws {
        let setup = try await Setup("prio-bounded")
        try await QueueSettings(queue: setup.queue, connection: setup.redis).setMaxDepth(3)
        let publisher = Publisher(queue: setup.queue, connection: setup.redis)
        _ = try await publisher.publish([
            JobMessage(type: "t", priority: .high), JobMessage(type: "t", priority: .low), JobMessage(type: "t"),
        ])
        do {
            _ = try await publisher.publish(JobMessage(type: "t", priority: .high))
            Issue.record("a fourth job fitted in a queue of at most 3")
        } catch {
            #expect(error.message.contains("3 jobs not yet finished"), "\(error)")
        }
    }
}

@Suite("Priority lanes in the queue's stores")
struct PriorityLaneStoreTests {
    @Test(
        "groups are created, counted, listed, sought and deleted on every lane, and a job in a lane is found by the locator"
    )
    func groupsAndLookupsCoverLanes() async throws {
        let setup = try await TestQueue("prio-groups")
        let high = try await setup.publisher.publish(JobMessage(type: "t", jobID: "urgent-1", priority: .high))
        _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "plain-1"))
        let groups = ConsumerGroups(queue: setup.queue, connection: setup.redis)
        try await groups.create("audit", at: .start)
        let lane = setup.keys.lane(.high)
        let read = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "audit", "a", "COUNT", "10", "STREAMS", .string(lane), ">"]))
        #expect(StreamEntry.entries(from: read.array?.first?.array?.last ?? .null).map(\.id) == [high.entryID].compactMap { $0 })

        #expect(try await groups.pendingCount("audit") == 1, "the lane's pending entry counts")
        #expect(try await groups.pending("audit").map(\.entryID) == [high.entryID].compactMap { $0 })
        let found = try #require(try await JobLocator(queue: setup.queue, connection: setup.redis).find("urgent-1"))
        #expect(found.entry.id == high.entryID && found.groups["audit"] == .pending(consumer: "a", deliveries: 1))

        do {
            try await groups.delete("audit")
            Issue.record("deleted a group with a pending entry in a lane")
        } catch {
            #expect(error.message.contains("1 pending"), "\(error)")
        }
        try await setup.redis.send(RedisCommand("XACK", [.string(lane), "audit", .string(high.entryID ?? "")]))
        try await groups.seek("audit", to: .start)
        let again = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "audit", "a", "COUNT", "10", "STREAMS", .string(lane), ">"]))
        #expect(again.array?.isEmpty == false, "seek moved the lane's position too")
        try await groups.delete("audit", force: true)
        let left = try await setup.redis.send(RedisCommand("XINFO", ["GROUPS", .string(lane)])).array ?? []
        #expect(left.isEmpty, "deleted on the lane too")
        await #expect(throws: FerryError.self) { try await groups.pendingCount("missing") }
    }
}
