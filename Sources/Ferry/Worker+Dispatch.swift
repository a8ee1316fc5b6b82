import FerryRedis
import Foundation
import Logging
import Synchronization

// The read loop: reclaim, read, start a batch.

extension Worker {
    /// The read loop: reclaim idle entries when due, then read new ones, never more than free slots.
    func dispatch(reader: RedisConnection, control: ControlChannel, slots: JobSlots) async {
        var groupReady = false
        var groupExisted = false  // once it did, its disappearance is a recreation
        var lastReadID = ""  // where a recreated group goes on from
        var errorBackoff = Duration.milliseconds(100)
        var nextReclaim = ContinuousClock.now
        var nextRedelivery = ContinuousClock.now
        var nextPrune = ContinuousClock.now
        var nextRetention = ContinuousClock.now
        var reclaimCursor = ReclaimCursor()
        // Handed-back deliveries whose previous attempt's task had not quite ended here (it
        // parked the job a moment before): started once it has, never dropped.
        var waitingForPreviousRun: [(StreamEntry, Int)] = []
        // Short enough that a parked job comes back within a quarter second of its due time.
        let block = min(configuration.readBlock, configuration.reclaimInterval, Self.dueCheckInterval)

        var readsPaused = false
        // The last read took all it asked for: more entries wait, and the next read may ride
        // on the flush that acknowledges the jobs in flight (CarriedRead).
        var lastReadFull = false
        while !isStopping && !Task.isCancelled {
            loopTurned()
            var carried: Read?
            var carriedFailure: RedisError?
            if lastReadFull && groupReady && waitingForPreviousRun.isEmpty {
                let now = ContinuousClock.now
                let due =
                    now >= nextReclaim || now >= nextRedelivery || now >= nextRetention
                    || (configuration.pruneIdleConsumersAfter != nil && now >= nextPrune)
                if !due {
                    switch await carriedRead(control: control, slots: slots) {
                    case .read(let read, let asked) where !read.entries.isEmpty:
                        carried = read
                        lastReadFull = read.entries.count == asked
                    case .read: lastReadFull = false
                    case .failed(let error): carriedFailure = error
                    case .notCarried: break
                    }
                }
            }
            // A carried read's entries are this consumer's now: they run (or go back, when
            // paused) whatever the loop would have checked before reading itself.
            let reading = carried == nil && carriedFailure == nil
            let free = reading ? await slots.waitForFreeSlots() : carried?.entries.count ?? 1
            if reading {
                if isStopping || Task.isCancelled { break }
                // Redis refuses acknowledgements: new work would only run and fail to be acknowledged too.
                if acknowledgementsFailing {
                    if !readsPaused {
                        logger.warning("reads_paused: acknowledgements are failing; no new jobs are taken until they land")
                        readsPaused = true
                    }
                    try? await Task.sleep(for: .milliseconds(100))
                    continue
                }
                if readsPaused {
                    logger.warning("reads_resumed: acknowledgements land again")
                    readsPaused = false
                }
                // Paused (ferry queue pause): nothing starts; the pause is read every quarter second.
                if groupReady && isPaused {
                    await confirmPause(control)
                    try? await Task.sleep(for: .milliseconds(100))
                    continue
                }
            }
            do throws(RedisError) {
                if let carriedFailure { throw carriedFailure }
                if !groupReady {
                    let format = try await QueueFormat.claim(queue, connection: control.connection)
                    guard format == QueueFormat.current else {
                        let refusal = QueueFormat.refusal(queue, found: format)
                        logger.error("queue_format_unknown: \(refusal.message)")
                        state.withLock { $0.refusal = refusal }
                        stop()
                        break
                    }
                    if groupExisted {
                        for stream in laneStreams { try await recreateGroup(control, on: stream, after: lastReadID) }
                    } else {
                        try await ensureGroup(control, on: keys.jobs)
                    }
                    // Listed as the group's consumer from the start, not from its first job
                    // (Redis creates a blocked reader's consumer only once it is served), so a
                    // pause's confirmation (ferry queue pause --wait) knows to wait for it.
                    try await control.send(
                        RedisCommand(
                            "XGROUP CREATECONSUMER",
                            [.string(keys.jobs), .string(configuration.group), .string(configuration.consumer)]))
                    // Listed among the Redis's queues (QueueRegistry) from the worker's start,
                    // once its stream exists, as a publisher lists it: a listing that prunes
                    // names without a stream never sees this one registered and streamless.
                    try await control.send(QueueRegistry.adding([queue.rawValue]))
                    groupReady = true
                    groupExisted = true
                    // A worker started on a paused or limited queue must not take a batch before it knows.
                    await refreshPause(control)
                    await refreshLimits(control)
                    await refreshLanes(control)
                    if isPaused { continue }
                }
                if let after = configuration.pruneIdleConsumersAfter, ContinuousClock.now >= nextPrune {
                    nextPrune = .now + min(after / 2, .seconds(60))
                    await pruneIdleConsumers(control, idleFor: after)
                }
                if ContinuousClock.now >= nextRetention {
                    nextRetention = .now + configuration.retentionInterval
                    await enforceRetention(control)
                }
                var delivered = Array(waitingForPreviousRun.prefix(free))
                waitingForPreviousRun.removeFirst(delivered.count)
                var handedBack = Set(delivered.map(\.0.id))  // parked deliveries that came due
                // Reclaims are rare; after one, look for cancel requests without asking first.
                var cancelRequestsExist = true
                if reading && delivered.count < free && ContinuousClock.now >= nextReclaim {
                    delivered += try await reclaim(control, cursor: &reclaimCursor, count: free - delivered.count, slots: slots)
                    // A pass that stopped part-way through the pending list goes on at once.
                    nextReclaim = reclaimCursor.atStart ? .now + configuration.reclaimInterval : .now
                }
                if reading && takeSlotHandedToGroup() { nextRedelivery = .now }  // a finished job's slot went to one of ours
                if reading && delivered.count < free && ContinuousClock.now >= nextRedelivery {
                    let due = try await redeliverDue(control, count: free - delivered.count)
                    delivered += due.deliveries
                    handedBack.formUnion(due.deliveries.map(\.0.id))
                    // More are due: take them as soon as slots free up.
                    nextRedelivery = due.more ? .now : .now + Self.dueCheckInterval
                }
                if delivered.isEmpty {
                    // While jobs wait on limits, slots handed to them are looked for every 50 ms.
                    let lanes = laneStreams
                    let blockFor = limitWaitsRecently ? min(block, .milliseconds(50)) : block
                    let read: Read
                    if let carried {
                        read = carried
                    } else {
                        read =
                            lanes.count > 1
                            ? try await readLanes(reader, lanes, count: free, block: blockFor, control: control)
                            : try await self.read(reader, count: free, block: blockFor)
                        lastReadFull = read.entries.count == free && !limitWaitsRecently
                    }
                    delivered = read.entries.map { ($0, 1) }
                    if let last = read.entries.map(\.id).max(by: { !StreamEntry.isID($1, atOrBefore: $0) }) { lastReadID = last }
                    // A lane this worker does not read yet: read it from the next batch on.
                    if read.lanes != lanes.count - 1 { await refreshLanes(control) }
                    cancelRequestsExist = read.cancelRequestsExist
                    // Paused while the read blocked: what it took goes back to the group, unrun.
                    if isPaused && !delivered.isEmpty {
                        await putBack(delivered.map(\.0), control: control)
                        continue
                    }
                }
                // An entry this worker reclaimed from itself (a lease extension fell behind) is
                // left to the copy already running here, before its batch records any status.
                // Only this loop starts jobs, so one not running now is still not running below.
                // A handed-back retry whose failed attempt's task is still ending here waits for it.
                var deliveries = delivered.filter { entry, attempt in
                    guard slots.isRunning(entry.id) else { return true }
                    if handedBack.contains(entry.id) {
                        waitingForPreviousRun.append((entry, attempt))
                        return false
                    }
                    logger.info(
                        "reclaimed_own_running_entry: left to the copy already running here",
                        metadata: ["ferry.entry_id": "\(entry.id)"])
                    return false
                }.map { plan($0.0, attempt: $0.1, handedBack: handedBack.contains($0.0.id)) }
                // No read-ahead on a queue with priority lanes (an urgent job published next would
                // wait behind jobs read ahead), nor for jobs admitted in batches (limits, ordering keys).
                slots.allowReadAhead(laneStreams.count == 1 && !deliveries.contains(where: \.admittedInBatch))
                // Jobs beyond the free handler slots were read ahead: each waits in line for
                // one, and nothing of it is written before (runInTurn).
                let ahead = Array(deliveries.dropFirst(slots.freeHandlerSlots))
                deliveries.removeLast(ahead.count)
                // Jobs under rate or concurrency limits run only once admitted: one call for the
                // batch, which their tasks await while this loop reads on.
                if deliveries.contains(where: \.admittedInBatch) { deliveries = askingAdmission(deliveries, control: control) }
                if deliveries.isEmpty && ahead.isEmpty && !waitingForPreviousRun.isEmpty {
                    try? await Task.sleep(for: .milliseconds(5))  // the previous run is ending; no read blocked meanwhile
                }
                let cancelled = await startBatch(deliveries, cancelRequestsExist: cancelRequestsExist, control: control)
                for delivery in deliveries {
                    let cancelRequested = cancelled.contains(delivery.jobID)
                    slots.start(entryID: delivery.entry.id, jobID: delivery.jobID) { _ in
                        await self.process(delivery, cancelRequested: cancelRequested, control: control, slots: slots)
                    }
                }
                let checksCancels = cancelRequestsExist
                for delivery in ahead {
                    slots.start(entryID: delivery.entry.id, jobID: delivery.jobID, ahead: true) { turn in
                        await self.runInTurn(
                            delivery, turn: turn, cancelRequestsExist: checksCancels, control: control, slots: slots)
                    }
                }
                errorBackoff = .milliseconds(100)
            } catch {
                if error.prefix == .noGroup {
                    logger.warning("the stream or group disappeared (NOGROUP); recreating it", metadata: redisFailure(error))
                    groupReady = false
                    continue
                }
                logger.info(
                    "Redis error in the read loop; backing off",
                    metadata: redisFailure(error).merging(["ferry.backoff_ms": "\(errorBackoff.milliseconds)"]) { $1 })
                try? await Task.sleep(for: errorBackoff)
                errorBackoff = min(errorBackoff * 2, .seconds(5))
            }
        }
    }

