import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

extension Examples {
    /// examples/queries: a query service in front of Ferry that answers short queries inline and
    /// runs long ones as jobs; every promise its README makes, checked against real processes.
    @Suite("Example: a pipeline API with an async mode")
    struct QueriesExampleTests {
        /// Sends a query to the service; returns its answer.
        func ask(_ question: String, _ api: ListeningProcess) async throws -> HTTPAnswer {
            let body = String(decoding: try JSONSerialization.data(withJSONObject: ["question": question]), as: UTF8.self)
            return try await sendHTTP("POST", api.baseURL + "/queries", json: body)
        }

        /// The query as the service shows it.
        func poll(_ jobID: String, _ api: ListeningProcess) async throws -> [String: Any] {
            try await sendHTTP("GET", api.baseURL + "/queries/\(jobID)").json ?? [:]
        }

        /// Polls until the query is in one of `states`, recording every state seen on the way.
        func follow(
            _ jobID: String, _ api: ListeningProcess, until states: Set<String>, seen: inout [String]
        ) async -> [String: Any] {
            var last: [String: Any] = [:]
            var trail = seen
            _ = await eventually(.seconds(60)) {
                last = try await poll(jobID, api)
                let state = last["state"] as? String ?? "?"
                if trail.last != state { trail.append(state) }
                return states.contains(state)
            }
            seen = trail
            return last
        }

        @Test(
            "queries: a job id at once, carried into every log line, the handler and the model; short queries inline, long ones as jobs moving pending, processing, completed; failures with their error class and retry guidance; retry of a failed query and cancel of a running one; a worker killed mid-query and the query answered once"
        )
        func queries() async throws {
            let queue = uniqueName("queries")
            var example = try await ExampleRun(
                "queries", queue: queue, settings: ["SERVICES_PORT": "0", "FERRY_PORT": "0", "LEASE": "2s", "SLOW_SECONDS": "3"])
            defer { example.stopAll() }
            let key = try await example.run("setup")
            #expect(key.status == 0, "\(key.standardError)")
            example.environment["FERRY_API_KEY"] = key.lines.first ?? ""
            let services = try await example.serve("services", exporting: "SERVICES_URL")
            _ = try await example.serve("serve", exporting: "FERRY_API")
            let api = try await example.serve("api")
            let workers = try [example.startLogged("worker"), example.startLogged("worker")]
            let logs = { ExampleRun.jsonLines(workers.flatMap(\.logs) + [api.outputPath]) }
            let modelStats = { try await sendHTTP("GET", services.baseURL + "/stats").json ?? [:] }

            // A short query: answered inline, with its job id, and found again by it.
            let light = try await ask("what is ferry", api)
            #expect(light.status == 200 && light.json?["mode"] as? String == "inline", "\(light.text)")
            let lightID = try #require(light.json?["job_id"] as? String)
            #expect(try await poll(lightID, api)["state"] as? String == "completed")

            // A long query: 202 pending at once; then processing; then completed with its answer.
            let heavy = try await ask("heavy: summarise every contract signed in the last quarter", api)
            #expect(heavy.status == 202 && heavy.json?["state"] as? String == "pending", "\(heavy.text)")
            let heavyID = try #require(heavy.json?["job_id"] as? String)
            var trail = ["pending"]
            let completed = await follow(heavyID, api, until: ["completed", "failed"], seen: &trail)
            #expect(trail == ["pending", "processing", "completed"], "\(trail)")
            #expect((completed["answer"] as? String)?.contains("words considered") == true, "\(completed)")
            // Its job id everywhere: the service's lines, the worker's, the handler's, the model's key.
            #expect(
                await eventually {
                    let events = Set(logs().filter { $0["job_id"] as? String == heavyID }.compactMap { $0["event"] as? String })
                    return events.isSuperset(of: [
                        "query_received", "query_queued", "job_started", "query_started", "query_answered", "job_completed",
                    ])
                }, "\(logs().filter { $0["job_id"] as? String == heavyID })")
            #expect(((try await modelStats())["done"] as? [String: Any])?[heavyID] as? Int == 1)

