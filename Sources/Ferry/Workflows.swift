import FerryRedis
import Foundation

/// A queue's workflows: start, read, list, cancel and resume (docs/design.md, "Workflows"), so the
/// CLI, an HTTP API and a dashboard do the same thing the same way. Steps run as the queue's jobs;
/// the scripts that end them move their workflows.
public struct Workflows: QueueStore {
    /// The queue, its keys and the connection every call uses.
    public let scope: QueueScope

    /// A store of `scope.queue`; nothing is sent until a method is called.
    public init(_ scope: QueueScope) { self.scope = scope }

    static let startScript = FerryScripts.script("wf_start", EmbeddedLuaScripts.wf_start)
    static let controlScript = FerryScripts.script("wf_control", EmbeddedLuaScripts.wf_control)
    static let checkScript = FerryScripts.script("wf_check", EmbeddedLuaScripts.wf_check)
    static let expireScript = FerryScripts.script("wf_expire", EmbeddedLuaScripts.wf_expire)

    /// Where a workflow is.
    public enum State: String, Sendable, Hashable, Codable, CaseIterable {
        /// Its steps run.
        case running
        /// Stopped for a person: a handler's `block` decision or a step dead-lettered under
        /// `on_failure: block`; `resume` goes on, `cancel` ends it.
        case blocked
        /// Every step ended (succeeded, or dead-lettered under `continue`).
        case succeeded
        /// A step was dead-lettered or cancelled under `fail_workflow`, a handler decided `fail`,
        /// or a retry decision found its step's attempts spent.
        case failed
        /// Cancelled on request.
        case cancelled

        /// It will not move again.
        public var isFinished: Bool { self == .succeeded || self == .failed || self == .cancelled }
    }

    /// What starting did.
    public struct Receipt: Sendable, Hashable {
        /// The workflow's id: the new one, or for a duplicate the one first started.
        public var id: String
        /// True when the idempotency key (or the id) was already used: nothing was started.
        public var isDuplicate: Bool
    }

    /// Starts `definition` with `data` as its input, in one script: its state, its index entry,
    /// its history and its first steps' jobs.
    ///
    /// - Parameters:
    ///   - id: its id (letters, digits, `.`, `_`, `-`; at most 100); a new UUID when nil.
    ///   - idempotencyKey: starts it at most once per key within `dedupWindow`.
    ///   - group: the consumer group whose step ends move it (the group its workers read with).
    ///   - maxPayloadBytes: the largest input, as the workers' limit (1 MiB by default). One over
    ///     ``PayloadReference/defaultInlineLimit`` is kept once, in `ferry:{Q}:wf:<id>:payloads`,
    ///     and each step's job names it (`data_ref` `workflow`) instead of carrying a copy.
    /// - Throws: ``FerryError`` (invalid input) for a definition, id or input it refuses.
    @discardableResult
    public func start(
        _ definition: WorkflowDefinition, data: [UInt8] = [], id: String? = nil, idempotencyKey: String? = nil,
        group: String = "workers", dedupWindow: Duration = .seconds(86_400),
        maxPayloadBytes: Int = WireFormat.defaultMaxPayloadBytes
    ) async throws(FerryError) -> Receipt {
        try definition.validate()
        guard data.count <= maxPayloadBytes else {
            throw FerryError(
                .invalidInput,
                "the workflow's input is \(data.count) bytes, over the limit of \(maxPayloadBytes) bytes; store large content elsewhere (object storage) and pass a reference to it"
            )
        }
        let reference = data.count > PayloadReference.defaultInlineLimit ? PayloadReference(of: data, in: .workflow) : nil
        let id = id ?? UUID().uuidString.lowercased()
        try Self.validate(id: id)
        var scriptKeys: [RedisArgument] = [.string(keys.jobs), .string(keys.workflow(id: id))]
        if let idempotencyKey { scriptKeys.append(.string(keys.workflowDedup(idempotencyKey: idempotencyKey))) }
        var arguments: [RedisArgument] = [
            .string(id), .string(definition.name), .bytes(data), .string(group),
            idempotencyKey == nil ? "" : .integer(dedupWindow.milliseconds),
            .integer(Int64(definition.steps.reduce(0) { $0 + $1.weight })),
            definition.deadlineMilliseconds.map { .integer(Int64($0)) } ?? "",
            reference.map { .string("\($0.sha256) \($0.size)") } ?? "",
        ]
        for step in definition.compiledSteps(defaultAttempts: RetryPolicy().maxAttempts) {
            arguments += [.string(step.name), .string(step.spec)]
        }
        let reply = try await send(Self.startScript.command(keys: scriptKeys, arguments: arguments))
        let parts = reply.array ?? []
        return Receipt(id: parts.dropFirst().first?.string ?? id, isDuplicate: parts.first?.integer != 1)
    }

