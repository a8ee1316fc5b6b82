import FerryRedis
import Foundation
import Logging
import Synchronization

// Rate and concurrency limits (`ferry limit`): a job over one waits, parked, spending nothing.

extension Worker {
    static let acquireScript = FerryScripts.script("acquire", EmbeddedLuaScripts.acquire)
    static let releaseScript = FerryScripts.script("release", EmbeddedLuaScripts.release)
    static let extendSlotsScript = FerryScripts.script("extend_slots", EmbeddedLuaScripts.extend_slots)
    private static let runReply = RedisReply.bulk(Array("run".utf8))

    /// The queue's limits as this worker last read them (every second, ``refreshLimits(_:)``).
    var limits: [QueueLimit] { state.withLock { $0.limits.map(\.limit) } }

    /// The limits that cover `message`.
    func limits(covering message: JobMessage) -> [QueueLimit] {
        state.withLock { $0.limits.compactMap { $0.limit.covers(message) ? $0.limit : nil } }
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
            let (read, unreadable) = try await QueueLimits(queue: queue, connection: control.connection).read()
            // Concurrency first, as acquire.lua decides them: a job that waits for a slot spends no rate.
            let limits = read.sorted {
                ($0.limit.isConcurrency ? 0 : 1, $0.limit.name) < ($1.limit.isConcurrency ? 0 : 1, $1.limit.name)
            }
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

    /// The name this worker's new concurrency slots are counted under in a limit's `:held` and
    /// `:holders`: its consumer name, then `<consumer>#<n>` after the n-th write whose outcome it
    /// could not know (``renewSlotHolder(after:)``).
    ///
    /// A slot write that timed out after Redis ran it (an `acquire.lua` whose reply was lost, a
    /// release that failed) leaves a count no running job will release. Counted under the
    /// worker's one name, that count would never lapse while the worker's other jobs keep the
    /// name's lease extended: the limit would lose those slots for the worker's life. Under a
    /// fresh name for later slots, the old name's lease is extended only while jobs that took
    /// slots under it run, and lapses a lease after the last ends, freeing what was left.
    var slotHolder: String {
        let epoch = state.withLock(\.slotEpoch)
        return epoch == 0 ? configuration.consumer : "\(configuration.consumer)#\(epoch)"
    }

    /// Counts this worker's later slots under a fresh holder name (``slotHolder``), because a
    /// write of its slots may have landed or not: `what` is logged.
    func renewSlotHolder(after what: String) {
        let epoch = state.withLock { state in
            state.slotEpoch += 1
            return state.slotEpoch
        }
        logger.info(
            "slot_holder_renewed: \(what) may or may not have reached Redis; this worker's new concurrency slots are counted under a new name, and what the old name holds lapses a lease after its last job ends",
            metadata: ["ferry.slot_epoch": "\(epoch)"])
    }

    /// A concurrency slot a running job holds, counted for this worker: released at its end,
    /// extended with the worker's leases.
    struct LimitSlot: Sendable, Hashable {
        /// The limit's `:held`, `:holders`, `:handed` and `:waiting` keys.
        let held: String
        let holders: String
        let handed: String
        let waiting: String
        /// The limit's most slots, when the job took it.
        let most: Int
        /// The name the slot is counted under (``Worker/slotHolder``, when the job took it).
        let holder: String

        var keys: [RedisArgument] { [.string(held), .string(holders), .string(handed), .string(waiting)] }
    }

    /// What ``admit(_:control:logger:)`` decided for a delivery.
    enum Admission: Sendable {
        /// Within every limit: run, holding these slots.
        case run([LimitSlot])
        /// Over a limit: parked until `dueAt` (ms), recorded waiting.
        case waiting(limit: String, dueAt: Int64)
        /// This consumer no longer owns the entry, or Redis failed (it comes back after the lease).
        case notRun
    }

    /// A delivery's admission, and whether any limit still covered it (one may have been removed
    /// since the read loop looked: then nothing recorded it running).
    struct Admitted: Sendable {
        var admission: Admission
        var limited: Bool
    }

    /// Asks Redis whether deliveries may start under the limits that cover them
    /// (`acquire.lua`, one call for all): each takes its slots and rate and is recorded running,
    /// or is parked until it could pass and recorded waiting with the limit's name, spending no
    /// attempt. Goes through the write batcher, behind the jobs' earlier writes. When a limit
    /// changed since this worker read them, it reads them again and asks again.
    func admit(_ deliveries: [Delivery], control: ControlChannel, logger: Logger) async -> [Admitted] {
        var deliveries = deliveries
        for _ in 0..<3 {
            let asked = deliveries.filter { !$0.limits.isEmpty || $0.orderingKey != nil }
            guard !asked.isEmpty else { return deliveries.map { _ in Admitted(admission: .run([]), limited: false) } }
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
                delivery.limits.isEmpty && delivery.orderingKey == nil
                    ? Admitted(admission: .run([]), limited: false)
                    : Admitted(admission: answers.next() ?? .notRun, limited: true)
            }
        }
        logger.info("the queue's limits kept changing while jobs were checked; they come back after the lease")
        return deliveries.map { _ in Admitted(admission: .notRun, limited: true) }
    }

