import FerryRedis
import Foundation
import Logging

// Later deliveries to this group: retries, snoozes and entries read before their `deliver_at`
// wait in the group's own index (`ferry:{Q}:delayed:<group>`) and come back when due.

extension Worker {
    static let delayScript = FerryScripts.script("delay", EmbeddedLuaScripts.delay)
    static let redeliverScript = FerryScripts.script("redeliver", EmbeddedLuaScripts.redeliver)

    /// Why a delivery is parked, which decides the attempts it carries and the status it shows.
    enum Parking {
        /// The attempt failed; the next is attempt + 1 (`retrying`, `next_attempt_at`).
        case retry(errorClass: String, error: String, processing: Duration)
        /// The handler asked to be run later; the attempt is not spent (`retrying`).
        case snooze(reason: String, processing: Duration)
        /// Read before its `deliver_at`; nothing is spent (`scheduled`, `deliver_at`). Parked only
        /// while the time is still ahead by Redis's clock.
        case notYetDue
        /// Read in the moment the queue was paused: handed back to the group, due at once, with
        /// nothing spent and the status left as it was (`queued`).
        case putBack

        /// The status state while parked.
        var state: JobState { if case .notYetDue = self { .scheduled } else { .retrying } }

        /// Whether parking writes the job's status.
        var recordsStatus: Bool { if case .putBack = self { false } else { true } }

        /// Parked only while its time is still ahead by Redis's clock (else it runs now).
        var onlyWhileAhead: Bool { if case .notYetDue = self { true } else { false } }
    }

    /// What ``park(_:jobID:type:attempt:until:why:lock:control:)`` did.
    enum Parked: Equatable {
        /// Parked, due at this time (ms since the epoch, Redis's clock).
        case parked(dueAt: Int64)
        /// ``Parking/notYetDue`` found the time already come: run it now.
        case due
        /// This consumer no longer owns the entry; nothing was written.
        case lost
        /// Redis failed; the entry stays pending and comes back after the lease.
        case failed
    }

    /// Parks a delivery in the group's later deliveries (`delay.lua`): acknowledged in this group
    /// (it leaves the pending list), due at `until` (a delay from Redis's clock, or a time), with
    /// the status written and the delivery's idempotency lock released in the same step.
    func park(
        _ entryID: String, jobID: String, type: String, attempt: Int, until due: Publisher.Due, why: Parking,
        lock: IdempotencyLock? = nil, control: ControlChannel, logger: Logger
    ) async -> Parked {
        let delayed = keys.delayed(group: configuration.group)
        var scriptKeys: [RedisArgument] = [
            .string(keys.jobs), .string(delayed.due), .string(delayed.attempts), .string(delayed.entries),
        ]
        let dueArgument: RedisArgument
        switch due {
        case .at(let date): dueArgument = .integer(date.millisecondsSince1970)
        case .after(let delay): dueArgument = .string("+\(max(delay, .zero).milliseconds)")
        }
        let carried: Int
        var fields: [RedisArgument] = []
        switch why {
        case .retry(let errorClass, let error, let processing):
            carried = attempt
            fields = [
                "attempts", .integer(Int64(attempt)), "consumer", .string(configuration.consumer), "error_class",
                .string(errorClass), "last_error", .string(FailureText.keepingEnd(error)), "processing_ms",
                .integer(processing.milliseconds), "retryable", "1",
            ]
        case .snooze(let reason, let processing):
            carried = attempt - 1
            fields = [
                "attempts", .integer(Int64(attempt - 1)), "consumer", .string(configuration.consumer), "error_class",
                "snoozed", "last_error", .string(FailureText.keepingEnd(reason)), "processing_ms",
                .integer(processing.milliseconds), "retryable", "1",
            ]
        case .notYetDue, .putBack:
            carried = attempt - 1
        }
        let recordsStatus = configuration.recordsStatus && why.recordsStatus
        var arguments: [RedisArgument] = [
            .string(configuration.group), .string(configuration.consumer), .string(entryID), dueArgument,
            .integer(Int64(carried)), why.onlyWhileAhead ? "1" : "0", .integer(configuration.keepFailed.milliseconds),
            .string(why.state.rawValue), recordsStatus ? "1" : "0", .string(lock?.token ?? ""),
        ]
        if recordsStatus {
            scriptKeys.append(.string(keys.jobStatus(jobID: jobID)))
            let from = why.state == .scheduled ? (attempt == 1 ? "none" : "") : "running"
            arguments += [
                .string(keys.statusIndexPrefix), .string(jobID), .string(from),
                why.state == .scheduled ? .string(type) : "",
            ]
            arguments += fields
        }
        if let lock { scriptKeys.append(.string(lock.key)) }
        do {
            let reply =
                try await control.transition(Self.delayScript, keys: scriptKeys, arguments: arguments, about: [entryID]).array
                ?? []
            switch reply.first?.string {
            case "parked": return .parked(dueAt: reply.dropFirst().first?.integer ?? 0)
            case "due": return .due
            default: return .lost
            }
        } catch {
            logger.info("could not park the job for later; it comes back after the lease", metadata: redisFailure(error))
            return .failed
        }
    }

