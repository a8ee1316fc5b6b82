import FerryRedis
import Foundation
import Logging

// Job status hashes, cancel requests of running jobs, and the observer.

extension Worker {
    static let statusScript = RedisScript(name: "status", source: EmbeddedLuaScripts.status)

    /// How long a job's status stays once its group is done with it in `state`.
    func keep(after state: JobState) -> Duration {
        state == .succeeded ? configuration.keepSucceeded : configuration.keepFailed
    }

    /// Writes this group's fields of the job's status when no entry moves with them: progress
    /// and stage (`state` nil: plain `HSET` of `<group>.<field>`), or a state of its own
    /// (`status.lua`: a job interrupted at shutdown). Every transition that moves an entry
    /// writes its status in its own script. A failed write is logged and never changes the
    /// job's outcome.
    ///
    /// - Parameter waitsForWrite: true to return once the write is flushed (progress, so it
    ///   cannot land after the success that `complete.lua` records outside the write batcher);
    ///   otherwise the job goes on without a round trip, its write kept in order with its
    ///   acknowledgement.
    func recordStatus(
        _ jobID: String, _ state: JobState?, attempt: Int, control: ControlChannel,
        fields: [String: RedisArgument] = [:], waitsForWrite: Bool = false
    ) async {
        guard configuration.recordsStatus else { return }
        let key = keys.jobStatus(jobID: jobID)
        var all = fields
        all["attempts"] = .integer(Int64(attempt))
        all["consumer"] = .string(configuration.consumer)
        let sorted = all.sorted(by: { $0.key < $1.key })
        let command: RedisCommand
        if let state {
            command = Self.statusScript.command(
                keys: [.string(key)],
                arguments: [
                    .string(keys.statusIndexPrefix), .string(configuration.group), .string(jobID), .string(state.rawValue),
                    now(), .integer(keep(after: state).milliseconds),
                ] + sorted.flatMap { [RedisArgument.string($0.key), $0.value] })
        } else {
            let prefix = configuration.group + "."
            command = RedisCommand(
                "HSET",
                [.string(key), .string(prefix + "updated_at"), now(), "updated_at", now()]
                    + sorted.flatMap { [RedisArgument.string(prefix + $0.key), $0.value] })
        }
        if waitsForWrite {
            await control.writeStatus([command])
        } else {
            // Batches keep their order, and the worker waits for the last one before it returns.
            control.enqueueStatus([command])
        }
    }

    /// Acknowledges a job cancelled on request and records it `cancelled`, in one step.
    func cancel(_ jobID: String, entry: StreamEntry, attempt: Int, control: ControlChannel, logger: Logger) async {
        let acknowledged = await control.acknowledge(acknowledgement(entry.id, jobID: jobID, outcome: .cancelled))
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
                ? .init(key: keys.jobStatus(jobID: jobID), jobID: jobID, outcome: outcome) : nil,
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