    /// Waits for the write batcher's next flush to carry the loop's read (``CarriedRead``): as
    /// many entries as slots are free when the flush is built. Called off while the worker
    /// stops, pauses, waits on limits or its acknowledgements fail, and when a slot is free with
    /// no flush under way.
    private func carriedRead(control: ControlChannel, slots: JobSlots) async -> CarriedRead.Outcome {
        guard configuration.carriesReads else { return .notCarried }
        return await control.carriedRead.next(
            count: { [self] in
                isStopping || isPaused || acknowledgementsFailing || limitWaitsRecently ? nil : slots.free
            },
            idle: { slots.freeHandlerSlots > 0 }, flushing: { control.writes.isFlushing })
    }

    /// Creates the group at the start of the stream (`0`) or lane, so jobs published before the
    /// first worker started are delivered, never skipped. An existing group is fine.
    func ensureGroup(_ control: ControlChannel, on stream: String) async throws(RedisError) {
        do {
            try await control.send(
                RedisCommand("XGROUP CREATE", [.string(stream), .string(configuration.group), "0", "MKSTREAM"]))
            logger.info("group_created", metadata: ["ferry.stream": "\(stream)"])
        } catch  where error.prefix == .busyGroup {
            return
        }
    }

    /// Trims the job stream to ``Configuration/retention`` (entries every group has finished
    /// only) and the dead-letter stream to ``Configuration/deadLetterRetention``, and removes
    /// index entries of expired statuses (``JobIndex/trimExpired(keepSucceeded:keepFailed:budget:calls:)``), when this
    /// worker gets the queue's retention lock for the interval (one worker of many does it). A
    /// failure is logged and tried again next time.
    func enforceRetention(_ control: ControlChannel) async {
        do {
            let locked = try await control.send(
                RedisCommand(
                    "SET",
                    [
                        .string(keys.retentionLock), .string(configuration.consumer), "NX", "PX",
                        .integer(configuration.retentionInterval.milliseconds),
                    ]))
            guard locked != .null else { return }
            var trimmed: (jobs: Int64, deadLetters: Int64, index: Int) = (0, 0, 0)
            if let retention = configuration.retention {
                for stream in laneStreams {
                    trimmed.jobs +=
                        try await control.run(
                            Self.trimScript, keys: [.string(stream)],
                            arguments: [.integer(retention.milliseconds), .string(keys.delayedPrefix)]
                        )
                        .integer ?? 0
                }
            }
            if let retention = configuration.deadLetterRetention {
                trimmed.deadLetters =
                    try await control.run(
                        Self.trimDeadScript, keys: [.string(keys.deadLetter)], arguments: [.integer(retention.milliseconds)]
                    ).integer ?? 0
            }
            do {
                trimmed.index = try await JobIndex(queue: queue, connection: control.connection).trimExpired(
                    keepSucceeded: configuration.keepSucceeded, keepFailed: configuration.keepFailed)
                trimmed.index += try await Workflows(queue: queue, connection: control.connection).trimIndex(
                    keepSucceeded: configuration.keepSucceeded, keepFailed: configuration.keepFailed)
            } catch {
                logger.info("the index of jobs was not trimmed", metadata: error.redisError.map(redisFailure) ?? [:])
            }
            let metadata: Logger.Metadata = [
                "ferry.trimmed_jobs": "\(trimmed.jobs)", "ferry.trimmed_dead_letters": "\(trimmed.deadLetters)",
                "ferry.trimmed_index": "\(trimmed.index)",
            ]
            if trimmed.jobs + trimmed.deadLetters > 0 || trimmed.index > 0 {
                logger.info("retention_trimmed", metadata: metadata)
            } else {
                logger.debug("retention_pass", metadata: metadata)
            }
        } catch {
            logger.info("the retention pass failed", metadata: redisFailure(error))
        }
    }

