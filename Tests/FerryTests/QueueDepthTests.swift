import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

/// How many publishes were taken and refused, from any task.
final class PublishOutcomes: Sendable {
    let accepted = Mutex(0)
    let refused = Mutex(0)
    let invalid = Mutex(0)
}

extension WorkerTests {
    @Test(
        "a maximum depth of 20 takes exactly 20 jobs from 8 concurrent publishers and refuses the rest, writing nothing for them")
    func maxDepthUnderConcurrentPublishers() async throws {
        let setup = try await Setup("depth")
        try await QueueSettings(queue: setup.queue, connection: setup.redis).setMaxDepth(20)
        let outcomes = PublishOutcomes()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for publisherIndex in 0..<8 {
                group.addTask {
                    let connection = RedisConnection(configuration: setup.redisConfiguration)
                    let publisher = Publisher(queue: setup.queue, connection: connection)
                    for index in 0..<5 {
                        do {
                            _ = try await publisher.publish(JobMessage(type: "t", data: "\(publisherIndex)-\(index)"))
                            outcomes.accepted.withLock { $0 += 1 }
                        } catch let error as FerryError where error.code == .queueFull {
                            #expect(error.queueFull?.maxDepth == 20 && error.queueFull?.depth == 20)
                            outcomes.refused.withLock { $0 += 1 }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(outcomes.accepted.withLock { $0 } == 20 && outcomes.refused.withLock { $0 } == 20)
        #expect(try await setup.length(setup.keys.jobs) == 20)
    }

    @Test("the depth is the slowest group's backlog; a batch that does not fit is refused whole; a duplicate key takes no room")
    func depthFollowsTheSlowestGroup() async throws {
        let setup = try await Setup("depth-groups")
        let settings = QueueSettings(queue: setup.queue, connection: setup.redis)
        try await settings.setMaxDepth(5)
        _ = try await setup.publisher.publish((0..<3).map { JobMessage(type: "t", data: "\($0)") })
        let refusal = await #expect(throws: FerryError.self) {
            _ = try await setup.publisher.publish((0..<3).map { JobMessage(type: "t", data: "more-\($0)") })
        }
        #expect(refusal?.code == .queueFull && refusal?.queueFull?.depth == 3 && refusal?.queueFull?.refused == 3)
        #expect(try await setup.length(setup.keys.jobs) == 3, "nothing of the refused batch was written")
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "k", idempotencyKey: "once"))
        let again = try await setup.publisher.publish(JobMessage(type: "t", data: "k", idempotencyKey: "once"))
        #expect(again.isDuplicate)
        #expect(try await setup.length(setup.keys.jobs) == 4)

        // Two groups: one works through everything, one reads nothing. The idle one is the depth.
        _ = try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "idle", "0"]))
        let seen = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            #expect(await eventually { try await setup.pendingCount() == 0 && seen.count == 4 })
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "fifth"))
            let full = await #expect(throws: FerryError.self) {
                _ = try await setup.publisher.publish(JobMessage(type: "t", data: "sixth"))
            }
            #expect(full?.code == .queueFull, "the idle group holds 5")
        }
        // Without the idle group, the worker's group (all done) is the depth: room again.
        _ = try await setup.redis.send(RedisCommand("XGROUP DESTROY", [.string(setup.keys.jobs), "idle"]))
        #expect(await eventually { (try? await setup.publisher.publish(JobMessage(type: "t", data: "sixth"))) != nil })
        try await settings.setMaxDepth(nil)
        #expect(try await settings.maxDepth() == nil)
    }
}

