import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

/// Data format 3: the common success packed in its minute's hash instead of a key per job.
extension WorkerTests {
    /// Acknowledges `entryIDs` (delivered to `consumer`) as a worker's flush does when each
    /// job's running record waited in the flush with its success: the case that is packed. The
    /// worker's own `ack.lua` call, sent directly, so the test does not depend on how a loaded
    /// machine times the flushes.
    private func ackFirstRuns(
        _ setup: Setup, _ entryIDs: [String], consumer: String, type: String, key: String = "",
        keep: Duration = .seconds(3600)
    ) async throws {
        let worker = setup.worker([:], consumer: consumer) { $0.keepSucceeded = keep }
        let startedAt = Date().millisecondsSince1970 - 7
        let acks = entryIDs.map { id in
            ControlChannel.Acknowledgement(
                entryID: id, status: .init(jobID: id, outcome: .succeeded),
                processingMilliseconds: 7,
                start: .init(jobID: id, type: type, entryID: id, attempt: 1, startedAt: startedAt, key: key))
        }
        let lost = try await setup.redis.send(worker.acknowledgeCommand(acks))
        #expect(lost == .array([]), "every entry was the consumer's to acknowledge")
    }

    /// Publishes `count` jobs of type `t|x` and delivers them to consumer `packer` of group
    /// `workers`, as a worker's read would.
    private func deliveredToPacker(_ setup: Setup, count: Int) async throws -> [PublishReceipt] {
        let receipts = try await setup.publisher.publish((0..<count).map { JobMessage(type: "t|x", data: "\($0)") })
        try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create("workers")
        _ = try await setup.redis.send(
            RedisCommand(
                "XREADGROUP",
                ["GROUP", "workers", "packer", "COUNT", .integer(Int64(count)), "STREAMS", .string(setup.keys.jobs), ">"]))
        return receipts
    }

    /// Adds plain entries with IDs of their own (`type` t) and delivers them to consumer `packer`
    /// of group `workers`; returns the IDs.
    private func deliveredToPacker(_ setup: Setup, ids: [String]) async throws -> [String] {
        for id in ids {
            try await setup.redis.send(RedisCommand("XADD", [.string(setup.keys.jobs), .string(id), "type", "t", "data", "x"]))
        }
        try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create("workers")
        _ = try await setup.redis.send(
            RedisCommand(
                "XREADGROUP",
                ["GROUP", "workers", "packer", "COUNT", .integer(Int64(ids.count)), "STREAMS", .string(setup.keys.jobs), ">"]))
        return ids
    }

    /// Asks to cancel a job every group finished: nothing is recorded, no request waits for it.
    private func expectLeftAlone(_ setup: Setup, _ jobID: String) async throws {
        let before = try await JobStatus.requestCancellation(jobID: jobID, queue: setup.queue, connection: setup.redis)
        #expect(before == nil || before?.isTerminal == true, "\(String(describing: before))")
        let request = try await setup.redis.send(RedisCommand("ZSCORE", [.string(setup.keys.cancelRequests), .string(jobID)]))
        #expect(request == .null, "a job every group finished is left as it is")
    }