    /// Deletes the group's consumers idle for `idleFor` that hold no pending entry
    /// (`prune_consumers.lua`). A failure is logged and tried again next time.
    func pruneIdleConsumers(_ control: ControlChannel, idleFor: Duration) async {
        do {
            var pruned: Set<String> = []
            for stream in laneStreams {
                let reply = try await control.run(
                    Self.pruneConsumersScript, keys: [.string(stream)],
                    arguments: [.string(configuration.group), .string(configuration.consumer), .integer(idleFor.milliseconds)])
                pruned.formUnion(reply.array?.compactMap(\.string) ?? [])
            }
            for name in pruned.sorted() {
                logger.info(
                    "consumer_pruned: idle with nothing pending (a worker that stopped without leaving)",
                    metadata: ["ferry.pruned_consumer": "\(name)", "ferry.idle_ms_at_least": "\(idleFor.milliseconds)"])
            }
        } catch {
            logger.info("could not prune idle consumers", metadata: redisFailure(error))
        }
    }

    /// Makes the group again after it disappeared while this worker ran (`recreate_group.lua`):
    /// after `lastReadID` (or at the end) of a stream that holds entries, so jobs already handled
    /// do not all run again, as a recreated Pub/Sub subscription replays nothing; at its start
    /// when the stream is new or empty. A warning names the entries a person may want to replay
    /// with `ferry group seek`.
    func recreateGroup(_ control: ControlChannel, on stream: String, after lastReadID: String) async throws(RedisError) {
        let reply = try await control.run(
            Self.recreateGroupScript, keys: [.string(stream)],
            arguments: [.string(configuration.group), .string(lastReadID)])
        let parts = (reply.array ?? []).map { $0.string ?? $0.integer.map(String.init) ?? "?" }
        switch parts.first {
        case "start":
            logger.warning("group_recreated: the consumer group disappeared and was made again at the start of the empty stream")
        case let position? where position != "exists" && parts.count == 4:
            logger.warning(
                "group_recreated: the consumer group disappeared while this worker ran (XGROUP DESTROY?) and was made again after the last entry it read, so the jobs it had handled do not run again; to replay entries that never ran, run: ferry group seek \(queue) \(configuration.group) --to <entry ID or RFC 3339 time> (the group then reads after it)",
                metadata: [
                    "ferry.position": "\(position)", "ferry.stream_first_id": "\(parts[1])",
                    "ferry.stream_last_id": "\(parts[2])",
                    "ferry.stream_entries": "\(parts[3])",
                ])
        default:
            break  // another worker made it first
        }
    }

