import FerryRedis
import Foundation
import Logging
import Synchronization

// Rate and concurrency limits (`ferry limit`): a job over one waits, parked, spending nothing.

extension Worker {
    static let acquireScript = RedisScript(name: "acquire", source: EmbeddedLuaScripts.acquire)
    static let releaseScript = RedisScript(name: "release", source: EmbeddedLuaScripts.release)
    static let extendSlotsScript = RedisScript(name: "extend_slots", source: EmbeddedLuaScripts.extend_slots)

    /// The queue's limits as this worker last read them (every second, ``refreshLimits(_:)``).
    var limits: [QueueLimit] { state.withLock { $0.limits.map(\.limit) } }

    /// The limits that cover `message`, with their stored JSON.
    func limits(covering message: JobMessage) -> [QueueLimit] {
        state.withLock { $0.limits.map(\.limit).filter { $0.covers(message) } }
    }

    /// Whether a job here waited on a limit, or a slot went to a job of this group, in the last
    /// two seconds: the read loop then blocks at most 50 ms, so a job handed a slot starts soon
    /// after the slot frees.
    var limitWaitsRecently: Bool {
        state.withLock { $0.lastLimitWait.map { ContinuousClock.now - $0 < .seconds(2) } ?? false }
    }

    /// Whether a finished job's slot went to a job of this group since the last call.
    func takeSlotHandedToGroup() -> Bool {
        state.withLock { state in
            defer { state.slotHandedToGroup = false }
            return state.slotHandedToGroup
        }
    }

    /// Reads the queue's limits (`ferry:{Q}:limits`), logging when they change. A failed read
    /// keeps the last answer; a limit written by hand that Ferry cannot read is named in a warning.
    func refreshLimits(_ control: ControlChannel) async {
        do {
            let (limits, unreadable) = try await QueueLimits(queue: queue, connection: control.connection).read()
            let changed = state.withLock { state in
                defer { state.limits = limits }
                return state.limits.map(\.json) != limits.map(\.json)
            }
            if changed {
                logger.info(
                    "limits_changed",
                    metadata: ["ferry.limits": "\(limits.map { "\($0.limit.name): \($0.limit.summary)" })"])
            }
            if changed && !unreadable.isEmpty {
                logger.warning(
                    "limits_unreadable: these fields of the queue's limits are not limits this worker can read, and are ignored; set them again with ferry limit set",
                    metadata: ["ferry.limits": "\(unreadable)"])
            }
        } catch {
            logger.debug("could not read the queue's limits", metadata: error.redisError.map(redisFailure) ?? [:])
        }
    }

    /// A concurrency slot a running job holds: released at its end, extended with its lease.
    struct LimitSlot: Sendable, Hashable {
        /// The limit's `:slots` key.
        let slots: String
        /// The limit's `:waiting` key, whose first job gets the slot next.
        let waiting: String
        /// The limit's most slots, when the job took it.
        let most: Int
    }

    /// Who holds a slot for a delivery: `<group> <entry ID>`, the same for every delivery of
    /// the entry in the group, so a reclaimed job finds the slot its crashed worker held.
    func slotHolder(_ entryID: String) -> String { configuration.group + " " + entryID }

    /// What ``admit(_:message:control:logger:)`` decided.
    enum Admission {
        /// Within every limit: run, holding these slots.
        case run([LimitSlot])
        /// Over a limit: parked until `dueAt` (ms), recorded waiting.
        case waiting(limit: String, dueAt: Int64)
        /// This consumer no longer owns the entry, or Redis failed (it comes back after the lease).
        case notRun
    }

    /// Asks Redis whether the delivery may start under the limits that cover it (`acquire.lua`):
    /// it takes its slots and rate and is recorded running, or it is parked until it could pass
    /// and recorded waiting with the limit's name, spending no attempt. Goes through the write
    /// batcher, behind the job's earlier writes.
    func admit(_ delivery: Delivery, message: JobMessage, control: ControlChannel, logger: Logger) async -> Admission {
        var limits = delivery.limits
        for _ in 0..<3 {
            switch await acquire(delivery, limits: limits, message: message, control: control, logger: logger) {
            case .stale?:
                // A limit was changed or removed since this worker read them: read them again.
                await refreshLimits(control)
                limits = self.limits(covering: message)
                if limits.isEmpty {
                    recordState(
                        .running, jobID: delivery.jobID, entryID: delivery.entry.id, attempt: delivery.attempt,
                        control: control, fields: [:])
                    return .run([])
                }
            case .decided(let admission)?:
                return admission
            case nil:
                return .notRun
            }
        }
        logger.info("the queue's limits kept changing while the job was checked; it comes back after the lease")
        return .notRun
    }

    /// One `acquire.lua` call: decided, or stale (the worker's limits are out of date); nil when
    /// the call failed.
    private enum Acquired {
        case decided(Admission)
        case stale
    }

