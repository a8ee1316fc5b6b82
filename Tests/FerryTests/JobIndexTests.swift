import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@testable import Ferry

extension WorkerTests {
    @Test("fan-out: one group dead-letters a job while another runs it to success; each group's status, index and counts say so")
    func statusPerGroup() async throws {
        let setup = try await Setup("fanout")
        let audited = Deliveries()
        let failing = setup.worker(["t": JobHandlerClosure { _ in throw PermanentJobError("audit refused it") }], group: "audit")
        let succeeding = setup.worker(["t": JobHandlerClosure { audited.record($0) }], group: "billing")
        let ids = (0..<5).map { "fan-\($0)" }
        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        try await running(failing, succeeding) {
            _ = try await setup.publisher.publish(ids.map { JobMessage(type: "t", data: "", jobID: $0) })
            #expect(await eventually { try await index.counts(group: "audit")[.dead] == 5 })
            #expect(await eventually { try await index.counts(group: "billing")[.succeeded] == 5 })
        }
        let dead = try await setup.deadEntries()
        for id in ids {
            let record = try #require(try await JobStatusRecord.load(jobID: id, queue: setup.queue, connection: setup.redis))
            let audit = record.status(group: "audit")
            let billing = record.status(group: "billing")
            #expect(audit.state == .dead && audit.fields["error_class"] == "permanent_failure", "\(audit.fields)")
            #expect(audit.fields["dead_id"].map { deadID in dead.contains { $0.id == deadID } } == true, "names its dead letter")
            #expect(billing.state == .succeeded && billing.fields["progress"] == "100", "\(billing.fields)")
            #expect(record.status(group: "reports").state == .queued, "a group that has not started it")
        }
        for group in ["audit", "billing"] {
            let counts = try await index.counts(group: group)
            let expected: [JobState: Int] = group == "audit" ? [.dead: 5] : [.succeeded: 5]
            #expect(counts.filter { $0.value > 0 } == expected, "\(group): \(counts)")
        }
        let letters = DeadLetters(queue: setup.queue, connection: setup.redis)
        #expect(try await letters.letter(jobID: "fan-3")?.jobID == "fan-3")

        // The command line shows one line per group.
        let shown = try await setup.ferry("job", "status", setup.name, "fan-3")
        #expect(shown.status == 0, "\(shown.standardError)")
        #expect(shown.lines.contains { $0.hasPrefix("audit") && $0.contains("dead") && $0.contains("permanent_failure") })
        #expect(shown.lines.contains { $0.hasPrefix("billing") && $0.contains("succeeded") })
        let one = try await setup.ferry("job", "status", setup.name, "fan-3", "--group", "billing", "--json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(one.outputBytes)) as? [String: Any])
        #expect(object["state"] as? String == "succeeded")
        #expect(object["groups"] as? [String: String] == ["audit": "dead", "billing": "succeeded"])
        let inspected = try await setup.ferry("inspect", setup.name, "--json")
        let reports = try #require(try JSONSerialization.jsonObject(with: Data(inspected.outputBytes)) as? [[String: Any]])
        let states = Dictionary(
            uniqueKeysWithValues: (reports.first?["groups"] as? [[String: Any]] ?? []).map {
                ($0["name"] as? String ?? "", $0["states"] as? [String: Int] ?? [:])
            })
        #expect(states["audit"]?["dead"] == 5 && states["billing"]?["dead"] == 0, "dead letters counted per group: \(states)")
        #expect(states["billing"]?["succeeded"] == 5)
        // ferry jobs list pages with the cursor each page prints.
        let (listed, failed) = try await setup.listAllPages(["--group", "audit", "--limit", "2"])
        #expect(failed == nil, "\(failed?.standardError ?? "")")
        #expect(listed == ids.reversed(), "newest first, each once")
        let json = try await setup.ferry("jobs", "list", setup.name, "--group", "billing", "--state", "succeeded", "--json")
        let listing = try #require(try JSONSerialization.jsonObject(with: Data(json.outputBytes)) as? [String: Any])
        #expect((listing["jobs"] as? [[String: Any]])?.count == 5 && listing["next_cursor"] is NSNull)
        #expect(try await setup.ferry("jobs", "list", setup.name, "--state", "queued", "--state", "dead").status == 2)
        #expect(try await setup.ferry("jobs", "list", setup.name, "--state", "bogus").status == 2)
        #expect(try await setup.ferry("jobs", "list", setup.name, "--group", "nope").status == 1)
        #expect(try await setup.ferry("jobs", "list", setup.name, "--group", "audit", "--cursor", "junk").status == 2)
        let unknown = try await setup.ferry("job", "status", setup.name, "fan-3", "--group", "nope")
        #expect(unknown.status == 1 && unknown.standardError.contains("no group nope"))
    }

    @Test(
        "a listing pages through every indexed job exactly once, newest published first, while the jobs keep changing state"
    )
    func listingPagesOnceWhileStatesChange() async throws {
        let setup = try await Setup("listing")
        let ids = (0..<150).map { String(format: "list-%03d", $0) }
        let worker = setup.worker([
            "t": JobHandlerClosure { job in
                try await Task.sleep(for: .milliseconds(Int.random(in: 0...150)))
                if job.deliveryAttempt == 1 { throw PushBackError() }
                if job.id.hasSuffix("7") { throw PermanentJobError("sevens fail") }
            }
        ]) {
            $0.concurrency = 150
            $0.retry = RetryPolicy(maxAttempts: 3, minimumBackoff: .milliseconds(300), maximumBackoff: .milliseconds(600))
        }
        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        func indexed() async throws -> Int { try await index.counts(group: "workers").values.reduce(0, +) }
        func finished() async throws -> Int {
            let counts = try await index.counts(group: "workers")
            return (counts[.succeeded] ?? 0) + (counts[.dead] ?? 0)
        }
        var seen: [String] = []
        var statesSeen: Set<JobState> = []
        var finishedAtStart = 0
        try await running(worker) {
            _ = try await setup.publisher.publish(ids.map { JobMessage(type: "t", data: "", jobID: $0) })
            #expect(await eventually { try await indexed() == 150 }, "every job started once")
            finishedAtStart = try await finished()
            var cursor: JobIndex.Cursor?
            repeat {
                let page = try await index.list(group: "workers", limit: 7, after: cursor)
                seen += page.rows.map(\.jobID)
                statesSeen.formUnion(page.rows.map(\.state))
                cursor = page.next
            } while cursor != nil
            #expect(await eventually(.seconds(20)) { try await finished() == 150 })
        }
        #expect(finishedAtStart < 150, "the pass began while jobs were still moving")
        #expect(Set(seen).count == seen.count, "no job listed twice")
        #expect(Set(seen) == Set(ids), "every job listed")

        // Settled: newest published first, filters combine, and a page never overflows.
        let all = try await index.list(group: "workers", limit: 1000)
        #expect(all.rows.map(\.jobID) == ids.reversed() && all.next == nil)
        let dead = try await index.list(group: "workers", states: [.dead], type: "t", limit: 1000)
        #expect(dead.rows.map(\.jobID) == ids.filter { $0.hasSuffix("7") }.reversed())
        #expect(dead.rows.allSatisfy { $0.state == .dead && $0.errorClass == "permanent_failure" && $0.attempts == 2 })
        #expect(try await index.list(group: "workers", type: "other", limit: 10).rows.isEmpty)
        #expect(throws: FerryError.self) { try JobIndex.Cursor("not a cursor") }
    }

    @Test("index entries go with their expired statuses in the retention pass, and the sets of finished jobs expire")
    func indexTrimmedWithStatuses() async throws {
        let setup = try await Setup("idxtrim")
        let worker = setup.worker(["t": JobHandlerClosure { _ in }]) { $0.keepSucceeded = .milliseconds(300) }
        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        try await running(worker) {
            _ = try await setup.publisher.publish((0..<40).map { JobMessage(type: "t", data: "", jobID: "trim-\($0)") })
            #expect(await eventually { try await index.counts(group: "workers")[.succeeded] == 40 })
        }
        let statusGone = {
            try await setup.redis.send(RedisCommand("EXISTS", [.string(setup.keys.jobStatus(jobID: "trim-39"))])).integer == 0
        }
        #expect(await eventually { try await statusGone() })
        #expect(try await index.counts(group: "workers")[.succeeded] == 40, "still listed until the pass runs")
        let removed = try await index.trimExpired(keepSucceeded: .seconds(60), keepFailed: .seconds(60))
        #expect(removed == 40)
        #expect(try await index.counts(group: "workers")[.succeeded] == 0)
        // A set that still has members gets the keep time of its statuses.
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "late"))
        try await running(setup.worker(["t": JobHandlerClosure { _ in }])) {
            #expect(await eventually { try await index.counts(group: "workers")[.succeeded] == 1 })
        }
        _ = try await index.trimExpired(keepSucceeded: .seconds(60), keepFailed: .seconds(60))
        let ttl = try await setup.redis.send(
            RedisCommand("PTTL", [.string(setup.keys.statusIndex(group: "workers", state: .succeeded))])
        ).integer
        #expect(ttl.map { $0 > 50_000 && $0 <= 60_000 } == true, "\(String(describing: ttl))")
    }
}

