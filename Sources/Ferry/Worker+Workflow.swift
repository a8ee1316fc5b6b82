import FerryRedis
import Foundation
import Logging

// Workflow steps: a step's job runs as any job; its end moves its workflow in the same script
// (`wf_step.lua`, or `deadletter.lua` for a dead letter).

extension Worker {
    static let stepScript = RedisScript(name: "wf_step", source: EmbeddedLuaScripts.wf_step)

    /// The context a step's handler gets: the workflow, the step, and the results its workflow's
    /// steps have kept so far (one `HGETALL`); nil for a job that is no step, or when Redis fails
    /// (the handler then sees no results, and the step's job fails and retries).
    func workflowContext(of message: JobMessage, control: ControlChannel) async throws -> WorkflowContext? {
        guard let (workflow, step) = message.workflowStep else { return nil }
        let reply = try await control.send(RedisCommand("HGETALL", [.string(keys.workflow(id: workflow) + ":results")]))
        var results: [String: [UInt8]] = [:]
        let flat = reply.array ?? []
        var index = 0
        while index + 1 < flat.count {
            if let name = flat[index].string, name != step { results[name] = flat[index + 1].bytes ?? [] }
            index += 2
        }
        return WorkflowContext(id: workflow, step: step, results: results, resultSink: .init())
    }

    /// Ends a step's job (`wf_step.lua`): acknowledged while this consumer owns it, its status,
    /// and its workflow moved: `succeeded` with its result and the handler's decision, or
    /// `cancelled`. Returns whether it ended here.
    func endStep(
        _ entryID: String, jobID: String, workflow: String, step: String, outcome: JobState, processing: Duration = .zero,
        result: [UInt8]? = nil, decision: WorkflowDecision? = nil, control: ControlChannel, logger: Logger
    ) async -> Bool {
        var scriptKeys: [RedisArgument] = [.string(keys.jobs)]
        if configuration.recordsStatus { scriptKeys.append(.string(keys.jobStatus(jobID: jobID))) }
        let wire = decision?.wire ?? (decision: "", detail: "")
        var arguments: [RedisArgument] = [
            .string(configuration.group), .string(configuration.consumer), .string(entryID), .string(jobID),
            .string(outcome.rawValue), .string(workflow), .string(step), .string(keys.statusIndexPrefix),
            configuration.recordsStatus ? "1" : "0", .integer(configuration.keepSucceeded.milliseconds),
            .integer(configuration.keepFailed.milliseconds), .integer(processing.milliseconds), .string(wire.decision),
            .string(wire.detail),
        ]
        arguments += result.map { ["1", .bytes($0)] } ?? ["0"]
        let ended = await settle(
            entryID, Self.stepScript, keys: scriptKeys, arguments: arguments, control: control, logger: logger)
        if ended, decision != nil {
            logger.info(
                "decision",
                metadata: [
                    "ferry.workflow_id": "\(workflow)", "ferry.step": "\(step)", "ferry.decision": "\(wire.decision)",
                    "ferry.detail": "\(wire.detail)",
                ])
        }
        return ended
    }
}