    /// What one read of new entries found.
    struct Read {
        var entries: [StreamEntry]
        /// Someone may have asked to cancel a job (the cancel requests exist).
        var cancelRequestsExist: Bool
        /// How many priority lanes other than normal the queue has now (`SCARD`): a worker that
        /// knows fewer reads them again at once.
        var lanes: Int
    }

    /// Reads new entries and, in the same round trip, whether anyone has asked to cancel a job
    /// (Redis runs the `EXISTS` once the blocked read returns), so a batch only pays for the
    /// cancel check when there is something to find, and how many priority lanes there are.
    func read(_ reader: RedisConnection, count: Int, block: Duration) async throws(RedisError) -> Read {
        let replies = try await reader.pipeline(readCommands(count: count, block: block), timeout: block + redis.commandTimeout)
        return try readReplies(replies[...])
    }

    /// A read of up to `count` new entries of the normal lane (blocking for `block`, or not at
    /// all for nil), then whether cancel requests exist and how many other lanes there are.
    func readCommands(count: Int, block: Duration?) -> [RedisCommand] {
        precondition(count > 0, "XREADGROUP COUNT 0 reads the whole stream")
        let blocking: [RedisArgument] = block.map { ["BLOCK", .integer($0.milliseconds)] } ?? []
        let read = RedisCommand(
            "XREADGROUP",
            ["GROUP", .string(configuration.group), .string(configuration.consumer), "COUNT", .integer(Int64(count))]
                + blocking + ["STREAMS", .string(keys.jobs), ">"])
        return [read, RedisCommand("EXISTS", [.string(keys.cancelRequests)]), RedisCommand("SCARD", [.string(keys.lanes)])]
    }