    @Test(
        "a first run's success of a job whose id is its entry ID is packed in its minute's hash, no key per job: its status, listing and index trim read it, and the hash expires"
    )
    func packedSuccess() async throws {
        let setup = try await Setup()
        let receipts = try await deliveredToPacker(setup, count: 30)
        try await ackFirstRuns(setup, receipts.map(\.jobID), consumer: "packer", type: "t|x")
        #expect(try await setup.pendingCount() == 0)
        for receipt in receipts {
            let status = try #require(try await JobStatus.load(jobID: receipt.jobID, queue: setup.queue, connection: setup.redis))
            #expect(status.state == .succeeded && status.attempts == 1, "\(status.fields)")
            #expect(status.fields["consumer"] == "packer" && status.fields["type"] == "t|x", "the type may hold a |")
            #expect(status.fields["progress"] == "100" && status.fields["retryable"] == "0")
            #expect(status.fields["entry_id"] == receipt.jobID && status.fields["processing_ms"] == "7")
            #expect(Int64(status.fields["started_at"] ?? "") ?? 0 <= Int64(status.fields["finished_at"] ?? "") ?? -1)
            let key = setup.keys.jobStatus(jobID: receipt.jobID)
            #expect(try await setup.redis.send(RedisCommand("EXISTS", [.string(key)])).integer == 0, "no key of its own")
        }
        let minutes = Set(receipts.compactMap { setup.keys.succeededStatuses(entryID: $0.jobID) })
        for minute in minutes {
            let ttl = try await setup.redis.send(RedisCommand("PTTL", [.string(minute)])).integer ?? -1
            #expect(ttl > 0 && ttl <= 3_600_000, "the minute's hash expires with its statuses' keep time: \(ttl)")
        }

        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        #expect(try await index.counts(group: "workers")[.succeeded] == 30)
        #expect(
            try await index.trimExpired(keepSucceeded: .seconds(3600), keepFailed: .seconds(3600)) == 0,
            "a packed status keeps its index entry")
        let page = try await index.list(group: "workers", states: [.succeeded], type: "t|x", limit: 50)
        #expect(page.rows.count == 30 && page.rows.allSatisfy { $0.type == "t|x" && $0.attempts == 1 && $0.updatedAt != nil })
        try await expectLeftAlone(setup, receipts[0].jobID)
        #expect(
            try await JobStatus.requestCancellation(jobID: receipts[1].jobID, queue: setup.queue, connection: setup.redis)
                == .succeeded, "a cancel of a packed success says it already succeeded (the API answers 409, not 404)")

        // Once the minute's hash is gone, so are its jobs' statuses and index entries.
        try await setup.redis.send(RedisCommand("DEL", minutes.map { .string($0) }))
        #expect(try await index.trimExpired(keepSucceeded: .seconds(3600), keepFailed: .seconds(3600)) == 30)
    }

    @Test(
        "one flush packs jobs of several minutes, acknowledged out of order, each into its own minute's hash"
    )
    func packedAcrossMinutes() async throws {
        let setup = try await Setup()
        // Plain XADDs with IDs of their own: two minutes apart, as a flush's jobs can be when
        // a backlog drains. Jobs end (and are acknowledged) in any order: minute 2, 1, then 2.
        let ids = try await deliveredToPacker(setup, ids: ["60000-1", "180000-1", "180000-2"])
        try await ackFirstRuns(setup, [ids[1], ids[0], ids[2]], consumer: "packer", type: "t")
        #expect(try await setup.pendingCount() == 0)
        for id in ids {
            let status = try #require(try await JobStatus.load(jobID: id, queue: setup.queue, connection: setup.redis))
            #expect(status.state == .succeeded && status.fields["consumer"] == "packer", "\(id): \(status.fields)")
        }
        let first = try #require(setup.keys.succeededStatuses(entryID: ids[0]))
        let third = try #require(setup.keys.succeededStatuses(entryID: ids[1]))
        #expect(first != third)
        let fields = { (hash: String) in
            Set(try await setup.redis.send(RedisCommand("HKEYS", [.string(hash)])).array?.compactMap(\.string) ?? [])
        }
        #expect(try await fields(first) == ["workers.60000-1"])
        #expect(try await fields(third) == ["workers.180000-1", "workers.180000-2"])
        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        #expect(try await index.counts(group: "workers")[.succeeded] == 3)
    }

    @Test("a minute's hash of packed statuses expires as late as its longest-kept status asks: a shorter keep never cuts it")
    func packedHashExpiryOnlyGrows() async throws {
        let setup = try await Setup()
        let ids = try await deliveredToPacker(setup, ids: ["120000-1", "120000-2", "120000-3"])
        let hash = try #require(setup.keys.succeededStatuses(entryID: ids[0]))
        let ttl = { try await setup.redis.send(RedisCommand("PTTL", [.string(hash)])).integer ?? -3 }
        try await ackFirstRuns(setup, [ids[0]], consumer: "packer", type: "t", keep: .seconds(3600))
        #expect((3_500_000...3_600_000).contains(try await ttl()), "a new hash gets its first status's keep time")
        try await ackFirstRuns(setup, [ids[1]], consumer: "packer", type: "t", keep: .seconds(60))
        #expect(try await ttl() > 3_500_000, "a shorter keep does not cut it")
        try await ackFirstRuns(setup, [ids[2]], consumer: "packer", type: "t", keep: .seconds(7200))
        #expect(try await ttl() > 7_100_000, "a longer one lengthens it")
        #expect(try await setup.redis.send(RedisCommand("HLEN", [.string(hash)])).integer == 3)
    }

    @Test(
        "the names scripts keep across calls stay bounded: packing into 25,000 minutes grows Redis's Lua memory by what 10,000 names hold, and every status still reads right"
    )
    func keptNamesBounded() async throws {
        // A server of the test's own: another test loading a library would move the Lua heap.
        let server = try await RedisServerProcess()
        defer { Task { await server.stop() } }
        let setup = try await Setup("names", url: server.url)
        // A library of the test's own in the same Lua state as Ferry's: a full collection, then the heap in KB.
        let probe =
            "#!lua name=ferrytest_heap_\(getpid())\nredis.register_function('ferrytest_heap_\(getpid())', "
            + "function() collectgarbage('collect') return tostring(collectgarbage('count')) end)"
        try await setup.redis.send(RedisCommand("FUNCTION LOAD", ["REPLACE", .string(probe)]))
        defer { Task { try? await setup.redis.send(RedisCommand("FUNCTION DELETE", [.string("ferrytest_heap_\(getpid())")])) } }
        let heap = {
            Double(try await setup.redis.send(RedisCommand("FCALL", [.string("ferrytest_heap_\(getpid())"), 0])).string ?? "")
                ?? 0
        }
        // Entries a minute apart: each success packs into a minute hash of its own, a name each.
        let ids = (1...25_000).map { "\($0 * 60_000)-1" }
        for chunk in stride(from: 0, to: ids.count, by: 1000) {
            _ = try await setup.redis.pipeline(
                ids[chunk..<chunk + 1000].map {
                    RedisCommand("XADD", [.string(setup.keys.jobs), .string($0), "type", "t", "data", "x"])
                })
        }
        try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create("workers")
        _ = try await setup.redis.send(
            RedisCommand(
                "XREADGROUP", ["GROUP", "workers", "packer", "COUNT", "25000", "STREAMS", .string(setup.keys.jobs), ">"]))
        try await ackFirstRuns(setup, Array(ids[0..<1000]), consumer: "packer", type: "t")
        let before = try await heap()
        for chunk in stride(from: 1000, to: ids.count, by: 1000) {
            try await ackFirstRuns(setup, Array(ids[chunk..<chunk + 1000]), consumer: "packer", type: "t")
        }
        let grown = try await heap() - before
        // 24,000 names kept would hold about 3 MB; at most 10,000 (then the cache starts again) about 1.2.
        #expect(grown < 2_000, "Lua heap grew by \(grown) KB")
        #expect(try await setup.pendingCount() == 0)
        for id in [ids[0], ids[9_999], ids[10_000], ids[24_999]] {
            let status = try #require(try await JobStatus.load(jobID: id, queue: setup.queue, connection: setup.redis))
            #expect(status.state == .succeeded, "\(id): \(status.fields)")
        }
    }

    @Test("a real worker's successes read the same, packed or not: how many are packed depends on the flushes' timing")
    func workerSuccessesPackedOrNot() async throws {
        let setup = try await Setup()
        let seen = Deliveries()
        let receipts = try await setup.publisher.publish((0..<30).map { JobMessage(type: "t", data: "\($0)") })
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }], consumer: "packer")) {
            #expect(await eventually { try await setup.pendingCount() == 0 ? seen.count == 30 : false })
        }
        for receipt in receipts {
            let status = try #require(try await JobStatus.load(jobID: receipt.jobID, queue: setup.queue, connection: setup.redis))
            #expect(status.state == .succeeded && status.attempts == 1 && status.fields["consumer"] == "packer")
        }
        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        #expect(try await index.counts(group: "workers")[.succeeded] == 30)
    }

    @Test(
        "packed and hashed statuses of one job read together: a group that succeeded on the first run and one that dead-lettered it"
    )
    func packedBesideHashedGroup() async throws {
        let setup = try await Setup()
        for group in ["audit", "workers"] {
            try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create(group)
        }
        let receipt = try await setup.publisher.publish(JobMessage(type: "t", data: ""))
        let audited = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { audited.record($0) }], group: "audit")) {
            #expect(await eventually { try await setup.pendingCount(group: "audit") == 0 ? audited.count == 1 : false })
        }
        let failing = JobHandlerClosure { _ in throw PermanentJobError("no") }
        try await running(setup.worker(["t": failing])) {
            #expect(await eventually { try await setup.pendingCount() == 0 ? try await setup.deadEntries().count == 1 : false })
        }
        let record = try #require(
            try await JobStatusRecord.load(jobID: receipt.jobID, queue: setup.queue, connection: setup.redis))
        #expect(record.status(group: "audit").state == .succeeded, "\(record)")
        #expect(record.status(group: "workers").state == .dead, "\(record)")
        #expect(record.status(group: "workers").fields["error_class"] != nil)
        try await expectLeftAlone(setup, receipt.jobID)
    }

    @Test(
        "a job whose id is its entry ID keeps its flow-control key in its status, so a listing by key finds it running and finished; such a job is not packed"
    )
    func keyedEntryIDJobsListedByKey() async throws {
        let setup = try await Setup()
        let released = Mutex(false)
        let started = Deliveries()
        let handler = JobHandlerClosure { job in
            started.record(job)
            while !released.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
        }
        let slow = try await setup.publisher.publish(JobMessage(type: "t", data: Array("slow".utf8), key: "user-1"))
        let index = JobIndex(queue: setup.queue, connection: setup.redis)
        try await running(setup.worker(["t": handler])) {
            #expect(await eventually { started.count == 1 })
            #expect(
                await eventually {
                    try await index.list(group: "workers", states: [.running], key: "user-1", limit: 10).rows.map(\.jobID)
                        == [slow.jobID]
                }, "running, found by its key")
            released.withLock { $0 = true }
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        let finished = try await index.list(group: "workers", states: [.succeeded], key: "user-1", limit: 10)
        #expect(finished.rows.map(\.jobID) == [slow.jobID], "succeeded, found by its key")

        // The merged write (running record and success in one flush) keeps the key too.
        let quick = try await setup.publisher.publish(JobMessage(type: "t", data: Array("quick".utf8), key: "user-2"))
        _ = try await setup.redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "packer", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), ">"]))
        try await ackFirstRuns(setup, [quick.jobID], consumer: "packer", type: "t", key: "user-2")
        let merged = try await index.list(group: "workers", states: [.succeeded], key: "user-2", limit: 10)
        #expect(merged.rows.map(\.jobID) == [quick.jobID])
        let own = try await setup.redis.send(RedisCommand("HGET", [.string(setup.keys.jobStatus(jobID: quick.jobID)), "key"]))
        #expect(own.string == "user-2", "a keyed job keeps a hash of its own")
    }

    @Test(
        "a success the worker sends packed while the queue's events are on gets a status hash instead, and the event stream shows its start and then its outcome"
    )
    func packedWhileEventsOn() async throws {
        let setup = try await Setup()
        let receipts = try await deliveredToPacker(setup, count: 3)
        let events = QueueEvents(queue: setup.queue, connection: setup.redis)
        _ = try await events.enable()
        try await ackFirstRuns(setup, receipts.map(\.jobID), consumer: "packer", type: "t|x")
        #expect(try await setup.pendingCount() == 0)
        let transitions = try await events.read(after: "0")
        for receipt in receipts {
            let key = setup.keys.jobStatus(jobID: receipt.jobID)
            let fields = QueueInspector.fields(try await setup.redis.send(RedisCommand("HGETALL", [.string(key)])))
                .compactMapValues(\.string)
            #expect(fields["workers.state"] == "succeeded" && fields["workers.attempts"] == "1", "\(fields)")
            #expect(fields["type"] == "t|x" && fields["workers.processing_ms"] == "7" && fields["workers.consumer"] == "packer")
            #expect(fields["workers.started_at"] != nil && fields["workers.finished_at"] != nil)
            let states = transitions.filter { $0.jobID == receipt.jobID }.map(\.state)
            #expect(states == [.running, .succeeded], "\(transitions)")
        }
    }

    @Test("a job with an id of its own, a retried job and a job while events are on keep a status hash")
    func unpackedSuccesses() async throws {
        let setup = try await Setup()
        let tries = Deliveries()
        let handler = JobHandlerClosure { job in
            tries.record(job)
            if job.data == Array("flaky".utf8) && job.deliveryAttempt == 1 { throw PushBackError() }
        }
        let own = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "own-id"))
        let flaky = try await setup.publisher.publish(JobMessage(type: "t", data: "flaky"))
        try await running(setup.worker(["t": handler])) {
            #expect(await eventually { try await setup.pendingCount() == 0 && tries.count == 3 })
            _ = try await QueueEvents(queue: setup.queue, connection: setup.redis).enable()
            let evented = try await setup.publisher.publish(JobMessage(type: "t", data: "evented"))
            #expect(await eventually { try await setup.pendingCount() == 0 && tries.count == 4 })
            for jobID in [own.jobID, flaky.jobID, evented.jobID] {
                let key = setup.keys.jobStatus(jobID: jobID)
                #expect(try await setup.redis.send(RedisCommand("HGET", [.string(key), "workers.state"])).string == "succeeded")
            }
        }
    }
}
