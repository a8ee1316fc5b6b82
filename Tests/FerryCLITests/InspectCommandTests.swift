import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// `ferry inspect`, `ferry pending` and `ferry group` through the built binary.
@Suite("ferry inspect, pending, group")
struct InspectCommandTests {
    typealias Setup = TestQueue

    @Test("inspect shows length, dead letters, groups, pending, lag, oldest pending age, delivery spread and consumers")
    func inspectTable() async throws {
        let s = try await Setup()
        try await s.populate()
        let result = try await s.ferry("inspect", s.name)
        #expect(result.status == 0, "\(result.standardError)")
        let workers = try #require(result.lines.first { $0.hasPrefix(s.name) && $0.contains(" workers ") })
        let cells = workers.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        // QUEUE LENGTH DLQ GROUP CONSUMERS LAG PENDING RUNNING RETRYING SUCCEEDED DEAD OLDEST DELIVERIES
        #expect(
            cells[1] == "10" && cells[2] == "2" && cells[3] == "workers" && cells[4] == "2" && cells[5] == "7" && cells[6] == "3")
        #expect(cells[12] == "1-2", "delivery counts from 1 to 2")
        let audit = try #require(result.lines.first { $0.hasPrefix(s.name) && $0.contains(" audit ") })
        #expect(audit.split(separator: " ", omittingEmptySubsequences: true)[5] == "0", "audit is not lagging")
        #expect(result.lines.contains { $0.contains("worker-a") && $0.contains(" 2 ") })