extension WorkerTests {
    @Test(
        "a quota of 2 unfinished jobs per key refuses a key's third job, names the key, lets other keys and keyless jobs by, and takes it again once the key's jobs finish"
    )
    func quotaPerKey() async throws {
        let setup = try await Setup("key-quota")
        try await QueueSettings(queue: setup.queue, connection: setup.redis).setMaxPendingPerKey(2)
        let alice = { (index: Int) in JobMessage(type: "t", jobID: "alice-\(index)", key: "alice") }
        _ = try await setup.publisher.publish([alice(0), alice(1)])
        let refusal = await #expect(throws: FerryError.self) { _ = try await setup.publisher.publish(alice(2)) }
        #expect(refusal?.code == .queueFull)
        #expect(refusal?.queueFull?.key == "alice" && refusal?.queueFull?.depth == 2 && refusal?.queueFull?.maxDepth == 2)
        #expect(refusal?.message.contains("--max-pending-per-key") == true, "\(refusal?.message ?? "")")
        // A batch with one job too many for a key is refused whole.
        await #expect(throws: FerryError.self) {
            _ = try await setup.publisher.publish([JobMessage(type: "t", jobID: "bob-0", key: "bob")] + [alice(3)])
        }
        #expect(try await setup.length(setup.keys.jobs) == 2, "nothing of the refused publishes was written")
        _ = try await setup.publisher.publish([
            JobMessage(type: "t", jobID: "bob-1", key: "bob"), JobMessage(type: "t", jobID: "bob-2", key: "bob"),
            JobMessage(type: "t", jobID: "keyless"),
        ])
        // A worker finishes alice's jobs: her quota has room again.
        let seen = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            #expect(await eventually { seen.count == 5 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        _ = try await setup.publisher.publish([alice(4), alice(5)])
        await #expect(throws: FerryError.self) { _ = try await setup.publisher.publish(alice(6)) }
    }

    @Test("a refused publish carries a retry-after hint once the drain rate is known, and the CLI says it")
    func queueFullRetryAfterHint() async throws {
        let setup = try await Setup("drain-hint")
        try await QueueSettings(queue: setup.queue, connection: setup.redis).setMaxDepth(20)
        _ = try await setup.publisher.publish((0..<20).map { JobMessage(type: "t", jobID: "d-\($0)") })
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        let first = await #expect(throws: FerryError.self) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "over"))
        }
        #expect(first?.queueFull?.retryAfter == nil, "no rate known at the first refusal")
        let seen = Deliveries()
        try await running(
            setup.worker([
                "t": JobHandlerClosure { job in
                    seen.record(job)
                    try await Task.sleep(for: .milliseconds(100))
                }
            ]) { $0.concurrency = 1 }
        ) {
            #expect(await eventually { seen.count >= 5 })
            try await Task.sleep(for: .seconds(1))  // the sample is at least a second old
        }
        let second = await #expect(throws: FerryError.self) {
            _ = try await setup.publisher.publish((0..<30).map { JobMessage(type: "t", jobID: "more-\($0)") })
        }
        let hint = try #require(second?.queueFull?.retryAfter, "a rate is known now")
        #expect(hint > .zero)
        #expect(second?.message.contains("try again in about") == true, "\(second?.message ?? "")")
    }
}

extension WorkerTests {
    @Test(
        "with events on, a refused publish is recorded as `refused` with its job id and why (queue_full, key_quota); a duplicate in the refused batch and an accepted publish are not"
    )
    func refusedPublishIsRecorded() async throws {
        let setup = try await Setup("refused")
        let events = QueueEvents(queue: setup.queue, connection: setup.redis)
        try await events.enable()
        let settings = QueueSettings(queue: setup.queue, connection: setup.redis)
        try await settings.setMaxDepth(2)
        try await settings.setMaxPendingPerKey(1)
        _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "doc-1", idempotencyKey: "doc-1", key: "alice"))
        await #expect(throws: FerryError.self) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "doc-2", key: "alice"))
        }
        _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "doc-3"))
        // Full: the new job is refused; the duplicate of doc-1 beside it takes no room and is not.
        await #expect(throws: FerryError.self) {
            _ = try await setup.publisher.publish([
                JobMessage(type: "t", jobID: "doc-1", idempotencyKey: "doc-1", key: "alice"),
                JobMessage(type: "t", jobID: "doc-4"),
            ])
        }
        let refused = try await events.read(after: "0-0").filter { $0.refusal != nil }
        #expect(refused.map(\.jobID) == ["doc-2", "doc-4"])
        #expect(refused.map(\.refusal) == ["key_quota", "queue_full"])
        #expect(refused.allSatisfy { $0.group == nil && $0.state == nil })
        let queued = try await events.read(after: "0-0").filter { $0.state == .queued }.map(\.jobID)
        #expect(queued == ["doc-1", "doc-3"])
    }
}

extension WorkerTests {
    @Test(
        "a shared publisher writes concurrent calls together, and each keeps its own outcome: refused by the depth, invalid, or taken"
    )
    func sharedPublisherKeepsEachCallsOutcome() async throws {
        let setup = try await Setup("shared-publisher")
        try await QueueSettings(queue: setup.queue, connection: setup.redis).setMaxDepth(30)
        let shared = SharedPublisher(Publisher(queue: setup.queue, connection: setup.redis))
        let outcomes = PublishOutcomes()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<60 {
                group.addTask {
                    // Every tenth call is one a publisher must refuse (an empty type).
                    let job = JobMessage(type: index % 10 == 0 ? "" : "t", data: "\(index)", jobID: "job-\(index)")
                    do {
                        let receipt = try await shared.publish(job)
                        #expect(receipt.jobID == "job-\(index)")
                        outcomes.accepted.withLock { $0 += 1 }
                    } catch let error as FerryError where error.code == .queueFull {
                        outcomes.refused.withLock { $0 += 1 }
                    } catch let error as FerryError where error.code == .invalidInput {
                        #expect(index % 10 == 0)
                        outcomes.invalid.withLock { $0 += 1 }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(outcomes.invalid.withLock { $0 } == 6)
        #expect(outcomes.accepted.withLock { $0 } == 30 && outcomes.refused.withLock { $0 } == 24)
        #expect(try await setup.length(setup.keys.jobs) == 30)
        #expect(shared.combinedWrites > 0, "60 calls at once shared no write")
    }
}
