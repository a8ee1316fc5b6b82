import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

extension Examples {
    /// examples/insights: runs of three steps (expand, reviews, aggregation) by one Python pipeline,
    /// deployed as pull workers and behind push delivery; every promise its README makes, checked
    /// against real processes.
    @Suite("Example: a Pub/Sub-style pipeline worker")
    struct InsightsExampleTests {
        /// The stand-ins' counts and results.
        func stats(_ services: ListeningProcess) async throws -> [String: [String: Any]] {
            (try await sendHTTP("GET", services.baseURL + "/stats").json ?? [:]).compactMapValues { $0 as? [String: Any] }
        }

        /// The run's status in the workers' group, once it has ended (or after a minute).
        func ended(_ run: String, queue: String) async throws -> JobStatus? {
            let connection = try await TestRedis.connection()
            let name = try QueueName(queue)
            var status: JobStatus?
            _ = await eventually(.seconds(60)) {
                status = try await JobStatus.load(jobID: run, queue: name, connection: connection)
                return status?.state?.isTerminal == true
            }
            return status
        }

        @Test(
            "insights: a run's three steps with progress, per-step and overall timeouts; the same results pulled and pushed; a redelivered completed run skipped; JSON lifecycle logs with the run id, step, latency and retries; a worker killed mid-run and no step's side effect applied twice"
        )
        func insights() async throws {
            let queue = uniqueName("insights")
            var example = try await ExampleRun(
                "insights", queue: queue,
                settings: [
                    "SERVICES_PORT": "0", "PUSH_PORT": "0", "LEASE": "2s", "STALL_SECONDS": "2", "PUSH_QUEUE": queue + "-push",
                ])
            defer { example.stopAll() }
            let services = try await example.serve("services", exporting: "SERVICES_URL")
            let push = try await example.serve("push-handler")
            example.environment["PUSH_URL"] = push.baseURL + "/"
            let pulled = try [example.startLogged("worker"), example.startLogged("worker")]
            let pushed = try example.startLogged("push-worker")
            let logs = { ExampleRun.jsonLines(pulled.flatMap(\.logs) + pushed.logs + [push.outputPath]) }
            let run = uniqueName("run")

            // One product, pulled and pushed: both runs succeed with the same result.
            #expect(try await example.run("publish", "p-basic", run + "-pull").status == 0)
            #expect(try await example.run("publish", "p-basic", run + "-push", queue + "-push").status == 0)
            #expect(try await ended(run + "-pull", queue: queue)?.state == .succeeded)
            #expect(try await ended(run + "-push", queue: queue + "-push")?.state == .succeeded)
            let results = try await stats(services)["results"] ?? [:]
            let pullResult = results[run + "-pull"] as? [String: Any], pushResult = results[run + "-push"] as? [String: Any]
            #expect(pullResult?["count"] as? Int == 5 && pullResult?["product"] as? String == "p-basic", "\(results)")
            #expect(pullResult?["average"] as? Double == pushResult?["average"] as? Double, "\(results)")
            let status = try #require(try await ended(run + "-pull", queue: queue))
            #expect(status.fields["progress"] == "100" && status.fields["stage"] == "aggregation", "\(status.fields)")
            // The same over HTTP, from ferry serve.
            example.environment["PORT"] = "0"
            let serve = try await example.serve("serve")
            let overHTTP = try await sendHTTP("GET", serve.baseURL + "/v1/queues/\(queue)/jobs/\(run)-pull")
            let group = (overHTTP.json?["groups"] as? [[String: Any]])?.first ?? [:]
            #expect(group["state"] as? String == "succeeded" && group["stage"] as? String == "aggregation", "\(overHTTP.text)")

            // The lifecycle, in JSON lines: the worker's job events and the pipeline's step events.
            for id in [run + "-pull", run + "-push"] {
                #expect(
                    await eventually {
                        let mine = logs().filter { ($0["job_id"] ?? $0["run_id"]) as? String == id }
                        let events = mine.compactMap { $0["event"] as? String }
                        // Two sources (the worker's lines and the pipeline's) read one after the other.
                        return events.contains("job_started") && events.contains("job_completed")
                            && events.filter { $0 == "step_completed" }.count == 3
                    },
                    "\(id): \(logs().filter { ($0["job_id"] ?? $0["run_id"]) as? String == id }.compactMap { $0["event"] })")
                let steps = logs().filter { $0["run_id"] as? String == id && $0["event"] as? String == "step_completed" }
                #expect(steps.compactMap { $0["step"] as? String } == ["expand", "reviews", "aggregation"])
                #expect(steps.allSatisfy { $0["latency_ms"] is Int && $0["retries"] as? Int == 0 })
            }

