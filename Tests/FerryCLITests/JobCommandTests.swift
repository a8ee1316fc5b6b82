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
        #expect(missing.standardError.contains("no status for job \"nope\""))
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
