import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

extension Examples {
    /// examples/ingestion: documents submitted over HTTP, ingested by a Python handler through a
    /// stand-in parser; every promise its README makes, checked against real processes.
    @Suite("Example: background ingestion")
    struct IngestionExampleTests {
        /// What `run.sh submit FILE` printed: the status, the answer's JSON, and its Retry-After.
        struct Submitted {
            var status: Int
            var json: [String: Any]
            var retryAfter: String?
            var jobID: String { json["job_id"] as? String ?? "" }
        }

        /// Writes `text` to a file and submits it as a person would: `run.sh submit FILE`.
        func submit(_ text: String, _ example: ExampleRun) async throws -> Submitted {
            let result = try await example.run("submit", withFile: text)
            let lines = result.lines
            guard let status = lines.first.flatMap({ Int($0) }), lines.count >= 2 else {
                throw TestSupportError("run.sh submit failed: \(result.standardOutput) \(result.standardError)")
            }
            let json = (try? JSONSerialization.jsonObject(with: Data(lines[1].utf8))) as? [String: Any] ?? [:]
            let retryAfter = lines.dropFirst(2).first { $0.hasPrefix("Retry-After: ") }.map { String($0.dropFirst(13)) }
            return Submitted(status: status, json: json, retryAfter: retryAfter)
        }

        /// The job's status through the API: its group's state ('queued' before a group has it),
        /// the whole answer, and its Retry-After.
        func status(
            _ jobID: String, _ api: ListeningProcess, queue: String, wait: String? = nil
        ) async throws -> (
            state: String, group: [String: Any], retryAfter: String?
        ) {
            let answer = try await sendHTTP(
                "GET", api.baseURL + "/v1/queues/\(queue)/jobs/\(jobID)" + (wait.map { "?wait=" + $0 } ?? ""))
            let group = (answer.json?["groups"] as? [[String: Any]])?.first ?? [:]
            return (group["state"] as? String ?? "queued", group, answer.headers["retry-after"])
        }

        /// The stand-in parser's counts for the job (`calls`, `started`, `stored`).
        func parserCounts(_ jobID: String, _ parser: ListeningProcess) async throws -> [String: Int] {
            let stats = try await sendHTTP("GET", parser.baseURL + "/stats").json ?? [:]
            var counts: [String: Int] = [:]
            for name in ["calls", "started", "stored"] { counts[name] = (stats[name] as? [String: Any])?[jobID] as? Int ?? 0 }
            return counts
        }

        @Test(
            "ingestion: 202 with the queued status, polled until it ends; a duplicate document is 409 and never runs twice; at the depth limit 503 with Retry-After, recorded as refused; queued, running and succeeded or dead each recorded once; a worker killed mid-document, and the document still stored once"
        )
        func ingestion() async throws {
            let queue = uniqueName("ingest")
            var example = try await ExampleRun(
                "ingestion", queue: queue, settings: ["MAX_DEPTH": "3", "LEASE": "2s", "SLOW_SECONDS": "2"])
            defer { example.stopAll() }
            let setup = try await example.run("setup")
            #expect(setup.status == 0, "\(setup.standardError)")
            let parser = try await example.serve("parser", exporting: "PARSER_URL")
            let api = try await example.serve("serve", exporting: "API")
            var workers = try [example.start("worker"), example.start("worker")]

            // A document: 202 with its queued status; polling follows it to its end.
            let first = try await submit("alpha beta gamma", example)
            #expect(first.status == 202 && first.json["state"] as? String == "queued", "\(first.json)")
            #expect(first.jobID.hasPrefix("doc-"))
            var seen: [String] = []
            #expect(
                await eventually {
                    let (state, _, retryAfter) = try await status(first.jobID, api, queue: queue)
                    if seen.last != state { seen.append(state) }
                    if state != "succeeded" && retryAfter == nil { seen.append("no Retry-After while \(state)") }
                    return state == "succeeded"
                })
            #expect(Set(seen).isSubset(of: ["queued", "running", "succeeded"]), "\(seen)")
            #expect(seen.last == "succeeded")

