import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

extension Examples {
    /// examples/review: a three-step workflow (extract, compare, supervise) whose supervisor
    /// proceeds, sends a step back, or blocks for a person; every promise its README makes,
    /// checked against real processes.
    @Suite("Example: a pipeline with a supervisor")
    struct ReviewExampleTests {
        /// Starts a review of `text` as a person would: `run.sh start FILE`. Returns the workflow id.
        func start(_ text: String, _ example: ExampleRun) async throws -> String {
            let result = try await example.run("start", withFile: text)
            guard let id = result.lines.first?.split(separator: " ").first else {
                throw TestSupportError("run.sh start failed: \(result.standardOutput) \(result.standardError)")
            }
            return String(id)
        }

        /// The stand-ins' counts: per idempotency key, calls and done; per document, stored.
        func stats(_ services: ListeningProcess) async throws -> [String: [String: Int]] {
            let json = try await sendHTTP("GET", services.baseURL + "/stats").json ?? [:]
            return json.mapValues { ($0 as? [String: Any])?.compactMapValues { $0 as? Int } ?? [:] }
        }

        @Test(
            "review: inputs by reference (every message under 50 KB, the document stored once); extract, compare, supervise; the supervisor proceeds, retries a step within its budget of 3, or blocks until a person approves; last_error and processing_ms per step; five concurrent starts of one document give one run; a worker killed mid-step and its work done once"
        )
        func review() async throws {
            let queue = uniqueName("reviews")
            var example = try await ExampleRun(
                "review", queue: queue, settings: ["SERVICES_PORT": "0", "LEASE": "2s", "SLOW_SECONDS": "2"])
            defer { example.stopAll() }
            let services = try await example.serve("services", exporting: "SERVICES_URL")
            let workers = try [example.start("worker"), example.start("worker")]
            let workflows = Workflows(queue: try QueueName(queue), connection: try await TestRedis.connection())
            func finished(_ id: String) async throws -> Workflows.Status {
                var status: Workflows.Status?
                _ = await eventually(.seconds(60)) {
                    status = try await workflows.status(id)
                    return status?.state.isFinished == true || status?.state == .blocked
                }
                return try #require(status, "workflow \(id)")
            }

            // A long contract within the policy: three steps, accepted; the 200 KB document is
            // stored once and every message carries its reference, not the text.
            let long = "contract amount 1200 for 12 months. " + String(repeating: "clause text ", count: 17_000)
            let accepted = try await finished(try await start(long, example))
            #expect(accepted.state == .succeeded, "\(accepted)")
            #expect(accepted.steps.map(\.name) == ["extract", "compare", "supervise"])
            #expect(accepted.steps.allSatisfy { Int($0.job?["processing_ms"] ?? "") != nil }, "processing_ms per step")
            let entries = StreamEntry.entries(
                from: try await TestRedis.connection().send(
                    RedisCommand("XRANGE", [.string(QueueKeys(queue: try QueueName(queue)).jobs), "-", "+"])))
            #expect(entries.count >= 3)
            #expect(entries.allSatisfy { $0.fields.reduce(0) { $0 + $1.name.count + $1.value.count } < 50_000 })
            #expect(try await stats(services)["stored"]?.values.allSatisfy { $0 == 1 } == true)

            // Five concurrent starts of one document: one workflow, one extraction.
            let same = "contract amount 900 for 6 months, sent five times"
            let starter = example
            let ids = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<5 { group.addTask { try await start(same, starter) } }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
            #expect(ids.count == 1, "\(ids)")
            let once = try #require(ids.first)
            #expect(try await finished(once).state == .succeeded)
            #expect(try await stats(services)["calls"]?["\(once)/extract"] == 1)

            // The model fails once: the step is retried, and its status keeps the error.
            let flaky = try await finished(try await start("flaky contract amount 100 for 3 months", example))
            #expect(flaky.state == .succeeded)
            let extract = try #require(flaky.steps.first?.job)
            #expect(extract["attempts"] == "2" && extract["last_error"]?.contains("503") == true, "\(extract)")

            // Uncertain twice: the supervisor sends compare back twice, within its budget of 3.
            let ambiguousID = try await start("ambiguous contract amount 100 for 3 months", example)
            let ambiguous = try await finished(ambiguousID)
            #expect(ambiguous.state == .succeeded && ambiguous.steps[1].runs == 3, "\(ambiguous)")
            let retries = try await workflows.history(ambiguousID).filter {
                $0.event == "decision" && $0.detail.hasPrefix("retry")
            }
            #expect(retries.count == 2)
            // Always uncertain: the budget is spent and the workflow fails, saying so.
            let hopeless = try await finished(try await start("hopeless contract amount 100 for 3 months", example))
            #expect(hopeless.state == .failed && hopeless.steps[1].runs == 3, "\(hopeless)")

            // Over the policy: blocked with the reasons until a person approves; then accepted,
            // with the approval in the supervisor's result.
            let overID = try await start("contract amount 50000 for 36 months", example)
            let blocked = try await finished(overID)
            #expect(blocked.state == .blocked && blocked.reason?.contains("amount 50000") == true, "\(blocked)")
            let approve = try await example.run("approve", overID, "alice")
            #expect(approve.status == 0, "\(approve.standardError)")
            #expect(await eventually { try await workflows.status(overID)?.state == .succeeded })
            let result = try await workflows.status(overID)
            #expect(result?.steps.last?.runs == 2)
            // The same over HTTP, from ferry serve.
            example.environment["PORT"] = "0"
            let serve = try await example.serve("serve")
            let overHTTP = try await sendHTTP("GET", serve.baseURL + "/v1/queues/\(queue)/workflows/\(overID)")
            #expect(overHTTP.json?["state"] as? String == "succeeded", "\(overHTTP.text)")
            #expect((overHTTP.json?["steps"] as? [[String: Any]])?.last?["runs"] as? Int == 2, "\(overHTTP.text)")

            // A worker killed (kill -9) while extracting: the other takes the step after the lease,
            // and the model did the extraction once.
            let slowID = try await start("slow contract amount 10 for 1 months", example)
            #expect(await eventually { try await stats(services)["calls"]?["\(slowID)/extract"] == 1 }, "extracting")
            let running = try #require(try await workflows.status(slowID)?.steps.first?.job)
            let consumer = running["consumer"] ?? ""
            let victim = try #require(workers.first { consumer.hasSuffix("-\($0.pid)") }, "\(running)")
            victim.signal(SIGKILL)
            let slow = try await finished(slowID)
            #expect(slow.state == .succeeded, "\(slow)")
            #expect(slow.steps.first?.job?["attempts"] == "2")
            let counts = try await stats(services)
            #expect(counts["done"]?["\(slowID)/extract"] == 1 && counts["calls"]?["\(slowID)/extract"] == 2, "\(counts)")
        }
    }
}
