import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

/// What step handlers saw: each step's runs, with the results they were given.
final class StepLog: Sendable {
    private let runs = Mutex<[(step: String, job: String, results: [String: String])]>([])
    func record(_ job: Job) {
        let results = (job.workflow?.results ?? [:]).mapValues { String(decoding: $0, as: UTF8.self) }
        runs.withLock { $0.append((job.workflow?.step ?? "?", job.id, results)) }
    }
    func steps() -> [String] { runs.withLock { $0.map(\.step) } }
    func results(of step: String) -> [[String: String]] { runs.withLock { $0.filter { $0.step == step }.map(\.results) } }
    func count(_ step: String) -> Int { runs.withLock { $0.filter { $0.step == step }.count } }
}

@Suite("Workflow definitions")
struct WorkflowDefinitionTests {
    @Test("a definition is a chain unless a step names what it runs after; bad ones are refused naming the step")
    func definitions() throws {
        let chain = WorkflowDefinition("ingest") {
            WorkflowStep("parse", type: "parse")
            WorkflowStep("chunk", type: "chunk")
            WorkflowStep("embed", type: "embed")
        }
        #expect(chain.dependencies == ["parse": [], "chunk": ["parse"], "embed": ["chunk"]])
        try chain.validate()

        let json = Array(
            #"{"name": "d", "steps": [{"name": "a", "type": "t"}, {"name": "b", "type": "t", "after": ["a"], "on_failure": "continue", "weight": 3}]}"#
                .utf8)
        let decoded = try WorkflowDefinition(json: json)
        #expect(decoded.steps[1].onFailure == .continue && decoded.steps[1].weight == 3)

        func refusal(_ steps: [WorkflowStep]) -> String {
            do {
                try WorkflowDefinition(name: "w", steps: steps).validate()
                return "accepted"
            } catch { return error.message }
        }
        #expect(refusal([]).contains("no steps"))
        #expect(refusal([WorkflowStep("a", type: "t"), WorkflowStep("a", type: "t")]).contains("two steps are named a"))
        #expect(refusal([WorkflowStep("a", type: "t", after: ["z"])]).contains("depends on z, which is not a step"))
        #expect(
            refusal([WorkflowStep("a", type: "t", after: ["b"]), WorkflowStep("b", type: "t", after: ["a"])]).contains("cycle"))
        #expect(refusal([WorkflowStep("a/b", type: "t")]).contains("letters, digits"))
        #expect(throws: FerryError.self) { try WorkflowDefinition(json: Array(#"{"name": "x", "steps": [{"type": "t"}]}"#.utf8)) }
    }
}

extension WorkerTests {
    /// A handler for every step type of these tests: records the run, keeps `<step>-result`, and
    /// then does what `act` says for the step (nil: proceed).
    func stepHandler(_ log: StepLog, act: @escaping @Sendable (Job) async throws -> Void = { _ in }) -> JobHandlerClosure {
        JobHandlerClosure { job in
            log.record(job)
            try job.setResult(Array("\(job.workflow?.step ?? "?")-result".utf8))
            try await act(job)
        }
    }

    func workflows(_ setup: Setup) -> Workflows { Workflows(queue: setup.queue, connection: setup.redis) }

    func state(_ setup: Setup, _ id: String) async throws -> Workflows.State? { try await workflows(setup).status(id)?.state }

