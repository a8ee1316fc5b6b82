import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@testable import Ferry

@Suite("Group positions keep the group's lag known")
struct GroupPositionTests {
    /// A queue with `count` jobs, a group `g` reading from the start, and the entries' IDs.
    private func queue(jobs count: Int) async throws -> (TestQueue, [String]) {
        let setup = try await TestQueue("position")
        let receipts = try await setup.publisher.publish((0..<count).map { JobMessage(type: "t", data: "\($0)") })
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "g", "0"]))
        return (setup, receipts.map(\.jobID))
    }

    private func lag(_ setup: TestQueue, group: String = "g") async throws -> Int64? {
        let groups = try await setup.redis.send(RedisCommand("XINFO", ["GROUPS", .string(setup.keys.jobs)]))
        let info = (groups.array ?? []).map(QueueInspector.fields).first { $0["name"]?.string == group }
        return info?["lag"]?.integer
    }

    private func seek(_ setup: TestQueue, to position: GroupPosition, chunk: Int = 1_000) async throws {
        var arguments: [RedisArgument] = [.string(setup.keys.jobs), "g", .string(position.id)]
        if let read = try await position.entriesRead(stream: setup.keys.jobs, connection: setup.redis, chunk: chunk) {
            arguments += ["ENTRIESREAD", .integer(Int64(read))]
        }
        try await setup.redis.send(RedisCommand("XGROUP SETID", arguments))
    }

    @Test("without ENTRIESREAD, Redis reports no lag for a group placed mid-stream (what this fixes)")
    func redisAlone() async throws {
        let (setup, ids) = try await queue(jobs: 30)
        try await setup.redis.send(RedisCommand("XGROUP SETID", [.string(setup.keys.jobs), "g", .string(ids[9])]))
        #expect(try await lag(setup) == nil)
    }

    @Test("a seek to an entry, counted in one call or in many, leaves the lag at the entries after it", arguments: [1_000, 7])
    func seekToEntry(chunk: Int) async throws {
        let (setup, ids) = try await queue(jobs: 30)
        try await seek(setup, to: try #require(GroupPosition(ids[9])), chunk: chunk)
        #expect(try await lag(setup) == 20)
        try await seek(setup, to: try #require(GroupPosition(ids[27])), chunk: chunk)
        #expect(try await lag(setup) == 2)
    }

    @Test("trimmed entries count as read: the lag is still the entries after the position")
    func trimmedStream() async throws {
        let (setup, ids) = try await queue(jobs: 30)
        try await setup.redis.send(RedisCommand("XTRIM", [.string(setup.keys.jobs), "MAXLEN", 15]))
        try await seek(setup, to: try #require(GroupPosition(ids[19])))
        #expect(try await lag(setup) == 10)
        try await seek(setup, to: try #require(GroupPosition("1-0")), chunk: 4)  // before every entry left
        #expect(try await lag(setup) == 15)
    }

    @Test("a time position counts the entries added at or after it; start and end are left to Redis")
    func timesAndEnds() async throws {
        let (setup, _) = try await queue(jobs: 5)
        try await Task.sleep(for: .milliseconds(5))
        let cut = Date()
        try await Task.sleep(for: .milliseconds(5))
        _ = try await setup.publisher.publish((0..<3).map { JobMessage(type: "t", data: "late-\($0)") })
        let time = cut.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        try await seek(setup, to: try #require(GroupPosition(time)))
        #expect(try await lag(setup) == 3)
        #expect(try await GroupPosition.start.entriesRead(stream: setup.keys.jobs, connection: setup.redis) == nil)
        #expect(try await GroupPosition.end.entriesRead(stream: setup.keys.jobs, connection: setup.redis) == nil)
    }

    @Test("past the last entry, Redis is left to count: later entries with smaller IDs are never delivered")
    func pastTheEnd() async throws {
        let (setup, _) = try await queue(jobs: 3)
        let future = try #require(GroupPosition("9999999999999-0"))
        #expect(try await future.entriesRead(stream: setup.keys.jobs, connection: setup.redis) == nil)
        let missing = try #require(GroupPosition("5-0"))
        #expect(try await missing.entriesRead(stream: "ferry:{no-such-queue}:jobs", connection: setup.redis) == nil)
    }

    @Test("more entries after the position than the limit: no count, rather than a long one")
    func limit() async throws {
        let (setup, ids) = try await queue(jobs: 30)
        let position = try #require(GroupPosition(ids[0]))
        #expect(try await position.entriesRead(stream: setup.keys.jobs, connection: setup.redis, limit: 10, chunk: 4) == nil)
        #expect(try await position.entriesRead(stream: setup.keys.jobs, connection: setup.redis, limit: 29, chunk: 4) == 1)
    }

    @Test("positions parse from start, end, an entry ID or an RFC 3339 time, and nothing else")
    func parsing() {
        #expect(GroupPosition("start") == .start)
        #expect(GroupPosition("$") == .end)
        #expect(GroupPosition("1700000000000-3")?.id == "1700000000000-3")
        #expect(GroupPosition("2026-11-23T09:00:00Z")?.id == "1795424399999-18446744073709551615")
        #expect(GroupPosition("yesterday") == nil)
    }
}
