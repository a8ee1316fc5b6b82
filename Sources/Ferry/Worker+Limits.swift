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

    /// The limits that cover `message`.
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

    /// What ``admit(_:control:logger:)`` decided for a delivery.
    enum Admission {
        /// Within every limit: run, holding these slots.
        case run([LimitSlot])
        /// Over a limit: parked until `dueAt` (ms), recorded waiting.
        case waiting(limit: String, dueAt: Int64)
        /// This consumer no longer owns the entry, or Redis failed (it comes back after the lease).
        case notRun
    }

    /// Asks Redis whether deliveries may start under the limits that cover them
    /// (`acquire.lua`, one call for all): each takes its slots and rate and is recorded running,
    /// or is parked until it could pass and recorded waiting with the limit's name, spending no
    /// attempt. Goes through the write batcher, behind the jobs' earlier writes. When a limit
    /// changed since this worker read them, it reads them again and asks again; a delivery no
    /// limit covers any more comes back with no limits (and `.run([])`), its running record
    /// still to write.
    func admit(_ deliveries: [Delivery], control: ControlChannel, logger: Logger) async -> [(Delivery, Admission)] {
        var deliveries = deliveries
        for _ in 0..<3 {
            let asked = deliveries.filter { !$0.limits.isEmpty }
            guard !asked.isEmpty else { return deliveries.map { ($0, .run([])) } }
            guard let replies = await acquire(asked, control: control, logger: logger) else {
                await refreshLimits(control)  // a limit changed: read them again, ask again
                for index in deliveries.indices {
                    if case .run(let message, _) = deliveries[index].plan {
                        deliveries[index].limits = limits(covering: message)
                    }
                }
                continue
            }
            var answers = replies.makeIterator()
            return deliveries.map { delivery in
                (delivery, delivery.limits.isEmpty ? .run([]) : answers.next() ?? .notRun)
            }
        }
        logger.info("the queue's limits kept changing while jobs were checked; they come back after the lease")
        return deliveries.map { ($0, .notRun) }
    }

    /// One `acquire.lua` call: an admission per delivery, or nil when the worker's limits are
    /// out of date (`stale`). A failed call admits none (they come back after the lease).
    private func acquire(_ deliveries: [Delivery], control: ControlChannel, logger: Logger) async -> [Admission]? {
        let stored = state.withLock { Dictionary($0.limits.map { ($0.limit.name, $0.json) }) { first, _ in first } }
        let delayed = keys.delayed(group: configuration.group)
        var stateKeys: [RedisArgument] = []
        var stateArguments: [RedisArgument] = []
        var stateNumbers: [QueueKeys.LimitKeys: Int] = [:]
        var slotsOf: [Int: LimitSlot] = [:]
        var jobArguments: [RedisArgument] = []
        var statusKeys: [RedisArgument] = []
        var jobSlots: [[LimitSlot]] = []
        for delivery in deliveries {
            guard case .run(let message, _) = delivery.plan else { continue }
            var numbers: [Int] = []
            var held: [LimitSlot] = []
            // Concurrency first: a job that waits for a slot spends no rate.
            for limit in delivery.limits.sorted(by: { $0.isConcurrency && !$1.isConcurrency }) {
                let limitKeys = keys.limitState(name: limit.name, key: limit.perKey ? message.key : nil)
                let number: Int
                if let known = stateNumbers[limitKeys] {
                    number = known
                } else {
                    number = stateNumbers.count + 1
                    stateNumbers[limitKeys] = number
                    let json = RedisArgument.string(stored[limit.name] ?? "")
                    switch limit.kind {
                    case .concurrency(let most):
                        stateKeys += [.string(limitKeys.slots), .string(limitKeys.waiting)]
                        stateArguments += ["c", .string(limit.name), .integer(Int64(most)), "", json]
                        slotsOf[number] = LimitSlot(slots: limitKeys.slots, waiting: limitKeys.waiting, most: most)
                    case .rate(let count, let period, let burst):
                        stateKeys += [.string(limitKeys.arrival), .string(limitKeys.reserved)]
                        let spacing = QueueLimit.spacingMicroseconds(count: count, period: period)
                        stateArguments += ["r", .string(limit.name), .string(String(spacing)), .integer(Int64(burst)), json]
                    }
                }
                numbers.append(number)
                if let slot = slotsOf[number] { held.append(slot) }
            }
            jobArguments += [
                .string(delivery.entry.id), .integer(Int64(delivery.attempt)),
                delivery.attempt == 1 && !delivery.handedBack ? "1" : "0", .string(delivery.jobID), .string(message.type),
                .integer(Int64(numbers.count)),
            ]
            jobArguments += numbers.map { .integer(Int64($0)) }
            statusKeys.append(.string(keys.jobStatus(jobID: delivery.jobID)))
            jobSlots.append(held)
        }
        let scriptKeys: [RedisArgument] =
            [
                .string(keys.jobs), .string(delayed.due), .string(delayed.attempts), .string(delayed.entries),
                .string(keys.limits),
            ] + stateKeys + (configuration.recordsStatus ? statusKeys : [])
        let arguments: [RedisArgument] =
            [
                .string(configuration.group), .string(configuration.consumer), .integer(configuration.lease.milliseconds),
                .integer(configuration.keepFailed.milliseconds), configuration.recordsStatus ? "1" : "0",
                .string(keys.statusIndexPrefix), .string(keys.delayedPrefix), .integer(Int64(stateNumbers.count)),
            ] + stateArguments + jobArguments
        let reply: [RedisReply]
        do {
            reply = try await control.transition(Self.acquireScript, keys: scriptKeys, arguments: arguments).array ?? []
        } catch {
            logger.info("could not check the queue's limits; the jobs come back after the lease", metadata: redisFailure(error))
            return deliveries.map { _ in .notRun }
        }
        if reply.first?.string == "stale" { return nil }
        return zip(deliveries, zip(reply, jobSlots)).map { delivery, answer -> Admission in
            let (job, held) = answer
            let parts = job.array ?? []
            var logger = logger
            logger[metadataKey: "ferry.job_id"] = "\(delivery.jobID)"
            logger[metadataKey: "ferry.entry_id"] = "\(delivery.entry.id)"
            switch parts.first?.string {
            case "run":
                return .run(held)
            case "wait":
                let limit = parts.dropFirst().first?.string ?? "?"
                let dueAt = parts.dropFirst(2).first?.integer ?? 0
                logger.info("job_waiting", metadata: ["ferry.limit": "\(limit)", "ferry.next_attempt_at": "\(dueAt)"])
                if case .run(let message, _) = delivery.plan { metrics.job(.waited, type: message.type) }
                state.withLock { $0.lastLimitWait = .now }
                return .waiting(limit: limit, dueAt: dueAt)
            default:
                logger.info("lease_lost: another worker owns the entry now; not started")
                return .notRun
            }
        }
    }

    /// A read batch's admission, shared by its jobs' tasks, and one job's place in it.
    struct BatchAdmission: Sendable {
        let task: Task<[(Delivery, Admission)], Never>
        let index: Int
    }

    /// Starts the admission of the deliveries that ask for one (``Delivery/admittedInBatch``)
    /// as one task, and gives each its place in it.
    func askingAdmission(_ deliveries: [Delivery], control: ControlChannel) -> [Delivery] {
        let asked = deliveries.filter(\.admittedInBatch)
        let task = Task { await admit(asked, control: control, logger: logger) }
        var index = 0
        return deliveries.map { delivery in
            guard delivery.admittedInBatch else { return delivery }
            var asking = delivery
            asking.admission = BatchAdmission(task: task, index: index)
            index += 1
            return asking
        }
    }

    /// What a job does with its admission: nil when it does not run now (it waits, parked, or
    /// was lost); else the slots it holds, kept for extension with its lease. A job no limit
    /// covered after all (one was removed meanwhile) is recorded running here, as the batch
    /// start records an unlimited job.
    func started(
        _ answer: (Delivery, Admission), message: JobMessage, control: ControlChannel, slots: JobSlots
    ) -> [LimitSlot]? {
        let (checked, admission) = answer
        guard case .run(let taken) = admission else { return nil }
        if !taken.isEmpty { slots.hold(taken, for: checked.entry.id) }
        if checked.limits.isEmpty && message.idempotencyKey == nil {
            recordState(
                .running, jobID: checked.jobID, entryID: checked.entry.id, attempt: checked.attempt, control: control,
                fields: [:])
        }
        return taken
    }

    /// Frees a finished job's slots through the write batcher, after its outcome: the flush
    /// releases every finished job's slots in one `release.lua` call and hands each slot to the
    /// first job waiting for it. If it never lands (a lost connection), the slots free when
    /// their lease ends.
    func releaseSlots(_ held: [LimitSlot], entryID: String, control: ControlChannel) {
        guard !held.isEmpty else { return }
        control.enqueueRelease(ControlChannel.SlotRelease(holder: slotHolder(entryID), slots: held)) { [self] result in
            switch result {
            case .success(let handed):
                if (handed.integer ?? 0) > 0 {
                    state.withLock { state in
                        state.slotHandedToGroup = true
                        state.lastLimitWait = .now  // jobs of this group still wait
                    }
                }
            case .failure(let error):
                logger.info("could not release the job's limit slots; they free when their lease ends", metadata: redisFailure(error))
            }
        }
    }

    /// The keys and arguments that release the slots of every job a flush releases, in
    /// `release.lua`'s form (also the tail of an `ack.lua` call).
    func releaseArguments(_ releases: [ControlChannel.SlotRelease]) -> (keys: [RedisArgument], arguments: [RedisArgument]) {
        var holders: [LimitSlot: [String]] = [:]
        var order: [LimitSlot] = []
        for release in releases {
            for slot in release.slots {
                if holders[slot] == nil { order.append(slot) }
                holders[slot, default: []].append(release.holder)
            }
        }
        var arguments: [RedisArgument] = [
            .integer(configuration.lease.milliseconds), .string(keys.delayedPrefix), .string(configuration.group),
        ]
        for slot in order {
            let released = holders[slot] ?? []
            arguments += [.integer(Int64(slot.most)), .integer(Int64(released.count))] + released.map { .string($0) }
        }
        return (order.flatMap { [RedisArgument.string($0.slots), .string($0.waiting)] }, arguments)
    }

    /// Extends the slots running jobs hold with their leases (`extend_slots.lua`).
    func extendSlots(_ held: [(entryID: String, slot: LimitSlot)], control: ControlChannel) async throws(RedisError) {
        guard !held.isEmpty else { return }
        try await control.run(
            Self.extendSlotsScript, keys: held.map { .string($0.slot.slots) },
            arguments: [.integer(configuration.lease.milliseconds)] + held.map { .string(slotHolder($0.entryID)) })
    }
}
