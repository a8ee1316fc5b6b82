import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

/// `ferry dlq` and `ferry job retry` through the built binary, on dead letters written by real workers.
@Suite("ferry dlq")
struct DeadLetterCommandTests {
    typealias Setup = TestQueue

    @Test("list, list --json and show describe dead letters; an unknown ID exits 1")
    func listAndShow() async throws {
        let s = try await Setup()
        _ = try await s.publisher.publish(JobMessage(type: "render", data: "fail", jobID: "inv-1"))
        _ = try await s.publisher.publish(JobMessage(type: "render", data: "ok", jobID: "inv-2"))
        _ = try await s.runWorker { try await s.settled(dead: 1) }

        let table = try await s.ferry("dlq", "list", s.name)
        #expect(table.status == 0, "\(table.standardError)")
        #expect(table.lines.first?.hasPrefix("ID") == true)
        #expect(table.lines.count == 2 && table.lines[1].contains("inv-1") && table.lines[1].contains("refused: render"))

        let json = try await s.ferry("dlq", "list", s.name, "--json")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(json.outputBytes)) as? [[String: Any]])
        #expect(rows.count == 1)
        #expect(rows[0]["job_id"] as? String == "inv-1" && rows[0]["error_class"] as? String == "permanent_failure")
        #expect(rows[0]["delivery_count"] as? Int == 1 && rows[0]["source_group"] as? String == "workers")
        let id = try #require(rows[0]["id"] as? String)

        let show = try await s.ferry("dlq", "show", s.name, id)
        #expect(show.status == 0)
        #expect(show.lines.contains { $0.hasPrefix("dead_letter.error ") && $0.hasSuffix("refused: render") })
        #expect(show.lines.contains { $0.hasPrefix("data ") && $0.hasSuffix("fail") })

        let unknown = try await s.ferry("dlq", "show", s.name, "1-1")
        #expect(unknown.status == 1)
        #expect(unknown.standardError.contains("no dead-letter entry 1-1"))
    }

    @Test("redrive by ID puts the job back with its job id and a fresh delivery count, once; a second redrive finds nothing")
    func redriveByID() async throws {
        let s = try await Setup()
        // No job_id: the entry ID is the job id.
        let receipt = try await s.publisher.publish(JobMessage(type: "render", data: "fail"))
        _ = try await s.runWorker { try await s.settled(dead: 1) }
        let id = try #require(
            StreamEntry.entries(from: try await s.redis.send(RedisCommand("XRANGE", [.string(s.keys.deadLetter), "-", "+"])))
                .first?.id)

        let dry = try await s.ferry("dlq", "redrive", s.name, id, "--dry-run")
        #expect(dry.status == 0 && dry.standardOutput.contains("would redrive \(id)"))
        #expect(try await s.length(s.keys.deadLetter) == 1, "--dry-run changes nothing")

        let redrive = try await s.ferry("dlq", "redrive", s.name, id)
        #expect(redrive.status == 0, "\(redrive.standardError)")
        #expect(redrive.standardOutput.contains("1 jobs redriven"))
        #expect(try await s.length(s.keys.deadLetter) == 0)
        #expect(try await s.length(s.keys.jobs) == 2)
        let again = try await s.ferry("dlq", "redrive", s.name, id)
        #expect(again.status == 1, "the entry is gone: nothing is redriven twice")
        #expect(try await s.length(s.keys.jobs) == 2)

        // The job id survives, and the next delivery is attempt 1 again; this time it fails again.
        let newest = try #require(
            StreamEntry.entries(
                from: try await s.redis.send(RedisCommand("XREVRANGE", [.string(s.keys.jobs), "+", "-", "COUNT", "1"]))
            )
            .first)
        #expect(try newest.decodedJob().jobID == receipt.jobID)
        _ = try await s.runWorker { try await s.settled(dead: 1) }
        let dead = try #require(
            StreamEntry.entries(from: try await s.redis.send(RedisCommand("XRANGE", [.string(s.keys.deadLetter), "-", "+"])))
                .first)
        #expect(dead.value(of: "dead_letter.delivery_count") == Array("1".utf8))
        #expect(dead.value(of: "job_id") == Array(receipt.jobID.utf8))
    }

    @Test("a redriven job runs again only in the group that dead-lettered it")
    func redriveTargetsTheSourceGroup() async throws {
        let s = try await Setup()
        _ = try await s.publisher.publish(JobMessage(type: "render", data: "fail", jobID: "fan"))
        // Group "billing" fails it for good; group "audit" runs it fine.
        let auditFirst = try await s.runWorker(group: "audit", failing: false) { try await s.settled(dead: 0, group: "audit") }
        _ = try await s.runWorker(group: "billing") { try await s.settled(dead: 1, group: "billing") }
        #expect(auditFirst == ["fan"])
        #expect(try await s.ferry("job", "retry", s.name, "fan").status == 0)
        #expect(try await s.length(s.keys.deadLetter) == 0)
        let billing = try await s.runWorker(group: "billing") { try await s.settled(dead: 1, group: "billing") }
        let audit = try await s.runWorker(group: "audit", failing: false) { try await s.settled(dead: 1, group: "audit") }
        #expect(billing == ["fan"], "the source group runs it again")
        #expect(audit.isEmpty, "the other group acknowledges it without running it a second time")
        #expect(try await s.ferry("job", "retry", s.name, "no-such-job").status == 1)
    }

    @Test("redrive --all --type takes only that type")
    func redriveAllOfType() async throws {
        let s = try await Setup()
        for index in 0..<3 { _ = try await s.publisher.publish(JobMessage(type: "render", data: "fail", jobID: "r\(index)")) }
        for index in 0..<2 { _ = try await s.publisher.publish(JobMessage(type: "mail", data: "fail", jobID: "m\(index)")) }
        _ = try await s.runWorker { try await s.settled(dead: 5) }
        let result = try await s.ferry("dlq", "redrive", s.name, "--all", "--type", "mail")
        #expect(result.standardOutput.contains("2 jobs redriven"), "\(result.standardOutput)")
        #expect(try await s.length(s.keys.deadLetter) == 3)
        #expect(try await s.ferry("dlq", "redrive", s.name).status == 2, "IDs or --all are required")
    }

    @Test("redrive --all killed half-way, then run again: every job is back exactly once, none lost")
    func redriveKilledHalfWay() async throws {
        let s = try await Setup()
        // Dead letters as deadletter.lua writes them, many enough that the redrive takes a while
        // (3,000 once did; since the scripts became one function library, they can all move before
        // the kill lands).
        let total = 20_000
        var commands: [RedisCommand] = []
        for index in 0..<total {
            commands.append(
                RedisCommand(
                    "XADD",
                    [
                        .string(s.keys.deadLetter), "*", "type", "t", "data", "x", "job_id", .string("job-\(index)"),
                        "dead_letter.source_group", "workers", "dead_letter.source_id", .string("1-\(index)"),
                        "dead_letter.error", "boom",
                    ]))
        }
        _ = try await s.redis.pipeline(commands)
        let process = try ChildProcess(try ferryExecutable(), ["dlq", "redrive", s.name, "--all", "--redis", s.url])
        #expect(await eventually { try await s.length(s.keys.jobs) >= 100 })
        process.signal(SIGKILL)
        _ = await process.waitForExit()
        let moved = try await s.length(s.keys.jobs)
        #expect(moved < total, "killed half-way (\(moved) of \(total) moved)")
        #expect(moved + (try await s.length(s.keys.deadLetter)) == Int64(total), "each job is in exactly one place")

        let rerun = try await s.ferry("dlq", "redrive", s.name, "--all")
        #expect(rerun.status == 0, "\(rerun.standardError)")
        #expect(try await s.length(s.keys.deadLetter) == 0)
        let jobs = StreamEntry.entries(from: try await s.redis.send(RedisCommand("XRANGE", [.string(s.keys.jobs), "-", "+"])))
        let ids = jobs.compactMap { $0.value(of: "job_id").map { String(decoding: $0, as: UTF8.self) } }
        #expect(ids.count == total && Set(ids).count == total, "no job twice, none missing")
        #expect(
            jobs.allSatisfy { $0.value(of: "dead_letter.error") == nil && $0.value(of: "redrive_group") == Array("workers".utf8) }
        )
    }

    @Test("purge by ID, by age and --all; --dry-run deletes nothing")
    func purge() async throws {
        let s = try await Setup()
        let old = Date().millisecondsSince1970 - 3_600_000
        for (index, id) in ["\(old)-0", "\(old)-1", "*", "*"].enumerated() {
            try await s.redis.send(
                RedisCommand("XADD", [.string(s.keys.deadLetter), .string(id), "type", "t", "job_id", .string("p\(index)")]))
        }
        let dry = try await s.ferry("dlq", "purge", s.name, "--older-than", "30m", "--dry-run")
        #expect(dry.standardOutput.contains("2 jobs would be purged"), "\(dry.standardOutput)")
        #expect(try await s.length(s.keys.deadLetter) == 4)
        let aged = try await s.ferry("dlq", "purge", s.name, "--older-than", "30m")
        #expect(aged.standardOutput.contains("2 jobs purged"), "\(aged.standardOutput)")
        let remaining = StreamEntry.entries(
            from: try await s.redis.send(RedisCommand("XRANGE", [.string(s.keys.deadLetter), "-", "+"])))
        let byID = try await s.ferry("dlq", "purge", s.name, remaining[0].id)
        #expect(byID.standardOutput.contains("1 jobs purged"))
        #expect(try await s.ferry("dlq", "purge", s.name, "--all").standardOutput.contains("1 jobs purged"))
        #expect(try await s.length(s.keys.deadLetter) == 0)
        #expect(try await s.ferry("dlq", "purge", s.name, "--older-than", "soon").status == 2)
    }
}