    @Test("a 4-step chain runs in order, each step given the results before it, with progress visible while it runs")
    func chainRuns() async throws {
        let setup = try await Setup("wf-chain")
        let log = StepLog()
        let gate = Mutex(false)
        let handler = stepHandler(log) { job in
            if job.workflow?.step == "chunk" {
                await job.reportProgress(50, stage: "chunking")
                while !gate.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
            }
        }
        let definition = WorkflowDefinition("ingest") {
            WorkflowStep("fetch", type: "t")
            WorkflowStep("parse", type: "t", weight: 2)
            WorkflowStep("chunk", type: "t")
            WorkflowStep("embed", type: "t")
        }
        let receipt = try await workflows(setup).start(definition, data: Array("doc-7".utf8), id: "wf-chain-1")
        #expect(receipt.id == "wf-chain-1" && !receipt.isDuplicate)
        try await running(setup.worker(["t": handler])) {
            #expect(await eventually(.seconds(60)) { log.count("chunk") == 1 })
            let midway = try #require(try await workflows(setup).status("wf-chain-1"))
            // fetch (1) and parse (2) of weight 5 done, chunk (1) half way: 70%.
            #expect(midway.state == .running && midway.progress == 70, "\(midway.progress)")
            #expect(midway.steps.map(\.state) == ["succeeded", "succeeded", "queued", "waiting"])
            #expect(midway.steps[2].job?["stage"] == "chunking")
            gate.withLock { $0 = true }
            #expect(await eventually(.seconds(30)) { try await state(setup, "wf-chain-1") == .succeeded })
        }
        #expect(log.steps() == ["fetch", "parse", "chunk", "embed"])
        #expect(log.results(of: "embed").first == ["fetch": "fetch-result", "parse": "parse-result", "chunk": "chunk-result"])
        let done = try #require(try await workflows(setup).status("wf-chain-1"))
        #expect(done.progress == 100 && done.finishedAt != nil)
        #expect(done.steps.allSatisfy { $0.job?["state"] == "succeeded" })
        let events = try await workflows(setup).history("wf-chain-1").map(\.event)
        #expect(events.first == "started" && events.last == "succeeded" && events.filter { $0 == "step_succeeded" }.count == 4)
        #expect(try await workflows(setup).list(state: .succeeded).contains("wf-chain-1"))
        let again = try await workflows(setup).start(definition, id: "wf-chain-1")
        #expect(again.isDuplicate, "an id starts one workflow")
        #expect(try await workflows(setup).check().isEmpty)
    }

