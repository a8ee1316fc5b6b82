import FerryRedis
import FerryTestSupport
import Foundation
import Logging
import Testing

@testable import Ferry

@Suite("Retention trimming")
struct RetentionTests {
    @Test("trimming removes only old entries that every group has finished; pending and unread ones stay")
    func trimKeepsUnfinishedEntries() async throws {
        let redis = try await TestRedis.connection()
        var configuration = Publisher.Configuration()
        configuration.retention = .milliseconds(1)
        let queue = try QueueName(uniqueName("retention"))
        let publisher = Publisher(queue: queue, connection: redis, configuration: configuration)
        let jobs = publisher.keys.jobs

        // Before any group exists nothing is trimmed: the first worker has not seen these jobs.
        _ = try await publisher.publish((0..<300).map { JobMessage(type: "t", data: String($0)) })
        #expect(try await publisher.trimExpiredJobs() == 0)

        // Group "fast" reads and acks everything but the entry at index 150, which stays pending.
        // Group "slow" has read up to index 100 and acked all of it.
        try await redis.send(RedisCommand("XGROUP CREATE", [.string(jobs), "fast", "0"]))
        try await redis.send(RedisCommand("XGROUP CREATE", [.string(jobs), "slow", "0"]))
        let all = StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(jobs), "-", "+"])))
        _ = try await redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "fast", "c", "COUNT", "1000", "STREAMS", .string(jobs), ">"]))
        let fastAcks = all.enumerated().filter { $0.offset != 150 }.map { RedisArgument.string($0.element.id) }
        try await redis.send(RedisCommand("XACK", [.string(jobs), "fast"] + fastAcks))
        _ = try await redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "slow", "c", "COUNT", "101", "STREAMS", .string(jobs), ">"]))
        try await redis.send(RedisCommand("XACK", [.string(jobs), "slow"] + all.prefix(101).map { .string($0.id) }))

        try await Task.sleep(for: .milliseconds(5))
        _ = try await publisher.trimExpiredJobs()
        let remaining = StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(jobs), "-", "+"])))
        let remainingIDs = Set(remaining.map(\.id))
        // Everything from slow's read position (index 100) on must still be there.
        #expect(all[100...].allSatisfy { remainingIDs.contains($0.id) })
        #expect(remainingIDs.contains(all[150].id), "the entry pending in 'fast' is kept")
        #expect(remaining.count < all.count, "older finished entries are trimmed")
    }

    @Test("retention is off by default")
    func offByDefault() async throws {
        let redis = try await TestRedis.connection()
        let publisher = Publisher(queue: try QueueName(uniqueName("noretention")), connection: redis)
        _ = try await publisher.publish(JobMessage(type: "t", data: ""))
        #expect(try await publisher.trimExpiredJobs() == 0)
        #expect(publisher.configuration.retention == nil)
    }
}

extension WorkerTests {
    @Test(
        "workers trim acknowledged job entries past the retention by default-on passes, never an unread one, and old dead letters"
    )
    func workersEnforceRetention() async throws {
        let setup = try await Setup()
        _ = try await setup.publisher.publish((0..<300).map { JobMessage(type: "t", data: "\($0)") })
        // Dead letters from long ago (their IDs are their times), and one from now.
        for index in 0..<300 {
            try await setup.redis.send(
                RedisCommand("XADD", [.string(setup.keys.deadLetter), .string("\(1_000 + index)-0"), "type", "t", "v", "1"]))
        }
        try await setup.redis.send(RedisCommand("XADD", [.string(setup.keys.deadLetter), "*", "type", "t", "v", "1"]))
        let log = LogRecord()
        let seen = Deliveries()
        let worker = setup.worker(["t": JobHandlerClosure { seen.record($0) }], logger: log.logger(level: .debug)) {
            $0.retention = .milliseconds(1)
            $0.retentionInterval = .milliseconds(200)
        }
        try await running(worker) {
            #expect(await eventually { seen.count == 300 })
            #expect(await eventually { try await setup.length(setup.keys.jobs) < 300 }, "acknowledged entries trimmed")
            #expect(await eventually { try await setup.length(setup.keys.deadLetter) < 300 }, "old dead letters trimmed")
        }
        let dead = try await setup.redis.send(
            RedisCommand("XREVRANGE", [.string(setup.keys.deadLetter), "+", "-", "COUNT", "1"]))
        #expect(
            StreamEntry.entries(from: dead).first?.time ?? .distantPast > Date().addingTimeInterval(-3600), "a recent one stays")
        #expect(log.messages.contains("retention_trimmed"))
    }

    @Test("a group that has not read the entries keeps every one of them through retention passes")
    func retentionSparesUnreadEntries() async throws {
        let setup = try await Setup()
        _ = try await setup.publisher.publish((0..<300).map { JobMessage(type: "t", data: "\($0)") })
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "slow", "0"]))
        let log = LogRecord()
        let seen = Deliveries()
        let worker = setup.worker(["t": JobHandlerClosure { seen.record($0) }], logger: log.logger(level: .debug)) {
            $0.retention = .milliseconds(1)
            $0.retentionInterval = .milliseconds(100)
        }
        try await running(worker) {
            // 300 jobs: generous on a 2-core machine the whole suite loads.
            #expect(await eventually(.seconds(60)) { seen.count == 300 })
            // Passes after the workers group finished: each would have trimmed but for "slow".
            let passesBefore = log.messages.filter { $0 == "retention_pass" }.count
            #expect(await eventually { log.messages.filter { $0 == "retention_pass" }.count >= passesBefore + 2 })
        }
        #expect(try await setup.length(setup.keys.jobs) == 300)
        #expect(!log.messages.contains("retention_trimmed"))
    }
}
