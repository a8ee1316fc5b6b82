import FerryRedis
import Foundation
import Logging

// Workflow steps: a step's job runs as any job; its end moves its workflow in the same script
// (`wf_step.lua`, or `deadletter.lua` for a dead letter).

extension Worker {
    static let stepScript = FerryScripts.script("wf_step", EmbeddedLuaScripts.wf_step)

    /// The context a step's handler gets: the workflow, the step, and the results its workflow's
    /// steps have kept so far (large ones fetched and checked); nil for a job that is no step.
    ///
    /// - Throws: ``PermanentJobError`` when a large result is gone or changed (the step is
    ///   dead-lettered); ``RedisError`` when Redis fails (the step's job fails and retries).
    func workflowContext(of message: JobMessage, control: ControlChannel) async throws -> WorkflowContext? {
        guard let (workflow, step) = message.workflowStep else { return nil }
        let results = try await Workflows.results(of: workflow, keys: keys, except: step, pipeline: control.pipeline)
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
        if let result, result.count > PayloadReference.defaultInlineLimit {
            let reference = PayloadReference(of: result, in: .workflow)
            arguments += ["2", .bytes(result), .string("\(reference.sha256) \(reference.size)")]
        } else {
            arguments += result.map { ["1", .bytes($0)] } ?? ["0"]
        }
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