            // The model fails twice: while it waits, the query says it will retry, when, and how many attempts are left.
            let flaky = try #require(
                try await ask("flaky: which suppliers changed their terms this year", api).json?["job_id"] as? String)
            var waiting: [String: Any] = [:]
            #expect(
                await eventually {
                    waiting = try await poll(flaky, api)
                    return (waiting["retry"] as? [String: Any])?["will_retry"] as? Bool == true
                })
            let guidance = try #require(waiting["retry"] as? [String: Any])
            #expect(waiting["state"] as? String == "pending" && guidance["next_attempt_at"] is String, "\(waiting)")
            #expect([1, 2].contains(guidance["attempts_left"] as? Int), "\(guidance)")
            #expect((waiting["error"] as? [String: Any])?["class"] as? String == "exit_75")
            var flakyTrail: [String] = []
            #expect(
                await follow(flaky, api, until: ["completed", "failed"], seen: &flakyTrail)["state"] as? String == "completed")

            // A question the model refuses: failed at once, not retried, and it says so.
            let refusedID = try #require(
                try await ask("unanswerable: what will the board decide next year", api).json?["job_id"] as? String)
            var refusedTrail: [String] = []
            let refused = await follow(refusedID, api, until: ["completed", "failed"], seen: &refusedTrail)
            #expect(refused["state"] as? String == "failed" && refused["attempts"] as? Int == 1, "\(refused)")
            #expect((refused["retry"] as? [String: Any])?["will_retry"] as? Bool == false)
            #expect((refused["error"] as? [String: Any])?["class"] as? String == "permanent_failure")

            // An outage: the query fails after its 3 attempts; once the model is back, a retry answers it.
            let outageID = try #require(
                try await ask("outage: list the renewals due in the next month", api).json?["job_id"] as? String)
            var outageTrail: [String] = []
            let down = await follow(outageID, api, until: ["completed", "failed"], seen: &outageTrail)
            #expect(down["state"] as? String == "failed" && down["attempts"] as? Int == 3, "\(down)")
            _ = try await sendHTTP("POST", services.baseURL + "/outage/off")
            let retried = try await sendHTTP("POST", api.baseURL + "/queries/\(outageID)/retry")
            #expect(retried.status == 202, "\(retried.text)")
            #expect(await follow(outageID, api, until: ["completed"], seen: &outageTrail)["state"] as? String == "completed")
            #expect(try await sendHTTP("POST", api.baseURL + "/queries/\(outageID)/retry").status == 409, "nothing to retry now")

            // Cancel while it runs: the query ends cancelled; cancelling a finished one is refused.
            let slowID = try #require(
                try await ask("slow: cross-check every invoice against the purchase orders", api).json?["job_id"] as? String)
            var slowTrail: [String] = []
            _ = await follow(slowID, api, until: ["processing"], seen: &slowTrail)
            #expect(try await sendHTTP("POST", api.baseURL + "/queries/\(slowID)/cancel").status == 202)
            #expect(
                await follow(slowID, api, until: ["cancelled", "completed"], seen: &slowTrail)["state"] as? String == "cancelled")
            #expect(try await sendHTTP("POST", api.baseURL + "/queries/\(heavyID)/cancel").status == 409)

            // A worker killed (kill -9) mid-query: the other answers it after the lease, and the
            // model worked it out once.
            let killedID = try #require(
                try await ask("slow: reconcile the ledger with the bank statements", api).json?["job_id"] as? String)
            #expect(
                await eventually { ((try await modelStats())["calls"] as? [String: Any])?[killedID] as? Int == 1 }, "under way")
            let status = try #require(
                try await JobStatus.load(
                    jobID: killedID, queue: try QueueName(queue), connection: try await TestRedis.connection()))
            let consumer = status.fields["consumer"] ?? ""
            let victim = try #require(workers.map(\.process).first { consumer.hasSuffix("-\($0.pid)") }, "\(status.fields)")
            victim.signal(SIGKILL)
            var killedTrail: [String] = []
            let survived = await follow(killedID, api, until: ["completed", "failed"], seen: &killedTrail)
            #expect(survived["state"] as? String == "completed" && survived["attempts"] as? Int == 2, "\(survived)")
            let stats = try await modelStats()
            #expect((stats["done"] as? [String: Any])?[killedID] as? Int == 1, "\(stats)")
            #expect((stats["calls"] as? [String: Any])?[killedID] as? Int == 2, "\(stats)")
        }
    }
}