extension TestQueue {
    fileprivate init() async throws { try await self.init("dlq") }

    /// Runs a worker of `group` whose handler fails every job whose data is "fail" for good,
    /// unless `failing` is false.
    fileprivate func runWorker(
        group: String = "workers", failing: Bool = true, until done: @escaping @Sendable () async throws -> Bool
    ) async throws -> [String] {
        let ran = Mutex<[String]>([])
        var configuration = Worker.Configuration()
        configuration.group = group
        configuration.consumer = uniqueName("c")
        configuration.retry = RetryPolicy(
            maxAttempts: 1, minimumBackoff: .milliseconds(50), maximumBackoff: .milliseconds(50))
        let worker = Worker(
            queue: queue, redis: redisConfiguration,
            handlers: [:], configuration: configuration,
            fallbackHandler: JobHandlerClosure { job in
                ran.withLock { $0.append(job.id) }
                if failing && job.data == Array("fail".utf8) { throw PermanentJobError("refused: \(job.type)") }
            })
        let task = Task { try await worker.run() }
        _ = await eventually { try await done() }
        worker.stop()
        try await task.value
        return ran.withLock { $0 }
    }

    /// The group has read every entry of the stream and holds none pending, and the
    /// dead-letter stream has `dead` entries.
    fileprivate func settled(dead: Int64, group: String = "workers") async throws -> Bool {
        let groups = try await redis.send(RedisCommand("XINFO", ["GROUPS", .string(keys.jobs)])).array ?? []
        let info = groups.compactMap(\.array).first { $0.count > 1 && $0[1].string == group } ?? []
        let lastDelivered = zip(info, info.dropFirst()).first { $0.0.string == "last-delivered-id" }?.1.string
        let last = StreamEntry.entries(
            from: try await redis.send(RedisCommand("XREVRANGE", [.string(keys.jobs), "+", "-", "COUNT", "1"]))
        ).first?.id
        let drained = try await pendingCount(group: group) == 0
        let deadCount = try await length(keys.deadLetter)
        return lastDelivered == last && drained && deadCount == dead
    }
}