extension WorkerTests {
    @Test(
        "queued jobs are listed from the streams of every lane, newest first, each once across pages, without those the group read, filtered by type"
    )
    func listQueuedJobs() async throws {
        let setup = try await Setup("list-queued")
        try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create("workers")
        let normal = try await setup.publisher.publish(
            (0..<100).map { JobMessage(type: $0 % 3 == 0 ? "pdf" : "t", data: "", jobID: "n-\($0)") })
        let urgent = try await setup.publisher.publish(
            (0..<10).map { index in
                var job = JobMessage(type: index % 3 == 0 ? "pdf" : "t", data: "", jobID: "h-\(index)")
                job.priority = .high
                return job
            })
        // The group reads the five oldest normal entries: they are no longer queued.
        _ = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "reader", "COUNT", "5", "STREAMS", .string(setup.keys.jobs), ">"]))
        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        func all(type: String?, limit: Int) async throws -> [JobIndex.Row] {
            var rows: [JobIndex.Row] = []
            var cursor: JobIndex.Cursor?
            var pages = 0
            repeat {
                let page = try await index.list(group: "workers", states: [.queued], type: type, limit: limit, after: cursor)
                #expect(page.rows.count <= limit)
                rows += page.rows
                cursor = page.next
                pages += 1
            } while cursor != nil && pages < 100
            return rows
        }
        let unread = (normal.dropFirst(5) + urgent).sorted {
            StreamEntry.isID($1.entryID ?? "", atOrBefore: $0.entryID ?? "")
        }
        let listed = try await all(type: nil, limit: 7)
        #expect(listed.map(\.jobID) == unread.map(\.jobID), "newest first, each once")
        #expect(listed.allSatisfy { $0.state == .queued && $0.attempts == 0 })
        let pdfs = try await all(type: "pdf", limit: 2)
        #expect(pdfs.map(\.jobID) == listed.filter { $0.type == "pdf" }.map(\.jobID))
        #expect(
            pdfs.count == 34 + 4 - 2, "n-0 and n-3 were read; a filtered page looks at 40 entries a lane, so paging goes below it"
        )
        await #expect(throws: FerryError.self) { _ = try await index.list(group: "workers", states: [.queued, .running]) }
        let shown = try await setup.ferry("jobs", "list", setup.name, "--state", "queued", "--type", "pdf", "--limit", "1000")
        #expect(shown.status == 0 && shown.lines.filter { $0.contains("pdf") }.count == 36, "\(shown.lines)")
    }
}