    /// What the replies to ``readCommands(count:block:)`` say.
    func readReplies(_ replies: ArraySlice<RedisReply>) throws(RedisError) -> Read {
        let at = replies.startIndex  // a flush's replies: the read's are its last three
        let (read, cancelRequests, laneCount) = (replies[at], replies[at + 1], replies[at + 2])
        if case .error(let message) = read {
            throw RedisError.server(message, command: "XREADGROUP", endpoint: redis.redactedURL)
        }
        let cancelRequestsExist = cancelRequests != .integer(0)  // an error reply counts as "maybe"
        let lanes = Int(laneCount.integer ?? 0)
        // [[stream, [[id, [field, value, ...]], ...]]], or nil when BLOCK timed out.
        guard let streams = read.array, let first = streams.first?.array, first.count == 2 else {
            return Read(entries: [], cancelRequestsExist: cancelRequestsExist, lanes: lanes)
        }
        return Read(entries: StreamEntry.entries(from: first[1]), cancelRequestsExist: cancelRequestsExist, lanes: lanes)
    }

    /// Where the reclaim scan of each lane's pending list resumes: `-` for the start, else `(ID`.
    struct ReclaimCursor: Sendable {
        var starts: [String: String] = [:]
        /// Every lane's scan went through its whole pending list last time.
        var atStart: Bool { starts.values.allSatisfy { $0 == "-" } }
    }

