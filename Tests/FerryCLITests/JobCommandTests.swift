import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@Suite("ferry job status")
struct JobCommandTests {
    @Test("prints the status with readable times; --json gives numbers and RFC 3339 times; unknown jobs exit 1")
    func status() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("status")
        let key = QueueKeys(queue: try QueueName(queue)).jobStatus(jobID: "report-7")
        try await redis.send(
            RedisCommand(
                "HSET",
                [
                    .string(key), "state", "retrying", "attempts", "2", "progress", "40", "stage", "rendering",
                    "last_error", "timeout talking to the renderer", "next_attempt_at", "1700000000500", "updated_at",
                    "1700000000000",
                ]))
        let text = try await runProcess(try ferryExecutable(), ["job", "status", queue, "report-7", "--redis", url])
        #expect(text.status == 0, "\(text.standardError)")
        #expect(text.lines.first { $0.hasPrefix("state") }?.hasSuffix("retrying") == true)
        #expect(text.lines.contains { $0.hasPrefix("next_attempt_at") && $0.contains("2023-11-14T22:13:20.500Z") })

        let json = try await runProcess(try ferryExecutable(), ["job", "status", queue, "report-7", "--json", "--redis", url])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.outputBytes)) as? [String: Any])
        #expect(object["attempts"] as? Int == 2)
        #expect(object["progress"] as? Int == 40)
        #expect(object["next_attempt_at"] as? String == "2023-11-14T22:13:20.500Z")
        #expect(object["last_error"] as? String == "timeout talking to the renderer")

        let missing = try await runProcess(try ferryExecutable(), ["job", "status", queue, "nope", "--redis", url])
        #expect(missing.status == 1)
        #expect(missing.standardError.contains("no job \"nope\""))
    }

    @Test("ferry job cancel says what it did")
    func cancel() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("cancel")
        let key = QueueKeys(queue: try QueueName(queue)).jobStatus(jobID: "done-job")
        try await redis.send(RedisCommand("HSET", [.string(key), "state", "succeeded"]))
        let finished = try await runProcess(try ferryExecutable(), ["job", "cancel", queue, "done-job", "--redis", url])
        #expect(finished.status == 0)
        #expect(finished.standardOutput.contains("already succeeded"))
        let pending = try await runProcess(
            try ferryExecutable(), ["job", "cancel", queue, "later-job", "--force", "--redis", url])
        #expect(pending.standardOutput.contains("will not run"))
        let status = try await JobStatus.load(jobID: "later-job", queue: try QueueName(queue), connection: redis)
        #expect(status?.fields["cancel_requested"] != nil)
    }
}

extension JobCommandTests {
    @Test("ferry job status finds a plain-XADD job in the stream, by job_id or entry ID, and says where it is in each group")
    func statusOfPlainXADDJob() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("plain")
        let jobs = QueueKeys(queue: try QueueName(queue)).jobs
        let entryID = try #require(
            try await redis.send(
                RedisCommand("XADD", [.string(jobs), "*", "type", "t", "data", "x", "job_id", "plain-1", "v", "1"])
            )
            .string)
        try await redis.send(RedisCommand("XGROUP CREATE", [.string(jobs), "workers", "0"]))
        try await redis.send(RedisCommand("XGROUP CREATE", [.string(jobs), "audit", "0"]))
        _ = try await redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "workers", "c1", "COUNT", "1", "STREAMS", .string(jobs), ">"]))
        for id in ["plain-1", entryID] {
            let result = try await runProcess(try ferryExecutable(), ["job", "status", queue, id, "--json", "--redis", url])
            #expect(result.status == 0, "\(result.standardError)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(result.outputBytes)) as? [String: Any])
            #expect(object["entry_id"] as? String == entryID && object["job_id"] as? String == "plain-1")
            #expect(object["groups"] as? [String: String] == ["workers": "pending", "audit": "queued"])
        }
        let missing = try await runProcess(try ferryExecutable(), ["job", "status", queue, "nothing", "--redis", url])
        #expect(missing.status == 1)
    }
}
