import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

/// A job's running record that waited in the worker's flush with the job's outcome is written
/// with the outcome (`ack.lua`), one status write where there were two: the status it leaves
/// must be the one the two writes left.
@Suite("Running records written with the outcome")
struct RunningRecordTests {
    /// Publishes a job with an id of its own (it gets a queued record with an expiry) and one
    /// whose id is its entry ID (none), and delivers both to consumer `reader` of `workers`.
    func delivered(_ setup: TestQueue, reader: String) async throws -> [PublishReceipt] {
        let receipts = try await setup.publisher.publish([
            JobMessage(type: "resize", data: "", jobID: "with-id"), JobMessage(type: "resize", data: ""),
        ])
        try await setup.redis.send(RedisCommand("XGROUP CREATE", [.string(setup.keys.jobs), "workers", "0"]))
        _ = try await setup.redis.send(
            RedisCommand(
                "XREADGROUP", ["GROUP", "workers", .string(reader), "COUNT", "10", "STREAMS", .string(setup.keys.jobs), ">"]))
        return receipts
    }

    /// `worker`'s acknowledgement of `receipts` as succeeded, each with the running record it
    /// did not write before.
    func acknowledgements(_ receipts: [PublishReceipt], setup: TestQueue, startedAt: Int64) -> [ControlChannel.Acknowledgement] {
        receipts.map { receipt in
            ControlChannel.Acknowledgement(
                entryID: receipt.entryID ?? "",
                status: .init(jobID: receipt.jobID, outcome: .succeeded),
                processingMilliseconds: 7,
                start: .init(
                    jobID: receipt.jobID, type: "resize", entryID: receipt.entryID ?? "", attempt: 1, startedAt: startedAt))
        }
    }

    /// Publishes `count` jobs of type `t` (`jobID` names each, nil for its entry ID), runs a
    /// worker of consumer `consumer` with `handle` until each has been handled once and none is
    /// pending, stops it (which flushes every write it held), and returns each job's status.
    func statusesAfterOneRun(
        _ setup: TestQueue, jobs count: Int, consumer: String, jobID: (Int) -> String? = { _ in nil },
        configure: (inout Worker.Configuration) -> Void, handle: @escaping @Sendable (Job) async throws -> Void
    ) async throws -> [JobStatus] {
        let receipts = try await setup.publisher.publish(
            (0..<count).map { JobMessage(type: "t", data: "\($0)", jobID: jobID($0)) })
        let handled = Mutex(0)
        let handler = JobHandlerClosure { job in
            defer { handled.withLock { $0 += 1 } }
            try await handle(job)
        }
        let worker = setup.worker(["t": handler], consumer: consumer, configure: configure)
        let task = Task { try await worker.run() }
        #expect(await eventually { try await setup.pendingCount() == 0 && handled.withLock { $0 } >= count })
        worker.stop()
        try await task.value
        var statuses: [JobStatus] = []
        for receipt in receipts {
            statuses.append(
                try #require(try await JobStatus.load(jobID: receipt.jobID, queue: setup.queue, connection: setup.redis)))
        }
        return statuses
    }

    @Test(
        "the outcome carries the running record: every field of both, in the succeeded index only, with the succeeded keep time (a queued record's expiry replaced)"
    )
    func outcomeCarriesRunningRecord() async throws {
        let setup = try await TestQueue("coalesced")
        let receipts = try await delivered(setup, reader: "c1")
        let worker = setup.worker([:], consumer: "c1")
        let startedAt = Date().millisecondsSince1970 - 5
        let reply = try await setup.redis.send(
            worker.acknowledgeCommand(acknowledgements(receipts, setup: setup, startedAt: startedAt)))
        #expect(reply.array?.isEmpty == true, "both acknowledged")
        #expect(try await setup.pendingCount() == 0)
        for receipt in receipts {
            let status = try #require(
                try await JobStatus.load(jobID: receipt.jobID, queue: setup.queue, connection: setup.redis))
            #expect(status.state == .succeeded)
            #expect(status.fields["attempts"] == "1")
            #expect(status.fields["consumer"] == "c1")
            #expect(status.fields["started_at"] == String(startedAt))
            #expect(status.fields["type"] == "resize")
            #expect(status.fields["entry_id"] == receipt.entryID)
            #expect(status.fields["processing_ms"] == "7")
            #expect(status.fields["progress"] == "100")
            #expect(status.fields["finished_at"] != nil)
            // The job whose id is its entry ID is packed in its minute's hash (data format 3).
            let key =
                receipt.jobID == receipt.entryID
                ? try #require(setup.keys.succeededStatuses(entryID: receipt.jobID)) : setup.keys.jobStatus(jobID: receipt.jobID)
            let ttl = try await setup.redis.send(RedisCommand("PTTL", [.string(key)]))
            let keep = Worker.Configuration().keepSucceeded.milliseconds
            #expect((1...keep).contains(ttl.integer ?? -1), "the succeeded keep time, not the queued record's 24 h")
        }
        let succeeded = setup.keys.statusIndex(group: "workers", state: .succeeded)
        let running = setup.keys.statusIndex(group: "workers", state: .running)
        #expect(try await setup.redis.send(RedisCommand("ZCARD", [.string(succeeded)])).integer == 2)
        #expect(try await setup.redis.send(RedisCommand("EXISTS", [.string(running)])).integer == 0)
    }

