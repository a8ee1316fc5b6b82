import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// Workflows started with `ferry workflow` and run by `ferry worker` processes whose handlers are
/// shell commands (`--exec`) or an HTTP endpoint (`--push`).
@Suite("ferry workflow with worker processes")
struct WorkflowProcessTests {
    typealias Scratch = WorkerProcessTests.Scratch

    func state(_ s: TestQueue, _ id: String) async throws -> String? {
        let shown = try await s.ferry("workflow", "show", s.name, id, "--json")
        let object = try? JSONSerialization.jsonObject(with: Data(shown.outputBytes)) as? [String: Any]
        return (object?["workflow"] as? [String: Any])?["state"] as? String
    }

    @Test(
        "--exec steps read earlier results, write their result, progress and a block decision; ferry workflow show, list and resume follow it"
    )
    func execSteps() async throws {
        let s = try await TestQueue("wf-exec"), scratch = try Scratch()
        let document = scratch.path("flow.json")
        try #"""
        {"name": "pipeline", "steps": [
          {"name": "parse", "type": "parse", "weight": 2},
          {"name": "review", "type": "review"},
          {"name": "publish", "type": "publish"}]}
        """#.write(toFile: document, atomically: true, encoding: .utf8)
        // parse keeps the input upper-cased; review reads it, and blocks the first time; publish
        // records what it was given.
        let exec = """
            case "$FERRY_WORKFLOW_STEP" in
            parse) echo "20 reading" >> "$FERRY_OUTPUT_DIR/progress"; tr a-z A-Z > "$FERRY_OUTPUT_DIR/result" ;;
            review) cat "$FERRY_RESULTS_DIR/parse" > '\(scratch.path("seen-by-review"))'
                    if [ ! -e '\(scratch.path("reviewed"))' ]; then touch '\(scratch.path("reviewed"))'
                      echo "block the numbers need a second look" > "$FERRY_OUTPUT_DIR/decision"; fi
                    printf ok > "$FERRY_OUTPUT_DIR/result" ;;
            publish) cat "$FERRY_RESULTS_DIR/parse" "$FERRY_RESULTS_DIR/review" > '\(scratch.path("published"))' ;;
            esac
            """
        let worker = try WorkerProcessTests().startWorker(s.name, redisURL: s.url, exec: exec, scratch: scratch, name: "w0")
        defer { worker.signal(SIGKILL) }

        let started = try await s.ferry("workflow", "start", s.name, document, "--data", "quarterly report", "--id", "wf-1")
        #expect(started.status == 0 && started.lines == ["wf-1"], "\(started.standardError)")
        #expect(await eventually(.seconds(60)) { try await state(s, "wf-1") == "blocked" })
        #expect((try? String(contentsOfFile: scratch.path("seen-by-review"), encoding: .utf8)) == "QUARTERLY REPORT")
        let shown = try await s.ferry("workflow", "show", s.name, "wf-1")
        #expect(shown.standardOutput.contains("BLOCKED") && shown.standardOutput.contains("the numbers need a second look"))
        #expect(shown.standardOutput.contains("decision"))
        let listed = try await s.ferry("workflow", "list", s.name, "--state", "blocked")
        #expect(listed.lines.contains { $0.hasPrefix("wf-1 ") && $0.contains("pipeline") })

        let resumed = try await s.ferry("workflow", "resume", s.name, "wf-1")
        #expect(resumed.status == 0, "\(resumed.standardError)")
        #expect(await eventually(.seconds(60)) { try await state(s, "wf-1") == "succeeded" })
        #expect((try? String(contentsOfFile: scratch.path("published"), encoding: .utf8)) == "QUARTERLY REPORTok")
        let json = try await s.ferry("workflow", "show", s.name, "wf-1", "--json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.outputBytes)) as? [String: Any])
        let steps = try #require((object["workflow"] as? [String: Any])?["steps"] as? [[String: Any]])
        let parseJob = try #require(steps.first?["job"] as? [String: String])
        #expect(parseJob["progress"] == "100" && parseJob["stage"] == "reading", "\(parseJob)")

        let stepLines = scratch.lines("w0.log").filter { $0.contains(#""workflow_id":"wf-1""#) }
        #expect(stepLines.contains { $0.contains(#""event":"step_completed""#) && $0.contains(#""step":"parse""#) })
        #expect(stepLines.contains { $0.contains(#""event":"decision""#) && $0.contains(#""step":"review""#) })
        let inspected = try await s.ferry("inspect", s.name)
        #expect(inspected.standardOutput.contains("workflows: 1 succeeded"), "\(inspected.standardOutput)")

        let again = try await s.ferry("workflow", "start", s.name, document, "--id", "wf-1")
        #expect(again.standardOutput.contains("already started"))
        let bad = try await s.ferry("workflow", "resume", s.name, "wf-1")
        #expect(bad.status != 0 && bad.standardError.contains("only a blocked workflow resumes"))
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
    }

    @Test("--push steps get the workflow and earlier results in the request and answer results and decisions in JSON")
    func pushSteps() async throws {
        let s = try await TestQueue("wf-push"), scratch = try Scratch()
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        let definition = WorkflowDefinition("pushed") {
            WorkflowStep("first", type: "t")
            WorkflowStep("second", type: "t")
        }
        let workflows = Workflows(queue: s.queue, connection: s.redis)
        let reply = #"{"result": "from the endpoint"}"#.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        let worker = try ChildProcess(
            try ferryExecutable(),
            ["worker", s.name, "--push", server.url("/respond/200,reply=\(reply),progress=60%20halfway"), "--redis", s.url],
            standardOutput: scratch.path("w.log"), standardError: scratch.path("w.err"))
        defer { worker.signal(SIGKILL) }
        try await workflows.start(definition, id: "wf-p")
        #expect(await eventually(.seconds(60)) { try await workflows.status("wf-p")?.state == .succeeded })
        let second = try #require(server.requests.last?.json)
        let workflow = try #require(second["workflow"] as? [String: Any])
        #expect(workflow["id"] as? String == "wf-p" && workflow["step"] as? String == "second")
        let results = try #require(workflow["results"] as? [String: String])
        #expect(results["first"].flatMap { Data(base64Encoded: $0) } == Data("from the endpoint".utf8))
        #expect(server.requests.last?.headers["ferry-workflow-step"] == "second")
        let first = try await JobStatus.load(jobID: "wf-p/first", queue: s.queue, connection: s.redis)
        #expect(first?.fields["stage"] == "halfway", "the endpoint's Ferry-Progress header: \(first?.fields ?? [:])")
        #expect(
            try await workflows.results("wf-p") == [
                "first": Array("from the endpoint".utf8), "second": Array("from the endpoint".utf8),
            ])
        worker.signal(SIGTERM)
        _ = await worker.waitForExit()

        // An endpoint that decides: the workflow blocks after its first step.
        let blocking =
            #"{"decision": "block", "reason": "needs a person"}"#.addingPercentEncoding(withAllowedCharacters: .alphanumerics)
            ?? ""
        let decider = try ChildProcess(
            try ferryExecutable(), ["worker", s.name, "--push", server.url("/respond/200,reply=\(blocking)"), "--redis", s.url],
            standardOutput: scratch.path("d.log"), standardError: scratch.path("d.err"))
        defer { decider.signal(SIGKILL) }
        try await workflows.start(definition, id: "wf-q")
        #expect(await eventually(.seconds(60)) { try await workflows.status("wf-q")?.state == .blocked })
        #expect(try await workflows.status("wf-q")?.reason == "needs a person")
        decider.signal(SIGTERM)
        _ = await decider.waitForExit()
    }
}

extension WorkflowProcessTests {
    @Test(
        "kill -9 of worker processes at random points of a 1,000-workflow run: every workflow succeeds, no step runs more often than its attempts allow, the audit finds none stuck"
    )
    func killedWorkersMidRun() async throws {
        let s = try await TestQueue("wf-kill"), scratch = try Scratch()
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        let definition = WorkflowDefinition("chain") {
            WorkflowStep("a", type: "t", maxAttempts: 5)
            WorkflowStep("b", type: "t", maxAttempts: 5)
            WorkflowStep("c", type: "t", maxAttempts: 5)
        }
        let workflows = Workflows(queue: s.queue, connection: s.redis)
        let count = 1000
        for index in 0..<count { try await workflows.start(definition, id: "k-\(index)") }
        var generation = 0
        func start(_ index: Int) throws -> ChildProcess {
            generation += 1
            return try ChildProcess(
                try ferryExecutable(),
                [
                    "worker", s.name, "--push", server.url(), "--consumer", "w\(index)-\(generation)", "--concurrency", "16",
                    "--lease", "2s", "--redis", s.url,
                ],
                standardOutput: scratch.path("w\(index)-\(generation).log"),
                standardError: scratch.path("w\(index)-\(generation).err"))
        }
        var workers = try (0..<3).map(start)
        defer { workers.forEach { $0.signal(SIGKILL) } }
        func succeeded() async throws -> Int {
            Int(try await s.redis.send(RedisCommand("ZCARD", [.string(s.keys.workflowIndex(state: "succeeded"))])).integer ?? 0)
        }
        // Kill a random worker at random points while the run goes on, and start another in its place.
        // (A fast machine may finish the run before the fifth kill: then there is nothing left to interrupt.)
        var kills = 0
        for _ in 0..<5 {
            let before = server.requests.count
            var finished = false
            #expect(
                await eventually(.seconds(60)) {
                    finished = try await succeeded() == count
                    return server.requests.count > before + 100 || finished
                }, "the run goes on")
            if finished { break }
            kills += 1
            let victim = Int.random(in: 0..<workers.count)
            workers[victim].signal(SIGKILL)
            _ = await workers[victim].waitForExit()
            workers[victim] = try start(victim)
        }
        #expect(kills >= 1, "at least one worker was killed mid-run")
        #expect(await eventually(.seconds(240)) { try await succeeded() == count }, "every workflow succeeded")
        var runs: [String: Int] = [:]
        for request in server.requests {
            guard let jobID = request.message?["jobId"] as? String else { continue }
            runs[String(jobID.prefix { $0 != "#" }), default: 0] += 1
        }
        #expect(runs.count == count * 3, "every step ran")
        #expect(runs.values.allSatisfy { $0 <= 5 }, "no step ran more than its 5 attempts: \(runs.values.max() ?? 0)")
        #expect(try await workflows.check().isEmpty)
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers { _ = await worker.waitForExit() }
    }
}
