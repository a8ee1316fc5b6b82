import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@testable import Ferry

/// The library does what the `ferry group`, `pending` and `peek` commands do, with typed results.
@Suite("Consumer groups, pending lists and peeking in the library")
struct ConsumerGroupsTests {
    @Test("create, refuse a second create, seek, refuse deleting with pending entries unless forced; unknown groups are notFound")
    func groupLifecycle() async throws {
        let setup = try await TestQueue("groups")
        let groups = ConsumerGroups(queue: setup.queue, connection: setup.redis)
        _ = try await setup.publisher.publish((0..<3).map { JobMessage(type: "t", data: "\($0)") })
        try await groups.create("audit", at: .start)
        await #expect { try await groups.create("audit") } throws: { ($0 as? FerryError)?.code == .invalidInput }
        await #expect { try await groups.seek("nope", to: .end) } throws: { ($0 as? FerryError)?.code == .notFound }
        _ = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "audit", "c1", "COUNT", "2", "STREAMS", .string(setup.keys.jobs), ">"]))
        #expect(try await groups.pendingCount("audit") == 2)
        await #expect { try await groups.delete("audit") } throws: { ($0 as? FerryError)?.code == .invalidInput }
        try await groups.seek("audit", to: .end)
        #expect(try await groups.delete("audit", force: true) == 2, "the dropped entries are counted")
        await #expect { try await groups.pendingCount("audit") } throws: { ($0 as? FerryError)?.code == .notFound }
    }

    @Test(
        "group names in one round trip: none before the stream exists, each group's after; a key of the wrong type is an error, not no groups"
    )
    func groupNames() async throws {
        let setup = try await TestQueue("group-names")
        let groups = ConsumerGroups(queue: setup.queue, connection: setup.redis)
        #expect(try await groups.names() == [])
        try await groups.create("audit", at: .start)
        try await groups.create("billing", at: .start)
        #expect(try await groups.names().sorted() == ["audit", "billing"])
        _ = try await setup.redis.send(RedisCommand("DEL", [.string(setup.keys.jobs)]))
        _ = try await setup.redis.send(RedisCommand("SET", [.string(setup.keys.jobs), "not a stream"]))
        await #expect { try await groups.names() } throws: { "\($0)".contains("WRONGTYPE") }
    }

    @Test("a pending list joins each entry with its job, and says when the entry was deleted")
    func pendingJoined() async throws {
        let setup = try await TestQueue("pending")
        let receipts = try await setup.publisher.publish([
            JobMessage(type: "kept", data: "", jobID: "kept-1"), JobMessage(type: "gone", data: "", jobID: "gone-1"),
        ])
        let groups = ConsumerGroups(queue: setup.queue, connection: setup.redis)
        try await groups.create("workers")
        _ = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "c1", "COUNT", "2", "STREAMS", .string(setup.keys.jobs), ">"]))
        try await setup.redis.send(RedisCommand("XDEL", [.string(setup.keys.jobs), .string(receipts[1].entryID ?? "")]))
        let pending = try await groups.pending("workers")
        #expect(pending.map(\.consumer) == ["c1", "c1"] && pending.allSatisfy { $0.deliveries == 1 })
        #expect(pending[0].entry?.jobID == "kept-1")
        #expect(pending[1].entry == nil, "deleted from the stream, still pending")
        #expect(try await groups.pending("workers", consumer: "someone-else").isEmpty)
    }

    @Test("peek decodes jobs and names the field at fault in a malformed entry; an unknown queue is notFound")
    func peekTyped() async throws {
        let setup = try await TestQueue("peek")
        _ = try await setup.publisher.publish(JobMessage(type: "send", data: "{}", jobID: "p-1"))
        try await setup.redis.send(RedisCommand("XADD", [.string(setup.keys.jobs), "*", "data", "no type"]))
        let inspector = QueueInspector(connection: setup.redis)
        let peeked = try await inspector.peek(setup.queue, count: 10)
        #expect(peeked.count == 2)
        #expect(peeked[0].job?.jobID == "p-1" && peeked[0].problem == nil)
        #expect(peeked[1].job == nil && peeked[1].problem?.contains("type") == true)
        await #expect { try await inspector.peek(try QueueName(uniqueName("nosuch")), count: 1) } throws: {
            ($0 as? FerryError)?.code == .notFound
        }
    }
}