    @Test("the audit finds a running workflow whose queued step's job is gone (deleted by hand), and none otherwise")
    func auditFindsStuck() async throws {
        let setup = try await Setup("wf-audit")
        let definition = WorkflowDefinition("a") { WorkflowStep("only", type: "t") }
        try await workflows(setup).start(definition, id: "wf-ok")
        try await workflows(setup).start(definition, id: "wf-gone")
        #expect(try await workflows(setup).check().isEmpty, "unread steps are alive")
        let entry = try #require(
            try await setup.redis.send(RedisCommand("HGET", [.string(setup.keys.workflow(id: "wf-gone")), "s.only.entry_id"]))
                .string)
        try await setup.redis.send(RedisCommand("XDEL", [.string(setup.keys.jobs), .string(entry)]))
        let stuck = try await workflows(setup).check()
        #expect(stuck.map(\.id) == ["wf-gone"] && stuck.first?.step == "only", "\(stuck)")
        let cli = try await setup.ferry("workflow", "check", setup.name)
        #expect(cli.status == 1 && cli.standardOutput.contains("wf-gone"))
    }

    @Test("a diamond fans out and in: the join runs once, with both branches' results")
    func diamond() async throws {
        let setup = try await Setup("wf-diamond")
        let log = StepLog()
        let definition = WorkflowDefinition("diamond") {
            WorkflowStep("expand", type: "t")
            WorkflowStep("left", type: "t", after: ["expand"])
            WorkflowStep("right", type: "t", after: ["expand"])
            WorkflowStep("join", type: "t", after: ["left", "right"])
        }
        let ids = try await (0..<5).asyncMap { _ in try await workflows(setup).start(definition).id }
        try await running(setup.worker(["t": stepHandler(log)]) { $0.concurrency = 8 }) {
            #expect(
                await eventually(.seconds(30)) {
                    var all = true
                    for id in ids where try await state(setup, id) != .succeeded { all = false }
                    return all
                })
        }
        #expect(log.count("join") == 5, "each join ran once")
        #expect(log.results(of: "join").allSatisfy { $0["left"] == "left-result" && $0["right"] == "right-result" })
        #expect(try await workflows(setup).check().isEmpty)
    }

    @Test("a dead-lettered step: fail_workflow fails the workflow, continue goes on, block waits for a resume")
    func stepFailurePolicies() async throws {
        let setup = try await Setup("wf-fail")
        let log = StepLog()
        let failing = Mutex<Set<String>>([])
        let handler = stepHandler(log) { job in
            if failing.withLock({ $0.contains(job.workflow?.id ?? "") }) && job.workflow?.step == "flaky" {
                throw PermanentJobError("flaky broke")
            }
        }
        func flow(_ policy: WorkflowStep.OnFailure) -> WorkflowDefinition {
            WorkflowDefinition("policy") {
                WorkflowStep("first", type: "t")
                WorkflowStep("flaky", type: "t", onFailure: policy)
                WorkflowStep("last", type: "t")
            }
        }
        failing.withLock { $0 = ["wf-f", "wf-c", "wf-b"] }
        try await running(setup.worker(["t": handler])) {
            try await workflows(setup).start(flow(.failWorkflow), id: "wf-f")
            try await workflows(setup).start(flow(.continue), id: "wf-c")
            try await workflows(setup).start(flow(.block), id: "wf-b")
            #expect(await eventually(.seconds(30)) { try await state(setup, "wf-f") == .failed })
            #expect(await eventually(.seconds(30)) { try await state(setup, "wf-c") == .succeeded })
            #expect(await eventually(.seconds(30)) { try await state(setup, "wf-b") == .blocked })
            let failed = try #require(try await workflows(setup).status("wf-f"))
            #expect(failed.reason == "step flaky was dead-lettered" && failed.atStep == "flaky")
            #expect(failed.steps.last?.state == "cancelled", "the step after it never runs")
            #expect(try await workflows(setup).list(state: .blocked).contains("wf-b"))

            // Resumed, the blocked step runs again: fixed now, the rest follows.
            failing.withLock { $0 = [] }
            try await workflows(setup).resume("wf-b")
            #expect(await eventually(.seconds(30)) { try await state(setup, "wf-b") == .succeeded })
        }
        #expect(try await setup.deadEntries().count == 3)
        await #expect(throws: FerryError.self) { try await workflows(setup).resume("wf-f") }
        await #expect(throws: FerryError.self) { try await workflows(setup).cancel("nothing-here") }
    }

    @Test("a supervisor retries the comparison step twice, then proceeds; another blocks and is resumed from a named step")
    func supervisorDecisions() async throws {
        let setup = try await Setup("wf-decide")
        let log = StepLog()
        let handler = stepHandler(log) { job in
            guard job.workflow?.step == "supervise" else { return }
            let runs = log.count("compare")
            if job.workflow?.id == "wf-retry" && runs < 3 {
                throw WorkflowDecision.retry(step: "compare", after: .milliseconds(50))
            }
            if job.workflow?.id == "wf-block" && log.count("supervise") == 1 {
                throw WorkflowDecision.block(reason: "a person checks the comparison")
            }
        }
        let definition = WorkflowDefinition("review") {
            WorkflowStep("gather", type: "t")
            WorkflowStep("compare", type: "t", maxAttempts: 3)
            WorkflowStep("supervise", type: "t")
            WorkflowStep("publish", type: "t")
        }
        try await running(setup.worker(["t": handler])) {
            try await workflows(setup).start(definition, id: "wf-retry")
            #expect(await eventually(.seconds(90)) { try await state(setup, "wf-retry") == .succeeded })
        }
        #expect(log.count("compare") == 3 && log.count("supervise") == 3 && log.count("gather") == 1)
        let history = try await workflows(setup).history("wf-retry")
        #expect(history.filter { $0.event == "decision" }.map(\.detail) == ["retry: compare 50", "retry: compare 50"])
        let status = try #require(try await workflows(setup).status("wf-retry"))
        #expect(status.steps.first { $0.name == "compare" }?.jobID == "wf-retry/compare#3")

        let blocked = StepLog()
        try await running(
            setup.worker([
                "t": stepHandler(blocked) { job in
                    if job.workflow?.step == "supervise" && blocked.count("supervise") == 1 {
                        throw WorkflowDecision.block(reason: "a person checks the comparison")
                    }
                }
            ])
        ) {
            try await workflows(setup).start(definition, id: "wf-block")
            #expect(await eventually(.seconds(90)) { try await state(setup, "wf-block") == .blocked })
            let stopped = try #require(try await workflows(setup).status("wf-block"))
            #expect(stopped.reason == "a person checks the comparison" && stopped.atStep == "supervise")
            #expect(blocked.count("publish") == 0)
            try await workflows(setup).resume("wf-block", from: "compare")
            #expect(await eventually(.seconds(90)) { try await state(setup, "wf-block") == .succeeded })
        }
        #expect(blocked.steps() == ["gather", "compare", "supervise", "compare", "supervise", "publish"])
        #expect(try await workflows(setup).check().isEmpty)
    }

    @Test("a step whose entry is deleted while it runs ends its workflow by its on_failure, never leaving it waiting")
    func deletedStepEndsWorkflow() async throws {
        let setup = try await Setup("wf-deleted")
        let log = StepLog()
        let handler = stepHandler(log) { job in
            if job.workflow?.step == "slow" { try await Task.sleep(for: .seconds(30)) }
        }
        let definition = WorkflowDefinition("d") {
            WorkflowStep("slow", type: "t")
            WorkflowStep("after", type: "t")
        }
        try await running(setup.worker(["t": handler]) { $0.lease = .seconds(1) }) {
            try await workflows(setup).start(definition, id: "wf-del")
            #expect(await eventually(.seconds(60)) { log.count("slow") == 1 }, "the step started")
            let entry = try #require(
                try await setup.redis.send(RedisCommand("HGET", [.string(setup.keys.workflow(id: "wf-del")), "s.slow.entry_id"]))
                    .string)
            try await setup.redis.send(RedisCommand("XDEL", [.string(setup.keys.jobs), .string(entry)]))
            #expect(await eventually(.seconds(30)) { try await state(setup, "wf-del") == .failed })
        }
        #expect(try await workflows(setup).status("wf-del")?.reason == "step slow was dead-lettered")
        #expect(log.count("after") == 0)
    }

    @Test("a workflow past its deadline fails, its running step cancelled, and nothing after it starts")
    func deadlinePasses() async throws {
        let setup = try await Setup("wf-deadline")
        let log = StepLog()
        let handler = stepHandler(log) { job in
            if job.workflow?.step == "slow" { try await Task.sleep(for: .seconds(60)) }
        }
        // Long enough that the step starts before it on a loaded 2-core machine.
        let definition = WorkflowDefinition("late", deadline: .seconds(30)) {
            WorkflowStep("slow", type: "t")
            WorkflowStep("after", type: "t")
        }
        #expect(
            try WorkflowDefinition(json: Array(#"{"name": "x", "deadline_ms": 500, "steps": [{"name": "a", "type": "t"}]}"#.utf8))
                .deadlineMilliseconds == 500)
        try await running(setup.worker(["t": handler]) { $0.lease = .seconds(1) }) {
            // The deadline counts from the start: start once the worker is ready to read (its
            // consumer is made then), so a slow start on a loaded machine does not use it up.
            #expect(
                await eventually(.seconds(60)) {
                    let consumers = try await setup.redis.send(
                        RedisCommand("XINFO", ["CONSUMERS", .string(setup.keys.jobs), "workers"]))
                    return consumers.array?.isEmpty == false
                })
            try await workflows(setup).start(definition, id: "wf-late")
            #expect(await eventually(.seconds(60)) { log.count("slow") == 1 }, "the step started")
            // The 30 s deadline counts from the start, before the step was seen: wait past it.
            #expect(await eventually(.seconds(90)) { try await state(setup, "wf-late") == .failed })
            #expect(
                await eventually(.seconds(30)) {
                    try await JobStatus.load(jobID: "wf-late/slow", queue: setup.queue, connection: setup.redis)?.state
                        == .cancelled
                })
        }
        #expect(try await workflows(setup).status("wf-late")?.reason == "its deadline passed")
        #expect(log.count("after") == 0)
        let deadlines = setup.keys.prefix + ":wf:deadlines"
        #expect(try await setup.redis.send(RedisCommand("ZCARD", [.string(deadlines)])).integer == 0, "it left the deadlines")
    }

    @Test("cancelling a running workflow cancels its queued step and starts nothing after it")
    func cancelWorkflow() async throws {
        let setup = try await Setup("wf-cancel")
        let log = StepLog()
        let handler = stepHandler(log) { job in
            if job.workflow?.step == "slow" { try await Task.sleep(for: .seconds(60)) }
        }
        let definition = WorkflowDefinition("c") {
            WorkflowStep("slow", type: "t")
            WorkflowStep("after", type: "t")
        }
        try await running(setup.worker(["t": handler]) { $0.lease = .seconds(1) }) {
            try await workflows(setup).start(definition, id: "wf-x")
            #expect(await eventually(.seconds(60)) { log.count("slow") == 1 }, "the step started")
            try await workflows(setup).cancel("wf-x")
            #expect(try await state(setup, "wf-x") == .cancelled)
            #expect(
                await eventually(.seconds(30)) {
                    try await JobStatus.load(jobID: "wf-x/slow", queue: setup.queue, connection: setup.redis)?.state == .cancelled
                })
        }
        #expect(log.count("after") == 0)
        await #expect(throws: FerryError.self) { try await workflows(setup).cancel("wf-x") }
    }
}

extension Sequence {
    /// Maps in order, awaiting each.
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var mapped: [T] = []
        for element in self { mapped.append(try await transform(element)) }
        return mapped
    }
}