    /// Takes up to `count` of the group's parked deliveries that are due (`redeliver.lua`): each
    /// is claimed for this consumer with its carried attempt count, and runs as any delivery.
    /// Entries deleted from the stream meanwhile are reported as deleted.
    ///
    /// - Returns: the deliveries with their attempt numbers, and whether more are due.
    func redeliverDue(
        _ control: ControlChannel, count: Int
    ) async throws(RedisError) -> (deliveries: [(StreamEntry, Int)], more: Bool) {
        let delayed = keys.delayed(group: configuration.group)
        let reply = try await control.run(
            Self.redeliverScript,
            keys: [.string(keys.jobs), .string(delayed.due), .string(delayed.attempts), .string(delayed.entries)],
            arguments: [.string(configuration.group), .string(configuration.consumer), .integer(Int64(count))])
        guard let parts = reply.array, parts.count == 4 else { return ([], false) }
        if let deleted = parts[2].array?.compactMap(\.string), !deleted.isEmpty {
            await recordDeleted(deleted.map { ($0, nil) }, running: false, control: control)
        }
        let attempts = parts[1].array?.compactMap(\.integer) ?? []
        let entries = StreamEntry.entries(from: parts[0])
        let deliveries = zip(entries, attempts).map { entry, attempt in
            logger.debug(
                "redelivered",
                metadata: [
                    "ferry.entry_id": "\(entry.id)", "ferry.job_id": "\(entry.jobID)", "ferry.delivery_attempt": "\(attempt)",
                ])
            return (entry, Int(attempt))
        }
        return (deliveries, parts[3].integer == 1)
    }

    /// Parks a failed attempt until its backoff has passed (and `retryAfter`, if later): the
    /// policy of its type, with the job's own `backoff_ms` as its base.
    func scheduleRetry(
        _ entryID: String, message: JobMessage, jobID: String, attempt: Int, error: (errorClass: String, message: String),
        processing: Duration, retryAfter: Duration? = nil, lock: IdempotencyLock?, control: ControlChannel,
        logger: Logger
    ) async {
        let backoff = configuration.retryPolicy(for: message.type).backoff(afterAttempt: attempt, base: message.backoff)
        let delay = max(backoff, retryAfter ?? .zero)
        let parked = await park(
            entryID, jobID: jobID, type: message.type, attempt: attempt, until: .after(delay),
            why: .retry(errorClass: error.errorClass, error: error.message, processing: processing), lock: lock,
            control: control, logger: logger)
        switch parked {
        case .parked(let dueAt):
            logger.info(
                "retry_scheduled", metadata: ["ferry.backoff_ms": "\(delay.milliseconds)", "ferry.next_attempt_at": "\(dueAt)"])
        case .lost, .due:
            logger.info("lease_lost: another worker owns the entry now; retry not scheduled")
        case .failed:
            break
        }
    }
}