    /// One `acquire.lua` call: an admission per delivery, or nil when the worker's limits are
    /// out of date (`stale`). A failed call admits none (they come back after the lease).
    private func acquire(_ deliveries: [Delivery], control: ControlChannel, logger: Logger) async -> [Admission]? {
        let stored = state.withLock { Dictionary($0.limits.map { ($0.limit.name, $0.json) }) { first, _ in first } }
        let delayed = keys.delayed(group: configuration.group)
        let holder = slotHolder
        var stateKeys: [RedisArgument] = []
        var stateArguments: [RedisArgument] = []
        var stateNumbers: [String: Int] = [:]  // by limit name, and key for a per-key limit
        var slotsOf: [Int: LimitSlot] = [:]
        var jobArguments: [RedisArgument] = []
        var statusKeys: [RedisArgument] = []
        var jobSlots: [[LimitSlot]] = []
        for delivery in deliveries {
            guard case .run(let message, _) = delivery.plan else { continue }
            var numbers: [Int] = []
            var held: [LimitSlot] = []
            if let orderingKey = delivery.orderingKey {
                // Its key's turn first: a job waiting for it takes no slot and spends no rate.
                let stateName = "\u{1}" + orderingKey
                if let known = stateNumbers[stateName] {
                    numbers.append(known)
                } else {
                    stateNumbers[stateName] = stateNumbers.count + 1
                    numbers.append(stateNumbers.count)
                    let turn = keys.orderingTurn(group: configuration.group, key: orderingKey)
                    stateKeys += [
                        .string(turn.turn), .string(turn.waiting), .string(keys.orderedJobs(key: orderingKey)),
                        .string(turn.turn),
                    ]
                    stateArguments += ["o", .string(orderingKey), "", "", ""]
                }
            }
            // In the order the worker keeps them: concurrency first.
            for limit in delivery.limits {
                let key = limit.perKey ? message.key : nil
                let stateName = key.map { limit.name + "\u{0}" + $0 } ?? limit.name
                let number: Int
                if let known = stateNumbers[stateName] {
                    number = known
                } else {
                    number = stateNumbers.count + 1
                    stateNumbers[stateName] = number
                    let limitKeys = keys.limitState(name: limit.name, key: key)
                    let json = RedisArgument.string(stored[limit.name] ?? "")
                    switch limit.kind {
                    case .concurrency(let most):
                        let slot = LimitSlot(
                            held: limitKeys.held, holders: limitKeys.holders, handed: limitKeys.handed,
                            waiting: limitKeys.waiting, most: most, holder: holder)
                        stateKeys += slot.keys
                        stateArguments += ["c", .string(limit.name), .integer(Int64(most)), .string(holder), json]
                        slotsOf[number] = slot
                    case .rate(let count, let period, let burst):
                        // Four keys a state; a rate uses two (named twice: every key a script
                        // is given must be one the caller may touch, `ferry:*` in the ACL).
                        stateKeys += [.string(limitKeys.arrival), .string(limitKeys.reserved)]
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
            reply =
                try await control.transition(
                    Self.acquireScript, keys: scriptKeys, arguments: arguments, about: deliveries.map(\.entry.id)
                ).array ?? []
        } catch {
            logger.info("could not check the queue's limits; the jobs come back after the lease", metadata: redisFailure(error))
            if !slotsOf.isEmpty { renewSlotHolder(after: "a concurrency check (acquire.lua)") }
            return deliveries.map { _ in .notRun }
        }
        if reply.first?.string == "stale" { return nil }
        return zip(deliveries, zip(reply, jobSlots)).map { delivery, answer -> Admission in
            let (job, held) = answer
            let parts = job.array ?? []
            if parts.first == Self.runReply { return .run(held) }  // the hot path: no log line
            var logger = logger
            logger[metadataKey: "ferry.job_id"] = "\(delivery.jobID)"
            logger[metadataKey: "ferry.entry_id"] = "\(delivery.entry.id)"
            switch parts.first?.string {
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
        let task: Task<[Admitted], Never>
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
        _ admitted: Admitted, _ delivery: Delivery, message: JobMessage, control: ControlChannel, slots: JobSlots
    ) -> [LimitSlot]? {
        guard case .run(let taken) = admitted.admission else { return nil }
        if !taken.isEmpty { slots.hold(taken, for: delivery.entry.id) }
        if !admitted.limited && message.idempotencyKey == nil {
            recordState(
                .running, jobID: delivery.jobID, entryID: delivery.entry.id, attempt: delivery.attempt, control: control,
                fields: [:])
        }
        return taken
    }

    /// An ordering key's turn a job holds in this group, passed on at its outcome.
    struct OrderingTurn: Sendable {
        /// The key's `turn` and `waiting` keys (``QueueKeys/orderingTurn(group:key:)``).
        let turn: String
        let waiting: String
        /// The job's entry: only its own finished outcome moves the key.
        let entryID: String
        /// The key as given, and its field in the registry of blocked keys.
        let key: String
        let field: String
        /// The job was dead-lettered and `--ordering-on-dead block` stops the key.
        var block = false
    }

    /// The turn a delivery of an ordered job holds, or nil for a job without an ordering key.
    func orderingTurn(of delivery: Delivery) -> OrderingTurn? {
        guard let key = delivery.orderingKey else { return nil }
        let keys = keys.orderingTurn(group: configuration.group, key: key)
        return OrderingTurn(
            turn: keys.turn, waiting: keys.waiting, entryID: delivery.entry.id, key: key,
            field: QueueKeys.orderingBlockedField(group: configuration.group, key: key))
    }

    /// Frees a finished job's slots and passes its ordering key's turn on, through the write
    /// batcher, after its outcome: the flush does it for every finished job in one call (at the
    /// end of its `ack.lua`, or `release.lua`), handing each slot to the first job waiting for
    /// it. If it never lands (a lost connection), the slots free when this worker's lease on them
    /// ends, and the key's next job finds the turn free (its holder finished) when it asks.
    func release(_ held: [LimitSlot], _ turn: OrderingTurn?, control: ControlChannel) {
        guard !held.isEmpty || turn != nil else { return }
        control.enqueueRelease(ControlChannel.SlotRelease(slots: held, turn: turn)) { [self] result in
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
                    "could not release the job's limit slots or ordering key; they free when their lease ends",
                    metadata: redisFailure(error))
                if !held.isEmpty { renewSlotHolder(after: "a release of concurrency slots") }
            }
        }
    }

    /// The keys and arguments that release the slots and ordering turns of every job a flush
    /// releases, as `release_slots` in the scripts' prelude reads them (`release.lua`, or the
    /// tail of an `ack.lua` call): a count per limit state, then each turn.
    func releaseArguments(_ releases: [ControlChannel.SlotRelease]) -> (keys: [RedisArgument], arguments: [RedisArgument]) {
        var ended: [LimitSlot: Int] = [:]
        var order: [LimitSlot] = []
        for slot in releases.lazy.flatMap(\.slots) {
            if ended[slot] == nil { order.append(slot) }
            ended[slot, default: 0] += 1
        }
        var arguments: [RedisArgument] = [
            .integer(configuration.lease.milliseconds), .string(keys.delayedPrefix), .string(configuration.group),
            .integer(Int64(order.count)),
        ]
        for slot in order {
            arguments += [.integer(Int64(slot.most)), .integer(Int64(ended[slot] ?? 0)), .string(slot.holder)]
        }
        var scriptKeys = order.flatMap(\.keys)
        let turns = releases.compactMap(\.turn)
        arguments.append(.integer(Int64(turns.count)))
        if !turns.isEmpty {
            scriptKeys += [
                .string(keys.jobs), .string(keys.delayed(group: configuration.group).due), .string(keys.orderingBlocked),
            ]
            for turn in turns {
                scriptKeys += [.string(turn.turn), .string(turn.waiting)]
                arguments += [.string(turn.entryID), turn.block ? "block" : "release", .string(turn.field), .string(turn.key)]
            }
            arguments.append(.integer(configuration.keepFailed.milliseconds))
        }
        return (scriptKeys, arguments)
    }

    /// Extends this worker's slots with its leases (`extend_slots.lua`): one write per limit
    /// state and holder name under which its running jobs hold slots.
    func extendSlots(_ held: [LimitSlot], control: ControlChannel) async throws(RedisError) {
        struct Holding: Hashable, Comparable {
            let holders: String
            let holder: String
            static func < (a: Holding, b: Holding) -> Bool { (a.holders, a.holder) < (b.holders, b.holder) }
        }
        let holdings = Set(held.map { Holding(holders: $0.holders, holder: $0.holder) }).sorted()
        guard !holdings.isEmpty else { return }
        try await control.run(
            Self.extendSlotsScript, keys: holdings.map { .string($0.holders) },
            arguments: [.integer(configuration.lease.milliseconds)] + holdings.map { .string($0.holder) })
    }
}
