import FerryTestSupport
import Foundation
import Testing

@Suite("The README's demo command")
struct DemoTests {
    @Test("ops/demo.sh publishes the sample jobs and shows them with redis-cli and ferry")
    func demoRuns() async throws {
        let result = try await runProcess(
            try executable(named: "bash"), [repositoryRoot.appending(path: "ops/demo.sh").path()],
            environment: ["FERRY_BIN": try ferryExecutable().path()])
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.contains("send-welcome"))
        #expect(result.standardOutput.contains("MALFORMED"))
        #expect(result.standardOutput.contains("field \"type\": missing"))
        #expect(result.lines.filter { $0.contains("send-digest") }.count == 3)
        #expect(result.standardOutput.contains(#""event":"job_completed""#), "the worker ran the jobs")
        #expect(result.lines.contains { $0.hasPrefix("state") && $0.hasSuffix("dead") }, "ferry job status shows the poison job")
        #expect(result.lines.contains { $0.hasPrefix("last_error") && $0.contains("invalid recipient") })
        #expect(result.lines.contains { $0.hasPrefix("emails") && $0.contains(" workers ") }, "ferry inspect shows the queue")
        #expect(result.lines.contains { $0.contains("poison-1") && $0.contains("permanent_failure") }, "ferry dlq list")
    }
}
