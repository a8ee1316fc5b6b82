import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

/// The payloads handlers were given, by job id.
final class SeenPayloads: Sendable {
    private let seen = Mutex<[String: [UInt8]]>([:])
    func record(_ job: Job) { seen.withLock { $0[job.id] = job.data } }
    subscript(id: String) -> [UInt8]? { seen.withLock { $0[id] } }
    var count: Int { seen.withLock { $0.count } }
}

extension WorkerTests {
    /// `count` bytes that differ with `seed`.
    func largePayload(_ count: Int, seed: UInt8) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31) ^ seed } }

    func remainingLife(_ setup: Setup, _ key: String) async throws -> Int64 {
        try await setup.redis.send(RedisCommand("PTTL", [.string(key)])).integer ?? -3
    }

    @Test(
        "a payload over the inline limit is stored once beside the queue and fetched and checked before the handler runs; a plain XADD naming one is a valid job"
    )
    func payloadByReferenceRoundTrip() async throws {
        let setup = try await Setup("payload-ref")
        let seen = SeenPayloads()
        let big = largePayload(200_000, seed: 1)
        let receipts = try await setup.publisher.publish([
            JobMessage(type: "t", data: big, jobID: "big-1"), JobMessage(type: "t", data: big, jobID: "big-2"),
            JobMessage(type: "t", data: "small", jobID: "small"),
        ])
        let reference = PayloadReference(of: big)
        let key = setup.keys.payload(sha256: reference.sha256)
        // The entries carry the reference, not the bytes; the two jobs share one stored payload.
        let entries = StreamEntry.entries(
            from: try await setup.redis.send(RedisCommand("XRANGE", [.string(setup.keys.jobs), "-", "+"])))
        #expect(entries.count == 3)
        for entry in entries.prefix(2) {
            #expect(entry.value(of: "data") == nil)
            #expect(entry.text(of: "data_ref") == "redis" && entry.text(of: "data_sha256") == reference.sha256)
            #expect(entry.text(of: "data_size") == "200000")
        }
        #expect(entries[2].value(of: "data") == Array("small".utf8))
        #expect(try await setup.redis.send(RedisCommand("STRLEN", [.string(key)])).integer == 200_000)
        #expect(try await remainingLife(setup, key) > PayloadReference.defaultTTL.milliseconds - 60_000)
        #expect(receipts.map(\.jobID) == ["big-1", "big-2", "small"])

        // A producer in another language: SET the payload, then XADD the reference.
        let other = largePayload(70_000, seed: 2)
        let otherReference = PayloadReference(of: other)
        _ = try await setup.redis.send(
            RedisCommand("SET", [.string(setup.keys.payload(sha256: otherReference.sha256)), .bytes(other), "PX", 600_000]))
        _ = try await setup.redis.send(
            RedisCommand(
                "XADD",
                [
                    .string(setup.keys.jobs), "*", "type", "t", "job_id", "from-redis-cli", "data_ref", "redis", "data_sha256",
                    .string(otherReference.sha256), "data_size", "70000",
                ]))
        // A job scheduled an hour ahead keeps its payload an hour longer.
        let later = largePayload(80_000, seed: 3)
        _ = try await setup.publisher.schedule(JobMessage(type: "t", data: later, jobID: "later"), .after(.seconds(3600)))
        #expect(
            try await remainingLife(setup, setup.keys.payload(sha256: PayloadReference(of: later).sha256))
                > PayloadReference.defaultTTL.milliseconds + 3_000_000)

        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }])) {
            #expect(await eventually { seen.count == 4 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen["big-1"] == big && seen["big-2"] == big && seen["small"] == Array("small".utf8))
        #expect(seen["from-redis-cli"] == other)
        #expect(
            try await remainingLife(setup, setup.keys.payload(sha256: otherReference.sha256)) > 600_000,
            "a delivery renews a payload's life")
        #expect(try await setup.deadEntries().isEmpty)
    }

    @Test(
        "a referenced payload gone or changed dead-letters its job at once with payload_missing or payload_corrupt, never running the handler; a dead letter keeps its payload"
    )
    func payloadMissingOrCorrupt() async throws {
        let setup = try await Setup("payload-bad")
        let seen = SeenPayloads()
        let gone = largePayload(100_000, seed: 4)
        let changed = largePayload(100_000, seed: 5)
        let refused = largePayload(100_000, seed: 6)
        _ = try await setup.publisher.publish([
            JobMessage(type: "t", data: gone, jobID: "gone"), JobMessage(type: "t", data: changed, jobID: "changed"),
            JobMessage(type: "refuse", data: refused, jobID: "refused"),
        ])
        _ = try await setup.redis.send(
            RedisCommand("DEL", [.string(setup.keys.payload(sha256: PayloadReference(of: gone).sha256))]))
        var tampered = changed
        tampered[500] ^= 0xFF
        _ = try await setup.redis.send(
            RedisCommand("SET", [.string(setup.keys.payload(sha256: PayloadReference(of: changed).sha256)), .bytes(tampered)]))
        let worker = setup.worker([
            "t": JobHandlerClosure { seen.record($0) },
            "refuse": JobHandlerClosure { job in
                seen.record(job)
                throw PermanentJobError("refused")
            },
        ])
        try await running(worker) {
            #expect(await eventually { try await setup.deadEntries().count == 3 })
        }
        #expect(seen["gone"] == nil && seen["changed"] == nil, "the handler never ran on a payload it could not have")
        #expect(seen["refused"] == refused)
        let dead = try await setup.deadEntries()
        let classes = Dictionary(
            uniqueKeysWithValues: dead.map { ($0.text(of: "job_id") ?? "", $0.text(of: "dead_letter.error_class") ?? "") })
        #expect(classes == ["gone": "payload_missing", "changed": "payload_corrupt", "refused": "permanent_failure"])
        #expect(dead.allSatisfy { $0.value(of: "dead_letter.delivery_count") == Array("1".utf8) }, "not retried")
        let reason = dead.first { $0.text(of: "job_id") == "changed" }?.text(of: "dead_letter.error") ?? ""
        #expect(reason.contains("not the 100000 bytes with SHA-256 \(PayloadReference(of: changed).sha256)"), "\(reason)")
        #expect(dead.allSatisfy { $0.text(of: "data_ref") == "redis" }, "the dead letter keeps the reference")
        // The refused job's payload lives as long as its dead letter (14 days), for a redrive.
        let refusedKey = setup.keys.payload(sha256: PayloadReference(of: refused).sha256)
        #expect(
            await eventually { try await remainingLife(setup, refusedKey) > PayloadReference.defaultTTL.milliseconds + 60_000 })
    }

    @Test(
        "a workflow's large input is kept once and each step's job names it; a large step result goes by reference to the steps after; a corrupt input dead-letters the step"
    )
    func workflowPayloadsByReference() async throws {
        let setup = try await Setup("wf-payload")
        let input = largePayload(150_000, seed: 7)
        let result = largePayload(300_000, seed: 8)
        let seenInput = SeenPayloads()
        let resultSeen = Mutex<[UInt8]?>(nil)
        let handlers: [String: any JobHandler] = [
            "make": JobHandlerClosure { job in
                seenInput.record(job)
                try job.setResult(result)
            },
            "use": JobHandlerClosure { job in
                seenInput.record(job)
                resultSeen.withLock { $0 = job.workflow?.results["make"] }
            },
        ]
        let definition = WorkflowDefinition("big") {
            WorkflowStep("make", type: "make")
            WorkflowStep("use", type: "use")
        }
        try await workflows(setup).start(definition, data: input, id: "wf-big")
        let firstEntry = StreamEntry.entries(
            from: try await setup.redis.send(RedisCommand("XRANGE", [.string(setup.keys.jobs), "-", "+"])))
        #expect(firstEntry.first?.text(of: "data_ref") == "workflow" && firstEntry.first?.value(of: "data") == nil)
        try await running(setup.worker(handlers)) {
            #expect(await eventually(.seconds(30)) { try await state(setup, "wf-big") == .succeeded })
        }
        #expect(seenInput["wf-big/make"] == input && seenInput["wf-big/use"] == input)
        #expect(resultSeen.withLock { $0 } == result)
        #expect(try await workflows(setup).results("wf-big")["make"] == result)
        let resultsHash = try await setup.redis.send(
            RedisCommand("HGET", [.string(setup.keys.workflow(id: "wf-big") + ":results"), "make:ref"]))
        #expect(resultsHash.string == "\(PayloadReference(of: result).sha256) 300000", "the results hash holds the reference")
        #expect(try await remainingLife(setup, setup.keys.workflowPayloads(id: "wf-big")) > 0, "it expires with the workflow")

        // Changed under a queued step: the step is dead-lettered, and its workflow fails.
        try await workflows(setup).start(definition, data: input, id: "wf-tampered")
        _ = try await setup.redis.send(
            RedisCommand("HSET", [.string(setup.keys.workflowPayloads(id: "wf-tampered")), ":input", "something else"]))
        try await running(setup.worker(handlers)) {
            #expect(await eventually(.seconds(30)) { try await state(setup, "wf-tampered") == .failed })
        }
        #expect(
            try await setup.deadEntries().contains {
                $0.text(of: "job_id") == "wf-tampered/make" && $0.text(of: "dead_letter.error_class") == "payload_corrupt"
            })
        #expect(try await workflows(setup).check().isEmpty)
    }
}