            // The completed run delivered again (a producer's retry written straight to the stream):
            // skipped, no step repeated.
            let redis = try await TestRedis.connection()
            let keys = QueueKeys(queue: try QueueName(queue))
            _ = try await redis.send(
                RedisCommand(
                    "XADD",
                    [
                        .string(keys.jobs), "*", "type", "insights.run", "job_id", .string(run + "-pull"), "idempotency_key",
                        .string(run + "-pull"), "data", #"{"product": "p-basic"}"#,
                    ]))
            #expect(
                await eventually {
                    logs().contains { $0["event"] as? String == "idempotent_skip" && $0["job_id"] as? String == run + "-pull" }
                })
            #expect((try await stats(services)["calls"]?[run + "-pull/expand"]) as? Int == 1)

            // A step over its timeout (a review stalls 2 s; the reviews step may take 1.5): the run
            // fails with the step named, is retried, and succeeds.
            example.environment["REVIEWS_TIMEOUT"] = "1.5"
            #expect(try await example.run("publish", "p-stall", run + "-stall").status == 0)
            let stalled = try #require(try await ended(run + "-stall", queue: queue))
            #expect(stalled.state == .succeeded && stalled.attempts == 2, "\(stalled.fields)")
            #expect(stalled.fields["last_error"]?.contains("step reviews: timed out after 1.5s") == true, "\(stalled.fields)")
            #expect(
                logs().contains {
                    $0["event"] as? String == "job_failed" && $0["job_id"] as? String == run + "-stall"
                        && $0["delivery_attempt"] as? Int == 1
                })
            #expect(logs().contains { $0["event"] as? String == "step_failed" && $0["run_id"] as? String == run + "-stall" })

            // The whole run over its timeout (1 s; its reviews hang): each attempt is stopped, and
            // after three the run is dead with the reason.
            example.environment["RUN_TIMEOUT"] = "1s"
            #expect(try await example.run("publish", "p-hang", run + "-hang").status == 0)
            let hung = try #require(try await ended(run + "-hang", queue: queue))
            #expect(hung.state == .dead && hung.attempts == 3, "\(hung.fields)")
            #expect(
                hung.fields["last_error"]?.contains("1s") == true || hung.fields["error_class"]?.contains("imeout") == true,
                "\(hung.fields)")
            example.environment["RUN_TIMEOUT"] = nil
            example.environment["REVIEWS_TIMEOUT"] = nil

            // A worker killed (kill -9) in the middle of a run: the other runs it again after the
            // lease, and no keyed call did its work twice.
            let killed = run + "-kill"
            #expect(try await example.run("publish", "p-big-slow", killed).status == 0)
            #expect(
                await eventually { (try await stats(services)["calls"]?[killed + "/reviews/p-big-slow-r3"]) as? Int == 1 },
                "the reviews step was under way")
            let running = try #require(try await JobStatus.load(jobID: killed, queue: try QueueName(queue), connection: redis))
            let consumer = running.fields["consumer"] ?? ""
            let victim = try #require(pulled.map(\.process).first { consumer.hasSuffix("-\($0.pid)") }, "\(running.fields)")
            victim.signal(SIGKILL)
            let rerun = try #require(try await ended(killed, queue: queue))
            #expect(rerun.state == .succeeded && rerun.attempts == 2, "\(rerun.fields)")
            let counts = try await stats(services)
            let done = (counts["done"] ?? [:]).filter { $0.key.hasPrefix(killed + "/") }
            let calls = (counts["calls"] ?? [:]).filter { $0.key.hasPrefix(killed + "/") }
            #expect(done.count == 22 && done.values.allSatisfy { $0 as? Int == 1 }, "each keyed call's work once: \(done)")
            #expect(calls.values.contains { $0 as? Int == 2 }, "the second run asked again for what the first had done")
            #expect((counts["results"]?[killed] as? [String: Any])?["count"] as? Int == 20)
        }
    }
}