extension WorkerTests {
    @Test(
        "fan-out keep times: a group that succeeds after another dead-lettered the job does not cut the dead group's 7 days down to its own hour"
    )
    func fanOutKeepsTheLongestKeep() async throws {
        let setup = try await Setup("fanout-keep")
        try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create("billing")
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "kept"))
        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        let failing = setup.worker(["t": JobHandlerClosure { _ in throw PermanentJobError("audit refused it") }], group: "audit")
        try await running(failing) {
            #expect(await eventually { try await index.counts(group: "audit")[.dead] == 1 })
        }
        let statusKey = setup.keys.jobStatus(jobID: "kept")
        func ttl() async throws -> Int64 { try await setup.redis.send(RedisCommand("PTTL", [.string(statusKey)])).integer ?? -2 }
        #expect(try await ttl() > 6 * 24 * 3600 * 1000, "dead: kept 7 days")
        // Billing starts it (its running record removes the expiry) and succeeds (1 h keep).
        try await running(setup.worker(["t": JobHandlerClosure { _ in }], group: "billing")) {
            #expect(await eventually { try await index.counts(group: "billing")[.succeeded] == 1 })
        }
        #expect(try await ttl() > 6 * 24 * 3600 * 1000, "still 7 days: the later, shorter keep does not cut it")
        let record = try #require(try await JobStatusRecord.load(jobID: "kept", queue: setup.queue, connection: setup.redis))
        #expect(record.status(group: "audit").state == .dead && record.status(group: "billing").state == .succeeded)

        // One group alone: a success keeps its hour.
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "short"))
        try await running(
            setup.worker(["t": JobHandlerClosure { _ in }], group: "audit"),
            setup.worker(["t": JobHandlerClosure { _ in }], group: "billing")
        ) {
            #expect(await eventually { try await index.counts(group: "billing")[.succeeded] == 2 })
            #expect(await eventually { try await index.counts(group: "audit")[.succeeded] == 1 })
        }
        let short = try await setup.redis.send(RedisCommand("PTTL", [.string(setup.keys.jobStatus(jobID: "short"))])).integer
        #expect(short.map { $0 > 0 && $0 <= 3600 * 1000 } == true, "\(String(describing: short))")
    }
}