    /// How many pending entries one reclaim pass looks at, at most.
    static let reclaimScanLimit = 100

    /// Claims entries whose lease ran out: their worker crashed, froze, or was cut off from
    /// Redis. Failed jobs are not here (they wait in the group's later deliveries), so an entry
    /// idle for the lease is due. Entries deleted while pending are counted and logged. Returns
    /// the claimed entries and attempts, from each priority lane in turn.
    func reclaim(
        _ control: ControlChannel, cursor: inout ReclaimCursor, count: Int, slots: JobSlots
    ) async throws(RedisError) -> [(StreamEntry, Int)] {
        var claimed: [(StreamEntry, Int)] = []
        for stream in laneStreams where claimed.count < count {
            var start = cursor.starts[stream] ?? "-"
            claimed += try await reclaim(stream, control, from: &start, count: count - claimed.count, slots: slots)
            cursor.starts[stream] = start
        }
        return claimed
    }

    /// ``reclaim(_:cursor:count:slots:)`` in one lane, its scan resuming at `start`.
    private func reclaim(
        _ stream: String, _ control: ControlChannel, from start: inout String, count: Int, slots: JobSlots
    ) async throws(RedisError) -> [(StreamEntry, Int)] {
        let lease = configuration.lease.milliseconds
        let pending = try await control.send(
            RedisCommand(
                "XPENDING",
                [
                    .string(stream), .string(configuration.group), "IDLE", .integer(lease), .string(start), "+",
                    .integer(Int64(Self.reclaimScanLimit)),
                ]))
        let items = pending.array ?? []
        var due: [(id: String, deliveries: Int)] = []
        var lastConsidered: String?
        for item in items {
            guard let fields = item.array, fields.count >= 4, let id = fields[0].string, let deliveries = fields[3].integer
            else { continue }
            if due.count == count { break }
            lastConsidered = id
            // Its own running job, whose lease extension fell behind (a loaded machine, a Redis
            // hiccup): claiming it would only raise its delivery count.
            if fields[1].string == configuration.consumer && slots.isRunning(id) { continue }
            due.append((id, Int(deliveries)))
        }
        let scannedAll = items.count < Self.reclaimScanLimit && lastConsidered == items.last?.array?.first?.string
        start = scannedAll ? "-" : lastConsidered.map { "(" + $0 } ?? start
        if due.isEmpty { return [] }

        let reply = try await control.run(
            Self.claimScript, keys: [.string(stream)],
            arguments: [.string(configuration.group), .string(configuration.consumer), .integer(lease)]
                + due.map { .string($0.id) })
        guard let parts = reply.array, parts.count == 2 else { return [] }
        if let deleted = parts[1].array?.compactMap(\.string), !deleted.isEmpty {
            await recordDeleted(deleted.map { ($0, nil) }, running: false, control: control)
        }
        let deliveries = Dictionary(due.map { ($0.id, $0.deliveries + 1) }) { first, _ in first }
        metrics.reclaimed(parts[0].array?.count ?? 0)
        return StreamEntry.entries(from: parts[0]).map { entry in
            let attempt = deliveries[entry.id] ?? 2
            logger.info(
                "reclaimed",
                metadata: [
                    "ferry.entry_id": "\(entry.id)", "ferry.job_id": "\(entry.jobID)", "ferry.delivery_attempt": "\(attempt)",
                ])
            return (entry, attempt)
        }
    }
}