        let json = try await s.ferry("inspect", s.name, "--json")
        let reports = try #require(try JSONSerialization.jsonObject(with: Data(json.outputBytes)) as? [[String: Any]])
        let groups = try #require(reports.first?["groups"] as? [[String: Any]])
        let group = try #require(groups.first { $0["name"] as? String == "workers" })
        #expect(reports.first?["length"] as? Int == 10 && reports.first?["dead_letters"] as? Int == 2)
        #expect(group["pending"] as? Int == 3 && group["lag"] as? Int == 7)
        #expect(group["delivery_counts"] as? [String: Int] == ["1": 2, "2": 1])
        #expect((group["oldest_pending_age_milliseconds"] as? Int ?? -1) >= 0)
        #expect((group["consumers"] as? [[String: Any]])?.count == 2)
    }

    @Test(
        "publish --priority puts jobs in their lanes; inspect shows each priority's length, depth and oldest age; a worker drains high first; a bad priority is named"
    )
    func priorities() async throws {
        let s = try await TestQueue("prio-cli")
        for (priority, count) in [("low", 3), ("high", 2), ("normal", 1)] {
            let published = try await s.ferry("publish", s.name, "--type", "t", "--priority", priority, "--count", "\(count)")
            #expect(published.status == 0, "\(published.standardError)")
        }
        let table = try await s.ferry("inspect", s.name)
        #expect(table.status == 0, "\(table.standardError)")
        #expect(table.lines.contains { $0.hasPrefix("QUEUE") && $0.contains("PRIORITY") && $0.contains("OLDEST") })
        func row(_ priority: String) -> [String]? {
            table.lines.first { $0.hasPrefix(s.name + " ") && $0.split(separator: " ").dropFirst().first == Substring(priority) }
                .map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        }
        // QUEUE PRIORITY LENGTH DEPTH OLDEST: no group reads yet, so nothing counts as depth.
        #expect(row("high")?[2] == "2" && row("normal")?[2] == "1" && row("low")?[2] == "3", "\(table.standardOutput)")

        let worker = try ChildProcess(
            try ferryExecutable(), ["worker", s.name, "--exec", "true", "--priority-mode", "weighted", "--redis", s.url])
        defer { worker.signal(SIGKILL) }
        func lanes() async throws -> [[String: Any]] {
            let json = try await s.ferry("inspect", s.name, "--json")
            let reports = try JSONSerialization.jsonObject(with: Data(json.outputBytes)) as? [[String: Any]]
            return reports?.first?["priorities"] as? [[String: Any]] ?? []
        }
        #expect(
            await eventually(.seconds(30)) {
                let rows = try await lanes()
                return rows.count == 3 && rows.allSatisfy { $0["depth"] as? Int == 0 && $0["oldest_age_milliseconds"] == nil }
            }, "every lane drained")
        let drained = try await lanes()
        #expect(drained.map { $0["priority"] as? String } == ["high", "normal", "low"], "\(drained)")
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)

        let bad = try await s.ferry("publish", s.name, "--type", "t", "--priority", "urgent")
        #expect(bad.status != 0 && bad.standardError.contains("high, normal, low"), "\(bad.standardError)")
        let mode = try await s.ferry("worker", s.name, "--exec", "true", "--priority-mode", "fair")
        #expect(mode.status != 0 && mode.standardError.contains("strict, weighted"), "\(mode.standardError)")
    }

    @Test("inspect without a queue finds every queue with SCAN; an unknown queue exits 1")
    func inspectAll() async throws {
        let s = try await Setup()
        try await s.populate()
        let all = try await s.ferry("inspect", "--json")
        let reports = try #require(try JSONSerialization.jsonObject(with: Data(all.outputBytes)) as? [[String: Any]])
        #expect(reports.contains { $0["queue"] as? String == s.name })
        let missing = try await s.ferry("inspect", uniqueName("nothing-here"))
        #expect(missing.status == 1)
        #expect(missing.standardError.contains("does not exist"))
    }

    @Test("pending lists entries with job, owner, idle and deliveries; filters by consumer and idle time")
    func pending() async throws {
        let s = try await Setup()
        try await s.populate()
        let all = try await s.ferry("pending", s.name, "--json")
        #expect(all.status == 0, "\(all.standardError)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(all.outputBytes)) as? [[String: Any]])
        #expect(rows.count == 3)
        #expect(Set(rows.compactMap { $0["job_id"] as? String }) == ["job-0", "job-1", "job-2"])
        #expect(rows.first { $0["job_id"] as? String == "job-2" }?["delivery_count"] as? Int == 2)
        let mine = try await s.ferry("pending", s.name, "--consumer", "worker-a")
        #expect(mine.lines.count == 3 && mine.lines.dropFirst().allSatisfy { $0.contains("worker-a") })
        let idle = try await s.ferry("pending", s.name, "--min-idle", "1h")
        #expect(idle.standardOutput.contains("nothing pending"))
        #expect(try await s.ferry("pending", s.name, "--group", "nobody").status == 1)
    }

    @Test("group create, seek by time replays from that time, seek to end skips, delete refuses pending work")
    func groups() async throws {
        let s = try await Setup()
        let publisher = s.publisher
        _ = try await publisher.publish(JobMessage(type: "t", data: "early"))
        try await Task.sleep(for: .milliseconds(20))
        let cut = Date()
        try await Task.sleep(for: .milliseconds(20))
        _ = try await publisher.publish([JobMessage(type: "t", data: "late-1"), JobMessage(type: "t", data: "late-2")])

        #expect(try await s.ferry("group", "create", s.name, "replay", "--to", "end").status == 0)
        #expect(try await s.ferry("group", "create", s.name, "replay").status == 2, "already exists")
        let time = cut.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        let seek = try await s.ferry("group", "seek", s.name, "replay", "--to", time)
        #expect(seek.status == 0, "\(seek.standardError)")
        #expect(try await s.ferry("group", "create", s.name, "late-start", "--to", time).status == 0)
        let groups = try await s.redis.send(RedisCommand("XINFO", ["GROUPS", .string(s.keys.jobs)]))
        // Redis's own figures, not `ferry inspect`'s, which counts entries when Redis does not know.
        let lags = Dictionary(
            (groups.array ?? []).compactMap(\.array).map { fields in
                let named = Dictionary(
                    stride(from: 0, to: fields.count - 1, by: 2).map { (fields[$0].string ?? "", fields[$0 + 1]) }
                ) { $1 }
                return (named["name"]?.string ?? "", named["lag"]?.integer)
            }
        ) { $1 }
        #expect(lags == ["replay": 2, "late-start": 2], "Redis knows the lag of groups placed mid-stream")
        let read = try await s.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "replay", "c", "COUNT", "10", "STREAMS", .string(s.keys.jobs), ">"]))
        let data = StreamEntry.entries(from: read.array?.first?.array?[1] ?? .array([])).compactMap { $0.value(of: "data") }
        #expect(data == [Array("late-1".utf8), Array("late-2".utf8)], "the jobs published at or after the time")

        #expect(try await s.ferry("group", "seek", s.name, "replay", "--to", "yesterday").status == 2)
        let refused = try await s.ferry("group", "delete", s.name, "replay")
        #expect(refused.status == 2 && refused.standardError.contains("2 pending"))
        #expect(try await s.ferry("group", "delete", s.name, "replay", "--force").status == 0)
        #expect(try await s.ferry("group", "seek", s.name, "replay", "--to", "end").status == 1)
    }
}

extension TestQueue {
    fileprivate init() async throws { try await self.init("ops") }

    fileprivate func send(_ name: String, _ arguments: RedisArgument...) async throws {
        _ = try await redis.send(RedisCommand(name, arguments))
    }

    /// Ten jobs; group "workers" holds 3 pending (2 by one consumer, 1 delivered twice to
    /// another) and has 7 unread; group "audit" read everything; two dead letters.
    fileprivate func populate() async throws {
        _ = try await publisher.publish(
            (0..<10).map { JobMessage(type: "render", data: "\($0)", jobID: "job-\($0)") })
        try await send("XGROUP CREATE", .string(keys.jobs), "workers", "0")
        try await send("XGROUP CREATE", .string(keys.jobs), "audit", "$")
        try await send("XREADGROUP", "GROUP", "workers", "worker-a", "COUNT", "2", "STREAMS", .string(keys.jobs), ">")
        let read = try await redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "worker-b", "COUNT", "1", "STREAMS", .string(keys.jobs), ">"]))
        let third = read.array?.first?.array?[1].array?.first?.array?.first?.string ?? ""
        try await send("XCLAIM", .string(keys.jobs), "workers", "worker-b", "0", .string(third))
        for index in 0..<2 {
            try await send("XADD", .string(keys.deadLetter), "*", "type", "render", "job_id", .string("dead-\(index)"))
        }
    }
}
