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