    /// Checks a workflow id: it goes into keys and job ids as it is.
    static func validate(id: String) throws(FerryError) {
        guard !id.isEmpty, id.count <= 100,
            id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") })
        else {
            throw FerryError(
                .invalidInput,
                "a workflow id is 1 to 100 letters, digits, '.', '_' or '-' (got \"\(id)\"); omit it for a new UUID")
        }
        // Their keys share ferry:{Q}:wf: with the queue's own workflow keys.
        guard !["deadlines", "idem", "idx"].contains(id) else {
            throw FerryError(.invalidInput, "the workflow id \"\(id)\" names one of the queue's own keys; choose another")
        }
    }

    /// One step of a workflow as it stands.
    public struct StepStatus: Sendable, Hashable, Codable {
        /// The step's name.
        public var name: String
        /// `waiting` (for its dependencies), `queued` (its job is in the queue, or running),
        /// `succeeded`, `dead`, `cancelled`.
        public var state: String
        /// Its current run's job id (`<workflow id>/<step>`, `#<run>` from the second run).
        public var jobID: String?
        /// How often it was added as a job.
        public var runs: Int
        /// Its current run's job status in the workflow's group: `queued`, `running`,
        /// `retrying`, ... with attempts, `last_error`, `error_class`, `processing_ms`,
        /// `progress`, `stage` (``JobStatus``); nil before it runs or once expired.
        public var job: [String: String]?
    }

    /// A workflow as it stands.
    public struct Status: Sendable, Hashable, Codable {
        /// Its id.
        public var id: String
        /// Its definition's name.
        public var name: String
        /// Where it is.
        public var state: State
        /// 0-100: the weights of the steps that ended, and the progress running steps report.
        public var progress: Int
        /// The group whose step ends move it.
        public var group: String
        /// Why it blocked or failed, and at which step.
        public var reason: String?
        public var atStep: String?
        /// Times, ms since the epoch.
        public var createdAt: Int64?
        public var updatedAt: Int64?
        public var finishedAt: Int64?
        /// Its steps, in definition order.
        public var steps: [StepStatus]
    }

    /// The workflow `id` as it stands; nil when there is none (never started, or expired).
    public func status(_ id: String) async throws(FerryError) -> Status? {
        let hash = QueueInspector.fields(try await send(RedisCommand("HGETALL", [.string(keys.workflow(id: id))])))
            .compactMapValues(\.string)
        guard let state = hash["state"].flatMap(State.init(rawValue:)) else { return nil }
        let group = hash["group"] ?? "workers"
        // Steps in definition order: their specs were written in it, and `s.<name>.runs` with them.
        let names = hash.keys.filter { $0.hasPrefix("step.") }.map { String($0.dropFirst(5)) }
        let order = Dictionary(uniqueKeysWithValues: names.map { ($0, Self.position(of: $0, in: hash)) })
        var steps: [StepStatus] = []
        var weightRunning = 0.0
        for name in names.sorted(by: { (order[$0] ?? 0, $0) < (order[$1] ?? 0, $1) }) {
            var step = StepStatus(
                name: name, state: hash["s.\(name).state"] ?? "waiting", jobID: hash["s.\(name).job_id"],
                runs: Int(hash["s.\(name).runs"] ?? "0") ?? 0)
            if let jobID = step.jobID {
                step.job = try await JobStatusRecord.load(jobID: jobID, queue: queue, connection: connection)?
                    .status(group: group).fields
            }
            if step.state == "queued", let percent = step.job?["progress"].flatMap(Double.init),
                let spec = hash["step.\(name)"].flatMap(Self.weight(ofSpec:))
            {
                weightRunning += Double(spec) * percent / 100
            }
            steps.append(step)
        }
        let total = Double(hash["weight"] ?? "1") ?? 1
        let done = Double(hash["weight_done"] ?? "0") ?? 0
        return Status(
            id: id, name: hash["name"] ?? "", state: state,
            progress: state == .succeeded ? 100 : min(Int((done + weightRunning) * 100 / max(total, 1)), 99),
            group: group, reason: hash["reason"], atStep: hash["at_step"], createdAt: hash["created_at"].flatMap { Int64($0) },
            updatedAt: hash["updated_at"].flatMap { Int64($0) }, finishedAt: hash["finished_at"].flatMap { Int64($0) },
            steps: steps)
    }