    @Test("a worker that lost the entries writes neither record: the ownership check comes first")
    func lostEntriesWriteNothing() async throws {
        let setup = try await TestQueue("coalesced-lost")
        let receipts = try await delivered(setup, reader: "new-owner")
        let zombie = setup.worker([:], consumer: "zombie")
        let reply = try await setup.redis.send(
            zombie.acknowledgeCommand(acknowledgements(receipts, setup: setup, startedAt: Date().millisecondsSince1970)))
        #expect(Set(reply.array?.compactMap(\.string) ?? []) == Set(receipts.compactMap(\.entryID)))
        #expect(try await setup.pendingCount() == 2, "still the new owner's")
        #expect(
            try await JobStatus.load(jobID: "with-id", queue: setup.queue, connection: setup.redis)?.state == .queued,
            "as the publisher left it")
        #expect(try await JobStatus.load(jobID: receipts[1].jobID, queue: setup.queue, connection: setup.redis) == nil)
    }

    @Test("many quick jobs end with the same complete status whether their running record went alone or with the outcome")
    func quickJobsHaveCompleteStatuses() async throws {
        let setup = try await TestQueue("quick")
        let statuses = try await statusesAfterOneRun(
            setup, jobs: 300, consumer: "quick", jobID: { $0.isMultiple(of: 2) ? "quick-\($0)" : nil },
            configure: { $0.concurrency = 64 }, handle: { _ in })
        for status in statuses {
            #expect(status.state == .succeeded)
            #expect(status.fields["attempts"] == "1" && status.fields["consumer"] == "quick")
            #expect(status.fields["started_at"] != nil && status.fields["type"] == "t")
        }
        let running = setup.keys.statusIndex(group: "workers", state: .running)
        #expect(try await setup.redis.send(RedisCommand("ZCARD", [.string(running)])).integer == 0)
    }
    @Test(
        "a job that reports progress and then succeeds at once reads succeeded, with its stage and every field of its start and its end"
    )
    func progressLandsBehindRunningRecord() async throws {
        let setup = try await TestQueue("progress-order")
        let statuses = try await statusesAfterOneRun(
            setup, jobs: 20, consumer: "reporter", configure: { $0.concurrency = 8 },
            handle: { await $0.reportProgress(50, stage: "half") })
        for status in statuses {
            #expect(status.state == .succeeded, "\(status.fields)")
            #expect(
                status.fields["started_at"] != nil && status.fields["consumer"] == "reporter" && status.fields["stage"] == "half")
            #expect(status.fields["progress"] == "100" && status.fields["finished_at"] != nil)
        }
    }

    @Test(
        "a job that fails at once is left retrying: its running record, held for the outcome, lands before the retry, never after it"
    )
    func retryLandsBehindRunningRecord() async throws {
        let setup = try await TestQueue("retry-order")
        let statuses = try await statusesAfterOneRun(
            setup, jobs: 20, consumer: "failer",
            configure: {
                $0.concurrency = 8
                $0.retry = RetryPolicy(maxAttempts: 5, minimumBackoff: .seconds(60), maximumBackoff: .seconds(60))
            }, handle: { _ in throw PushBackError() })
        for status in statuses {
            #expect(status.state == .retrying, "\(status.fields)")
            #expect(status.fields["started_at"] != nil && status.fields["next_attempt_at"] != nil)
        }
    }
}
