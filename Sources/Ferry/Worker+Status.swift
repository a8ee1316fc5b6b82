import FerryRedis
import Foundation
import Logging

// Job status hashes, cancel requests of running jobs, and the observer.

extension Worker {
    /// Updates the job's status hash (`state`, `attempts`, `consumer`, `updated_at` and `fields`;
    /// a nil state leaves the state as it is). A terminal state starts the hash's expiry; any
    /// other state, or none, clears it. A failed write is logged and never changes the job's outcome.
    ///
    /// - Parameter waitsForWrite: true to return once the write is flushed (a guarded job's
    ///   `running`, so the status is true while the handler runs; progress, so it cannot land
    ///   after the success that `complete.lua` records outside the write batcher); otherwise the
    ///   job goes on without a round trip, its write kept in order with its acknowledgement.
    func recordStatus(
        _ jobID: String, _ state: JobState?, attempt: Int, control: ControlChannel,
        fields: [String: RedisArgument] = [:], waitsForWrite: Bool = false
    ) async {
        guard configuration.recordsStatus else { return }
        let key = keys.jobStatus(jobID: jobID)
        var hset = RedisCommand("HSET")
        hset.append(key)
        var all = fields
        all["job_id"] = .string(jobID)
        all["attempts"] = .integer(Int64(attempt))
        all["consumer"] = .string(configuration.consumer)
        all["group"] = .string(configuration.group)
        all["updated_at"] = now()
        if let state { all["state"] = .string(state.rawValue) }
        for (name, value) in all.sorted(by: { $0.key < $1.key }) {
            hset.append(name)
            hset.append(value)
        }
        let expiry =
            state?.isTerminal == true
            ? RedisCommand("PEXPIRE", [.string(key), .integer(configuration.statusTTL.milliseconds)])
            : RedisCommand("PERSIST", [.string(key)])
        if waitsForWrite {
            await control.writeStatus([hset, expiry])
        } else {
            // Batches keep their order, and the worker waits for the last one before it returns.
            control.enqueueStatus([hset, expiry])
        }
    }

    func recordCancelled(_ jobID: String, entry: StreamEntry, attempt: Int, control: ControlChannel, logger: Logger) async {
        logger.info("job_cancelled")
        metrics.job(.cancelled, type: entry.text(of: WireFormat.Field.type))
        await recordStatus(
            jobID, .cancelled, attempt: attempt, control: control, fields: ["finished_at": now(), "retryable": "0"])
        notify(.cancelled, jobID: jobID, entry: entry, attempt: attempt)
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