    /// A step's place in its definition: its spec's `order`.
    private static func position(of step: String, in hash: [String: String]) -> Int {
        guard let spec = hash["step.\(step)"], let data = spec.data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return 0 }
        return object["order"] as? Int ?? 0
    }

    private static func weight(ofSpec spec: String) -> Int? {
        guard let data = spec.data(using: .utf8), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return nil }
        return object["weight"] as? Int
    }

    /// One event of a workflow's history: a step's end, a decision, a block, a resume, its end.
    public struct Event: Sendable, Hashable, Codable {
        /// `started`, `step_succeeded`, `step_dead`, `step_cancelled`, `decision`, `blocked`,
        /// `resumed`, `succeeded`, `failed`, `cancelled`; `stale_<outcome>` for the end of a run
        /// the workflow no longer waited for.
        public var event: String
        /// The step it concerns ('' for the workflow).
        public var step: String
        /// The decision and its reason, the job id, or why.
        public var detail: String
        /// When, ms since the epoch.
        public var at: Int64
    }

    /// The workflow's history, oldest first (at most about the last 1,000 events).
    public func history(_ id: String) async throws(FerryError) -> [Event] {
        let reply = try await send(RedisCommand("XRANGE", [.string(keys.workflow(id: id) + ":history"), "-", "+"]))
        return StreamEntry.entries(from: reply).map { entry in
            Event(
                event: entry.text(of: "event") ?? "", step: entry.text(of: "step") ?? "",
                detail: entry.text(of: "detail") ?? "", at: Int64(entry.text(of: "at") ?? "0") ?? 0)
        }
    }

    /// The results its steps kept, by step name.
    ///
    /// - Throws: ``FerryError``: ``FerryError/Code/notFound`` when a large result is gone or
    ///   differs from its reference.
    public func results(_ id: String) async throws(FerryError) -> [String: [UInt8]] {
        do {
            return try await Self.results(of: id, keys: keys) { (commands) throws(RedisError) in
                try await connection.pipeline(commands)
            }
        } catch let error as RedisError {
            throw FerryError(error)
        } catch let error as PermanentJobError {
            throw FerryError(.notFound, error.message)
        } catch {
            throw FerryError(.notFound, "\(error)")
        }
    }

    /// The results workflow `id`'s steps kept (but `step`'s own), by step name: one `HGETALL`, and
    /// one `HMGET` of `:payloads` for those kept by reference (`<step>:ref` is '<sha256> <size>'),
    /// each checked against its reference.
    ///
    /// - Throws: ``PermanentJobError`` (`payload_missing`, `payload_corrupt`) for a large result
    ///   gone or changed; ``RedisError`` when Redis fails.
    static func results(
        of id: String, keys: QueueKeys, except step: String? = nil,
        pipeline: ([RedisCommand]) async throws(RedisError) -> [RedisReply]
    ) async throws -> [String: [UInt8]] {
        let flat = try await pipeline([RedisCommand("HGETALL", [.string(keys.workflow(id: id) + ":results")])])[0].array ?? []
        var results: [String: [UInt8]] = [:]
        var references: [(name: String, reference: PayloadReference)] = []
        var index = 0
        while index + 1 < flat.count {
            defer { index += 2 }
            guard let field = flat[index].string else { continue }
            if field.hasSuffix(":ref") {
                let name = String(field.dropLast(4))
                let parts = (flat[index + 1].string ?? "").split(separator: " ")
                guard name != step, parts.count == 2, let size = Int(parts[1]) else { continue }
                references.append((name, PayloadReference(place: .workflow, sha256: String(parts[0]), size: size)))
            } else if field != step {
                results[field] = flat[index + 1].bytes ?? []
            }
        }
        if references.isEmpty { return results }
        let payloads = keys.workflowPayloads(id: id)
        let fetched =
            try await pipeline([RedisCommand("HMGET", [.string(payloads)] + references.map { .string($0.name) })])[0].array ?? []
        for (position, (name, reference)) in references.enumerated() {
            results[name] = try reference.verify(
                position < fetched.count ? fetched[position].bytes : nil, place: "\(payloads) field \(name)")
        }
        return results
    }

    /// The ids of workflows in `state`, most recently moved there first.
    public func list(state: State, limit: Int = 100) async throws(FerryError) -> [String] {
        try await send(
            RedisCommand(
                "ZRANGE",
                [
                    .string(keys.workflowIndex(state: state.rawValue)), "+inf", "-inf", "BYSCORE", "REV", "LIMIT", 0,
                    .integer(Int64(limit)),
                ])
        ).array?.compactMap(\.string) ?? []
    }

    /// Cancels the workflow: its queued steps' jobs are asked to cancel, its waiting steps never
    /// start, and it ends `cancelled`.
    ///
    /// - Throws: ``FerryError`` `notFound` for an unknown workflow, `invalidInput` for one that ended.
    public func cancel(
        _ id: String, keepSucceeded: Duration = .seconds(3600), keepFailed: Duration = .seconds(604_800)
    )
        async throws(FerryError)
    {
        try await control("cancel", id, from: nil, keepSucceeded: keepSucceeded, keepFailed: keepFailed)
    }

    /// Resumes a blocked workflow: from `step` (run again, with every step after it), or where it
    /// stopped (the blocked step run again when it was dead-lettered, the steps after it when its
    /// handler blocked).
    ///
    /// - Throws: ``FerryError`` `notFound` for an unknown workflow or step, `invalidInput` for one
    ///   that is not blocked.
    public func resume(
        _ id: String, from step: String? = nil, keepSucceeded: Duration = .seconds(3600),
        keepFailed: Duration = .seconds(604_800)
    ) async throws(FerryError) {
        try await control("resume", id, from: step, keepSucceeded: keepSucceeded, keepFailed: keepFailed)
    }

    private func control(
        _ action: String, _ id: String, from step: String?, keepSucceeded: Duration, keepFailed: Duration
    ) async throws(FerryError) {
        let reply = try await send(
            Self.controlScript.command(
                keys: [.string(keys.jobs), .string(keys.workflow(id: id))],
                arguments: [
                    .string(action), .string(id), .string(step ?? ""), .integer(keepSucceeded.milliseconds),
                    .integer(keepFailed.milliseconds),
                ]))
        let parts = (reply.array ?? []).compactMap(\.string)
        switch parts.first {
        case "ok": return
        case "missing":
            throw FerryError(.notFound, "queue \(queue) has no workflow \(id); ferry workflow list \(queue) lists them")
        case "ended": throw FerryError(.invalidInput, "workflow \(id) has already ended (\(parts.last ?? "")); nothing to cancel")
        case "not_blocked":
            throw FerryError(.invalidInput, "workflow \(id) is \(parts.last ?? "not blocked"); only a blocked workflow resumes")
        case "unknown_step": throw FerryError(.notFound, "workflow \(id) has no step \(parts.last ?? "")")
        default: throw FerryError(RedisError(kind: .protocolError, message: "unexpected reply from wf_control: \(reply)"))
        }
    }

    /// A running workflow that can no longer move: a step it waits on whose job can no longer end
    /// it, or every step ended while it still runs.
    public struct Stuck: Sendable, Hashable, Codable {
        /// The workflow.
        public var id: String
        /// The step ('' for the workflow as a whole).
        public var step: String
        /// Why it cannot move.
        public var why: String
    }

    /// The audit (`ferry workflow check`): the running workflows (at most `limit`) that can no
    /// longer move. Every end of a step moves its workflow in the same script, so this finds
    /// none unless someone deleted keys by hand or a bug is at work.
    public func check(limit: Int = 10_000) async throws(FerryError) -> [Stuck] {
        let reply = try await send(
            Self.checkScript.command(
                keys: [.string(keys.jobs)], arguments: [.string(keys.delayedPrefix), .integer(Int64(limit))]))
        return (reply.array ?? []).compactMap { item in
            guard let parts = item.array?.compactMap(\.string), parts.count == 3 else { return nil }
            return Stuck(id: parts[0], step: parts[1], why: parts[2])
        }
    }

    /// Fails the workflows whose deadline has passed (`wf_expire.lua`), their queued steps asked to
    /// cancel: any worker calls it about every second. Returns their ids.
    @discardableResult
    public func expireOverdue(keepFailed: Duration = .seconds(604_800), limit: Int = 100) async throws(FerryError) -> [String] {
        let reply = try await send(
            Self.expireScript.command(
                keys: [.string(keys.jobs)], arguments: [.integer(keepFailed.milliseconds), .integer(Int64(limit))]))
        return reply.array?.compactMap(\.string) ?? []
    }

    /// Removes from the index of workflows those that ended longer ago than they are kept
    /// (their keys have expired): the retention pass of the worker calls it.
    @discardableResult
    public func trimIndex(keepSucceeded: Duration, keepFailed: Duration) async throws(FerryError) -> Int {
        let now = Date().millisecondsSince1970
        var removed = 0
        for (state, keep) in [(State.succeeded, keepSucceeded), (.failed, keepFailed), (.cancelled, keepFailed)] {
            removed += Int(
                try await send(
                    RedisCommand(
                        "ZREMRANGEBYSCORE",
                        [.string(keys.workflowIndex(state: state.rawValue)), "-inf", .integer(now - keep.milliseconds)])
                ).integer ?? 0)
        }
        return removed
    }
}