            // The same document again: 409 naming the first job; the parser saw it once.
            let duplicate = try await submit("alpha beta gamma", example)
            #expect(duplicate.status == 409 && duplicate.jobID == first.jobID, "\(duplicate.json)")

            // A document that cannot be ingested: dead at once, with its reason, no retry.
            let unreadable = try await submit("an unreadable scan", example)
            #expect(unreadable.status == 202)
            let failed = try await status(unreadable.jobID, api, queue: queue, wait: "30s")
            #expect(failed.state == "dead", "\(failed.group)")
            #expect((failed.group["last_error"] as? String)?.contains("unreadable document") == true, "\(failed.group)")
            #expect(failed.group["retryable"] as? Bool == false && failed.group["attempts"] as? Int == 1)

            // At the depth limit (3 documents not yet done while no worker runs): 503 with
            // Retry-After, nothing written, and the refusal recorded in the queue's history.
            // The workers are stopped (SIGTERM) and gone first, so none takes a document meanwhile.
            for worker in workers { worker.signal(SIGTERM) }
            for worker in workers { #expect(await worker.waitForExit(killAfter: .seconds(30)) == 0) }
            var waiting: [String] = []
            for index in 0..<3 { waiting.append(try await submit("batch document \(index)", example).jobID) }
            let refused = try await submit("one document too many", example)
            #expect(refused.status == 503 && refused.retryAfter != nil, "\(refused.json)")
            #expect((refused.json["type"] as? String)?.hasSuffix("queue-full") == true)
            workers = try [example.start("worker"), example.start("worker")]
            for jobID in waiting {
                #expect(try await status(jobID, api, queue: queue, wait: "30s").state == "succeeded", "\(jobID)")
            }

            // A worker killed (kill -9) in the middle of a document: the other takes it after the
            // lease, and the parser stored it once (the handler's Idempotency-Key is the job id).
            let slow = try await submit("slow document to cut short", example)
            #expect(
                await eventually { try await parserCounts(slow.jobID, parser)["started"] == 1 }, "the document was being parsed")
            let running = try await status(slow.jobID, api, queue: queue)
            let consumer = running.group["consumer"] as? String ?? ""
            let victim = try #require(workers.first { consumer.hasSuffix("-\($0.pid)") }, "\(running.group)")
            victim.signal(SIGKILL)
            #expect(await eventually { try await status(slow.jobID, api, queue: queue).state == "succeeded" })
            let done = try await status(slow.jobID, api, queue: queue)
            #expect(done.group["attempts"] as? Int == 2, "\(done.group)")
            let slowCounts = try await parserCounts(slow.jobID, parser)
            #expect(slowCounts["stored"] == 1 && slowCounts["calls"] == 2, "\(slowCounts)")

            // The history (the queue's event stream): every state once; the refusal, and no run of it.
            let connection = try await TestRedis.connection()
            let events = try await QueueEvents(queue: try QueueName(queue), connection: connection).read(
                after: "0-0", count: 1000)
            for jobID in [first.jobID] + waiting {
                let states = events.filter { $0.jobID == jobID }.map { $0.state?.rawValue ?? "?" }
                #expect(states == ["queued", "running", "succeeded"], "\(jobID): \(states)")
            }
            let failedStates = events.filter { $0.jobID == unreadable.jobID }.map { $0.state?.rawValue ?? "?" }
            #expect(failedStates == ["queued", "running", "dead"], "\(failedStates)")
            let refusals = events.filter { $0.refusal != nil }
            #expect(refusals.count == 1 && refusals.first?.refusal == "queue_full", "\(refusals)")
            let refusedID = try #require(refusals.first?.jobID)
            #expect(refusedID.hasPrefix("doc-") && !([first.jobID, unreadable.jobID, slow.jobID] + waiting).contains(refusedID))
            #expect(events.filter { $0.jobID == refusedID }.count == 1, "refused, and nothing else: it never became a job")
            #expect(try await parserCounts(refusedID, parser)["calls"] == 0, "the refused document never ran")
            #expect(try await parserCounts(first.jobID, parser) == ["calls": 1, "started": 1, "stored": 1], "one run, one store")
        }
    }
}
