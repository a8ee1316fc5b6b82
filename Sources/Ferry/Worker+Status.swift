import FerryRedis
import Foundation
import Logging

// Job status hashes, cancel requests of running jobs, and the observer.

extension Worker {
    static let statusScript = FerryScripts.script("status", EmbeddedLuaScripts.status)

    /// How long a job's status stays once its group is done with it in `state`.
    func keep(after state: JobState) -> Duration {
        state == .succeeded ? configuration.keepSucceeded : configuration.keepFailed
    }

    /// Writes this group's progress and stage of the job: a plain `HSET` of
    /// `<group>.<field>`, no state change. A failed write is logged and never changes the job's
    /// outcome.
    ///
    /// Returns once the write is flushed, so it cannot land after the success that
    /// `complete.lua` records outside the write batcher.
    func recordProgress(_ jobID: String, entryID: String, fields: [String: RedisArgument], control: ControlChannel) async {
        guard configuration.recordsStatus else { return }
        let prefix = configuration.group + "."
        await control.writeStatus(
            [
                RedisCommand(
                    "HSET",
                    [.string(keys.jobStatus(jobID: jobID)), .string(prefix + "updated_at"), now(), "updated_at", now()]
                        + fields.sorted(by: { $0.key < $1.key }).flatMap { [RedisArgument.string(prefix + $0.key), $0.value] })
            ], about: [entryID])
    }

    /// Records a state of the job in this group when no entry moves with it (`status.lua`): a
    /// job interrupted at shutdown, left pending for another worker. Every transition that
    /// moves an entry writes its status in its own script. Joins the next flush, in order with
    /// the job's other writes.
    func recordState(
        _ state: JobState, jobID: String, entryID: String, attempt: Int, control: ControlChannel,
        fields: [String: RedisArgument]
    ) {
        guard configuration.recordsStatus else { return }
        var all = fields
        all["attempts"] = .integer(Int64(attempt))
        all["consumer"] = .string(configuration.consumer)
        control.enqueueStatus(
            [
                Self.statusScript.command(
                    keys: [.string(keys.jobStatus(jobID: jobID))],
                    arguments: [
                        .string(keys.statusIndexPrefix), .string(configuration.group), .string(jobID), .string(entryID),
                        .string(state.rawValue), now(), .integer(keep(after: state).milliseconds),
                    ] + all.sorted(by: { $0.key < $1.key }).flatMap { [RedisArgument.string($0.key), $0.value] })
            ], about: [entryID])
    }

    /// Acknowledges a job cancelled on request and records it `cancelled`, in one step.
    func cancel(_ jobID: String, entry: StreamEntry, attempt: Int, control: ControlChannel, logger: Logger) async {
        let acknowledged: Bool?
        if let workflow = entry.text(of: WireFormat.Field.workflow), let step = entry.text(of: WireFormat.Field.step) {
            // A workflow's step: its workflow learns of it in the same script.
            acknowledged = await endStep(
                entry.id, jobID: jobID, workflow: workflow, step: step, outcome: .cancelled, control: control, logger: logger)
        } else {
            acknowledged = await control.acknowledge(acknowledgement(entry.id, jobID: jobID, outcome: .cancelled))
        }
        guard acknowledged == true else {
            logger.info("lease_lost: another worker owns the entry now; not acknowledged")
            return
        }
        logger.info("job_cancelled")
        metrics.job(.cancelled, type: entry.text(of: WireFormat.Field.type))
        notify(.cancelled, jobID: jobID, entry: entry, attempt: attempt)
    }

    /// The acknowledgement of a job that ends here, with its status when status is kept.
    func acknowledgement(
        _ entryID: String, jobID: String, outcome: JobState = .succeeded, processing: Duration = .zero
    ) -> ControlChannel.Acknowledgement {
        ControlChannel.Acknowledgement(
            entryID: entryID,
            status: configuration.recordsStatus
                ? .init(jobID: jobID, outcome: outcome) : nil,
            processingMilliseconds: processing.milliseconds)
    }

    /// Cancels the handlers of running jobs someone asked to cancel (`ferry job cancel`).
    func cancelRequestedJobs(_ control: ControlChannel, slots: JobSlots) async throws(RedisError) {
        let running = slots.running
        if running.isEmpty { return }
        let entries = Array(running)
        let scores = try await control.send(
            RedisCommand("ZMSCORE", [.string(keys.cancelRequests)] + entries.map { .string($0.value.jobID) }))
        for (entry, score) in zip(entries, scores.array ?? []) where score != .null {
            slots.cancelOnRequest(entry.key)
        }
    }

    /// Tells the observer, if any, that a job reached a terminal state.
    func notify(
        _ state: JobEvent.State, jobID: String, entry: StreamEntry, attempt: Int, message: JobMessage? = nil,
        errorClass: String? = nil, error: String? = nil
    ) {
        guard let observer else { return }
        let message = message ?? (try? entry.decodedJob(maxPayloadBytes: .max))
        observer.jobFinished(
            JobEvent(
                jobID: jobID, entryID: entry.id, queue: queue, group: configuration.group, state: state, attempts: attempt,
                type: message?.type, errorClass: errorClass, error: error.map { FailureText.keepingEnd($0) },
                publishedAt: message?.publishedAt))
    }
}
