import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@testable import Ferry

extension WorkerTests {
    /// Writes a queue as Ferry wrote it before data format 2: no meta key, one status hash
    /// shared by every group with unprefixed fields. The stream entries, the pending list, the
    /// dead letter and the idempotency marker are what format 1's scripts left (their layout did
    /// not change); the status hashes are written field by field as `start_batch`, `ack` and
    /// `deadletter` of format 1 wrote them.
    func writeFormat1Queue(_ setup: Setup) async throws -> (pendingEntry: String, deadLetter: String) {
        var silent = Publisher.Configuration()
        silent.recordsStatus = false
        let publisher = Publisher(queue: setup.queue, connection: setup.redis, configuration: silent)
        _ = try await publisher.publish([
            JobMessage(type: "t", data: Array("done".utf8), jobID: "done-1"),
            JobMessage(type: "t", data: Array("pending".utf8), jobID: "pending-1"),
            JobMessage(type: "t", data: Array("unread".utf8), jobID: "unread-1"),
        ])
        _ = try await publisher.publish(JobMessage(type: "t", data: Array("keyed".utf8), jobID: "keyed-1", idempotencyKey: "k1"))
        let jobs = setup.keys.jobs
        @discardableResult
        func send(_ name: String, _ arguments: [RedisArgument]) async throws -> RedisReply {
            try await setup.redis.send(RedisCommand(name, arguments))
        }
        try await send("XGROUP", ["CREATE", .string(jobs), "workers", "0"])
        let read = StreamEntry.entries(
            from: try await send("XREADGROUP", ["GROUP", "workers", "old-worker", "COUNT", 2, "STREAMS", .string(jobs), ">"])
                .array?.first?.array?.last ?? .null)
        #expect(read.count == 2)
        try await send("XACK", [.string(jobs), "workers", .string(read[0].id)])
        let now = Date().millisecondsSince1970
        let status = { (job: String, fields: [RedisArgument], ttl: Int64?) in
            try await send("HSET", [.string(setup.keys.jobStatus(jobID: job)), "job_id", .string(job)] + fields)
            if let ttl { try await send("PEXPIRE", [.string(setup.keys.jobStatus(jobID: job)), .integer(ttl)]) }
        }
        try await status(
            "done-1",
            ["state", "succeeded", "attempts", "1", "group", "workers", "consumer", "old-worker", "finished_at", .integer(now)],
            86_400_000)
        try await status(
            "pending-1",
            [
                "state", "running", "attempts", "1", "group", "workers", "consumer", "old-worker", "started_at", .integer(now),
                "entry_id", .string(read[1].id),
            ], nil)
        try await status("unread-1", ["state", "queued", "queued_at", .integer(now)], 86_400_000)
        try await status(
            "dead-1", ["state", "dead", "attempts", "3", "error_class", "Boom", "last_error", "boom"], 86_400_000)
        try await send("SET", [.string(setup.keys.completed(idempotencyKey: "k1")), "an-earlier-job", "PX", 86_400_000])
        let dead = try await send(
            "XADD",
            [
                .string(setup.keys.deadLetter), "*", "type", "t", "data", "dead", "job_id", "dead-1", "v", "1",
                "dead_letter.source_stream", .string(jobs), "dead_letter.source_group", "workers", "dead_letter.source_id",
                "1-1", "dead_letter.error_class", "Boom", "dead_letter.error", "boom",
            ])
        return (read[1].id, try #require(dead.string))
    }

    @Test(
        "a worker of the current format takes over a queue written in format 1: pending, unread, keyed and dead-lettered jobs each run (or skip) once, nothing acknowledged runs again"
    )
    func upgradeFromFormat1() async throws {
        let setup = try await Setup("upgrade")
        let (_, deadLetter) = try await writeFormat1Queue(setup)
        // Before any newer worker: the shared status reads as every group's.
        let before = try #require(try await JobStatusRecord.load(jobID: "pending-1", queue: setup.queue, connection: setup.redis))
        #expect(before.status(group: "workers").state == .running && before.status(group: "audit").state == .running)

        let runs = Deliveries()
        let worker = setup.worker(["t": JobHandlerClosure { runs.record($0) }])
        try await running(worker) {
            // pending-1 comes back after old-worker's lease; unread-1 at once; keyed-1 skips.
            #expect(await eventually(.seconds(20)) { Set(runs.all.map(\.id)) == ["pending-1", "unread-1"] })
            let letters = DeadLetters(queue: setup.queue, connection: setup.redis)
            let letter = try #require(try await letters.letter(jobID: "dead-1"))
            #expect(letter.id == deadLetter)
            #expect(try await letters.redrive(letter) != nil)
            #expect(await eventually { runs.all.contains { $0.id == "dead-1" } })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(
            runs.all.map(\.id).sorted() == ["dead-1", "pending-1", "unread-1"], "each ran once; done-1 and keyed-1 did not run")
        for job in ["pending-1", "unread-1", "keyed-1", "dead-1"] {
            let status = try await JobStatus.load(jobID: job, queue: setup.queue, connection: setup.redis)
            #expect(status?.state == .succeeded, "\(job): \(status?.fields ?? [:])")
        }
        let done = try await JobStatus.load(jobID: "done-1", queue: setup.queue, connection: setup.redis)
        #expect(done?.state == .succeeded, "a format-1 status is read as it is until it expires")
        let format = try await setup.redis.send(RedisCommand("HGET", [.string(setup.keys.meta), "format"]))
        #expect(format.string == String(QueueFormat.current))
        #expect(try await setup.deadEntries().isEmpty)
    }

    @Test(
        "a worker of format 3 takes over a queue of format 2: a status hash written per group reads as it was, a new job's success reads beside it, and the queue is marked format 3"
    )
    func upgradeFromFormat2() async throws {
        let setup = try await Setup("upgrade2")
        try await setup.redis.send(RedisCommand("HSET", [.string(setup.keys.meta), "format", "2"]))
        try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create("workers")
        let old = try await setup.publisher.publish(JobMessage(type: "t", data: "old"))
        try await setup.redis.send(
            RedisCommand(
                "HSET",
                [
                    .string(setup.keys.jobStatus(jobID: old.jobID)), "job_id", .string(old.jobID), "entry_id", .string(old.jobID),
                    "type", "t", "workers.state", "succeeded", "workers.attempts", "1", "workers.finished_at", "1",
                ]))
        let read = try await setup.redis.send(
            RedisCommand(
                "XREADGROUP", ["GROUP", "workers", "old-worker", "COUNT", "1", "STREAMS", .string(setup.keys.jobs), ">"]))
        #expect(read != .null, "the old worker read it")
        try await setup.redis.send(RedisCommand("XACK", [.string(setup.keys.jobs), "workers", .string(old.jobID)]))

        let fresh = try await setup.publisher.publish(JobMessage(type: "t", data: "new"))
        let runs = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { runs.record($0) }])) {
            #expect(await eventually { try await setup.pendingCount() == 0 && runs.count == 1 })
        }
        #expect(runs.all.map(\.id) == [fresh.jobID], "what the old worker acknowledged does not run again")
        #expect(try await setup.redis.send(RedisCommand("HGET", [.string(setup.keys.meta), "format"])).string == "3")
        for receipt in [old, fresh] {
            let status = try await JobStatus.load(jobID: receipt.jobID, queue: setup.queue, connection: setup.redis)
            #expect(status?.state == .succeeded, "\(receipt.jobID): \(status?.fields ?? [:])")
        }
    }

    @Test("a worker refuses a queue in a data format it does not know, naming both versions, before any job runs")
    func refusesUnknownFormat() async throws {
        let setup = try await Setup("format")
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: ""))
        try await setup.redis.send(RedisCommand("HSET", [.string(setup.keys.meta), "format", "4"]))
        let runs = Deliveries()
        let worker = setup.worker(["t": JobHandlerClosure { runs.record($0) }])
        do {
            try await worker.run()
            Issue.record("the worker ran on a queue of format 4")
        } catch {
            #expect(error.code == .invalidInput)
            #expect(error.message.contains("data format 4") && error.message.contains("formats 1 to 3"), "\(error)")
        }
        #expect(runs.count == 0)
        #expect(
            try await ConsumerGroups(queue: setup.queue, connection: setup.redis).names().isEmpty, "no group was even created")
    }
}