    private func acquire(
        _ delivery: Delivery, limits: [QueueLimit], message: JobMessage, control: ControlChannel, logger: Logger
    ) async -> Acquired? {
        let stored = state.withLock { Dictionary($0.limits.map { ($0.limit.name, $0.json) }) { first, _ in first } }
        let delayed = keys.delayed(group: configuration.group)
        var scriptKeys: [RedisArgument] = [
            .string(keys.jobs), .string(delayed.due), .string(delayed.attempts), .string(delayed.entries),
            .string(keys.limits),
        ]
        if configuration.recordsStatus { scriptKeys.append(.string(keys.jobStatus(jobID: delivery.jobID))) }
        var arguments: [RedisArgument] = [
            .string(configuration.group), .string(configuration.consumer), .string(delivery.entry.id),
            .integer(Int64(delivery.attempt)), delivery.attempt == 1 && !delivery.handedBack ? "1" : "0",
            .integer(configuration.lease.milliseconds), .integer(configuration.keepFailed.milliseconds),
            configuration.recordsStatus ? "1" : "0", .string(keys.statusIndexPrefix), .string(delivery.jobID),
            .string(message.type), .string(keys.delayedPrefix), .integer(Int64(limits.count)),
        ]
        var slots: [LimitSlot] = []
        for limit in limits {
            let state = keys.limitState(name: limit.name, key: limit.perKey ? message.key : nil)
            let json = RedisArgument.string(stored[limit.name] ?? "")
            switch limit.kind {
            case .concurrency(let most):
                scriptKeys += [.string(state.slots), .string(state.waiting)]
                arguments += ["c", .string(limit.name), .integer(Int64(most)), "", json]
                slots.append(LimitSlot(slots: state.slots, waiting: state.waiting, most: most))
            case .rate(let count, let period, let burst):
                scriptKeys += [.string(state.arrival), .string(state.reserved)]
                let spacing = QueueLimit.spacingMicroseconds(count: count, period: period)
                arguments += ["r", .string(limit.name), .string(String(spacing)), .integer(Int64(burst)), json]
            }
        }
        do {
            let reply = try await control.transition(Self.acquireScript, keys: scriptKeys, arguments: arguments).array ?? []
            switch reply.first?.string {
            case "run":
                return .decided(.run(slots))
            case "wait":
                let limit = reply.dropFirst().first?.string ?? "?"
                let dueAt = reply.dropFirst(2).first?.integer ?? 0
                logger.info("job_waiting", metadata: ["ferry.limit": "\(limit)", "ferry.next_attempt_at": "\(dueAt)"])
                metrics.job(.waited, type: message.type)
                state.withLock { $0.lastLimitWait = .now }
                return .decided(.waiting(limit: limit, dueAt: dueAt))
            case "stale":
                return .stale
            default:
                logger.info("lease_lost: another worker owns the entry now; not started")
                return .decided(.notRun)
            }
        } catch {
            logger.info("could not check the queue's limits; the job comes back after the lease", metadata: redisFailure(error))
            return nil
        }
    }

    /// Frees a finished job's slots and hands each to the first job waiting for it
    /// (`release.lua`), through the write batcher after the job's outcome. If it never lands (a
    /// lost connection), the slots free when their lease ends.
    func releaseSlots(_ held: [LimitSlot], entryID: String, control: ControlChannel) {
        guard !held.isEmpty else { return }
        var arguments: [RedisArgument] = [
            .integer(configuration.lease.milliseconds), .string(keys.delayedPrefix), .string(configuration.group),
        ]
        for slot in held { arguments += [.string(slotHolder(entryID)), .integer(Int64(slot.most))] }
        let scriptKeys = held.flatMap { [RedisArgument.string($0.slots), .string($0.waiting)] }
        control.enqueueTransition(Self.releaseScript.command(keys: scriptKeys, arguments: arguments)) { [self] result in
            switch result {
            case .success(let handed):
                if (handed.integer ?? 0) > 0 {
                    state.withLock { state in
                        state.slotHandedToGroup = true
                        state.lastLimitWait = .now  // jobs of this group still wait
                    }
                }
            case .failure(let error):
                logger.info(
                    "could not release the job's limit slots; they free when their lease ends", metadata: redisFailure(error))
            }
        }
    }

    /// Extends the slots running jobs hold with their leases (`extend_slots.lua`).
    func extendSlots(_ held: [(entryID: String, slot: LimitSlot)], control: ControlChannel) async throws(RedisError) {
        guard !held.isEmpty else { return }
        try await control.run(
            Self.extendSlotsScript, keys: held.map { .string($0.slot.slots) },
            arguments: [.integer(configuration.lease.milliseconds)] + held.map { .string(slotHolder($0.entryID)) })
    }
}
