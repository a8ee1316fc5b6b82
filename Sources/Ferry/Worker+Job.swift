import FerryRedis
import Foundation
import Logging
import Synchronization

// One delivered job, from its plan to its outcome.

extension Worker {
    /// A delivered entry and what it asks of this worker, decided before its task starts so a
    /// read batch can be started (cancel requests, `running` status) in one round trip.
    struct Delivery: Sendable {
        enum Plan: Sendable {
            /// Redriven for another group, which ran it the first time: only acknowledged here.
            case acknowledgeOnly
            /// Dead-lettered without running: malformed, of an unknown type, or delivered
            /// more than its attempts allow.
            case deadLetter(errorClass: String, error: String)
            case run(JobMessage, any JobHandler)
        }

        /// What a delivery is from the read on, in one box: a delivery is copied into the read
        /// loop's batch, its task, its admission and its outcome's writes, and a copy of the box
        /// is one reference count where a copy of these fields was one for each of their strings,
        /// arrays and the handler (docs/design.md, "Reference counting a job").
        private final class Core: Sendable {
            let entry: StreamEntry
            let attempt: Int
            let jobID: String
            let plan: Plan

            init(entry: StreamEntry, attempt: Int, jobID: String, plan: Plan) {
                self.entry = entry
                self.attempt = attempt
                self.jobID = jobID
                self.plan = plan
            }
        }

        private let core: Core
        var entry: StreamEntry { core.entry }
        var attempt: Int { core.attempt }
        /// The producer's `job_id`, or the entry ID when there is none (or it is unreadable).
        var jobID: String { core.jobID }
        var plan: Plan { core.plan }
        /// Taken from the group's later deliveries: its time has come (or someone made it due).
        var handedBack = false
        /// The rate and concurrency limits that cover the job (``QueueLimit/covers(_:)``): it
        /// starts only once `acquire.lua` admits it, which records it running.
        var limits: [QueueLimit] = []
        /// The job's ordering key: it runs only in its key's turn in this group (acquire.lua),
        /// which passes on at its outcome, also when it is dead-lettered without running.
        var orderingKey: String?
        /// Its read batch's admission under the limits (``Worker/admit(_:control:logger:)``, one
        /// call for the batch, running while the read loop reads on) and its place in it; nil
        /// when it was not asked there (no limits, or it waits for its `deliver_at` first).
        var admission: BatchAdmission?

        init(entry: StreamEntry, attempt: Int, jobID: String, plan: Plan) {
            core = Core(entry: entry, attempt: attempt, jobID: jobID, plan: plan)
        }

        /// Whether the read loop admits it under its limits before its task starts: a job that
        /// first waits for its `deliver_at` is admitted once that has come.
        var admittedInBatch: Bool {
            if case .run = plan { return (!limits.isEmpty || orderingKey != nil) && !waitsForDeliveryTime }
            return false
        }

        /// The message of a job that runs without the idempotency guard, whose `running` status
        /// the batch start records (a guarded job records it once its key is taken, a job with a
        /// `deliver_at` once Redis's clock says it is due, a limited one once it is admitted).
        var unguardedMessage: JobMessage? {
            if case .run(let message, _) = plan, message.idempotencyKey == nil, !waitsForDeliveryTime, limits.isEmpty,
                message.orderingKey == nil
            {
                return message
            }
            return nil
        }

        /// A first delivery of a job with a `deliver_at`, read from the stream: parked instead of
        /// run if that is still ahead.
        var waitsForDeliveryTime: Bool {
            if case .run(let message, _) = plan { return message.deliverAt != nil && attempt == 1 && !handedBack }
            return false
        }
    }

    func plan(_ entry: StreamEntry, attempt: Int, handedBack: Bool = false) -> Delivery {
        var delivery = decide(entry, attempt: attempt)
        delivery.handedBack = handedBack
        return delivery
    }

    private func decide(_ entry: StreamEntry, attempt: Int) -> Delivery {
        if let target = entry.value(of: WireFormat.Field.redriveGroup), target != Array(configuration.group.utf8) {
            return Delivery(entry: entry, attempt: attempt, jobID: entry.jobID, plan: .acknowledgeOnly)
        }
        let message: JobMessage
        do {
            message = try entry.decodedJob(maxPayloadBytes: configuration.maxPayloadBytes)
        } catch {
            return Delivery(
                entry: entry, attempt: attempt, jobID: entry.id,
                plan: .deadLetter(errorClass: "malformed_entry", error: error.description))
        }
        let jobID = message.jobID ?? entry.id
        var delivery: Delivery
        if attempt > maxAttempts(of: message) {
            delivery = Delivery(
                entry: entry, attempt: attempt, jobID: jobID,
                plan: .deadLetter(
                    errorClass: "worker_lost",
                    error: "delivered \(attempt) times without an outcome: the workers running it stopped or crashed"))
        } else if let handler = handlers[message.type] ?? fallbackHandler {
            delivery = Delivery(entry: entry, attempt: attempt, jobID: jobID, plan: .run(message, handler))
            delivery.limits = limits(covering: message)
        } else {
            delivery = Delivery(
                entry: entry, attempt: attempt, jobID: jobID,
                plan: .deadLetter(
                    errorClass: "unknown_type", error: "no handler for job type \"\(message.type.debugEscaped)\" in this worker"))
        }
        delivery.orderingKey = message.orderingKey
        return delivery
    }

    /// How many deliveries the job may have: its own `max_attempts`, else the worker's.
    func maxAttempts(of message: JobMessage) -> Int {
        message.maxAttempts ?? configuration.retryPolicy(for: message.type).maxAttempts
    }

    /// Starts a read batch (`start_batch.lua`): finds the jobs someone asked to cancel and
    /// records the others that run unguarded as `running`. When no one asked to cancel anything,
    /// the records join the next flush of the write batcher and the jobs start at once; the
    /// batcher keeps each job's later writes behind its record. Skipped when there is nothing to
    /// do. If Redis fails here, no job is taken as cancelled (a running one is still caught at
    /// the next lease extension) and the status catches up at the job's outcome.
    /// Returns the job ids to cancel.
    func startBatch(_ deliveries: [Delivery], cancelRequestsExist: Bool, control: ControlChannel) async -> Set<String> {
        // A job about to be dead-lettered without running (an unknown type, too many deliveries)
        // is asked about too: one someone asked to cancel ends cancelled, as it would have had
        // it run, not dead with a reason no one needs to act on.
        let cancellable = deliveries.filter { if case .acknowledgeOnly = $0.plan { false } else { true } }
        let recorded = configuration.recordsStatus ? deliveries.filter { $0.unguardedMessage != nil } : []
        if recorded.isEmpty && (!cancelRequestsExist || cancellable.isEmpty) { return [] }
        let checked = cancelRequestsExist ? cancellable.map(\.jobID) : []
        let startedAt = nowMilliseconds()
        let records = recorded.map { delivery in
            ControlChannel.RunningRecord(
                jobID: delivery.jobID, type: delivery.unguardedMessage?.type ?? "", entryID: delivery.entry.id,
                attempt: delivery.attempt, startedAt: startedAt, key: delivery.unguardedMessage?.key ?? "")
        }
        if checked.isEmpty {
            control.enqueueStart(records)
            return []
        }
        do {
            let command = startBatchCommand(records, checking: checked, at: startedAt)
            return startedBatch(try await control.send(command))
        } catch {
            logger.info("could not start the batch in Redis; statuses catch up later", metadata: redisFailure(error))
            return []
        }
    }

    /// The `start_batch.lua` call that records `records` as running and asks whether any job
    /// of `checked` is to be cancelled.
    func startBatchCommand(
        _ records: [ControlChannel.RunningRecord], checking checked: [String] = [], at now: Int64
    ) -> RedisCommand {
        var arguments: [RedisArgument] = [
            .integer(now), .string(configuration.consumer), .string(configuration.group), .string(keys.statusIndexPrefix),
            .integer(Int64(checked.count)),
        ]
        arguments += checked.map { .string($0) }
        for record in records {
            arguments += [
                .string(record.jobID), .string(record.type), .string(record.entryID), .integer(Int64(record.attempt)),
                .string(record.key),
            ]
        }
        let scriptKeys: [RedisArgument] =
            [.string(keys.cancelRequests)] + records.map { .string(keys.jobStatus(jobID: $0.jobID)) }
        return Self.startBatchScript.command(keys: scriptKeys, arguments: arguments)
    }

    /// Reads `start_batch.lua`'s reply: returns the job ids to cancel, and logs the jobs whose
    /// running record Redis refused (their status had already moved on for the entry).
    func startedBatch(_ reply: RedisReply) -> Set<String> {
        let parts = reply.array ?? []
        for jobID in parts.dropFirst().first?.array?.compactMap(\.string) ?? [] {
            logger.warning(
                "transition_refused: the job's status had already moved on for this entry; its running record was not written",
                metadata: ["ferry.job_id": "\(jobID)"])
        }
        return Set(parts.first?.array?.compactMap(\.string) ?? [])
    }

    /// Runs a delivery read ahead (``Configuration/readAhead``) once its wait for a handler slot
    /// ended (`turn`): its start and admission are the batch's of one, as the read loop makes
    /// them for a batch. The worker stopping or pausing first hands it back to the group, unrun,
    /// with nothing of it written; a cancel request ends it cancelled without running.
    func runInTurn(
        _ delivery: Delivery, turn: JobSlots.Turn, cancelRequestsExist: Bool, control: ControlChannel, slots: JobSlots
    ) async -> JobSlots.Exit {
        switch turn {
        case .cancelled:
            return await process(delivery, cancelRequested: true, control: control, slots: slots)
        case .run where !isStopping && !isPaused:
            let asking = delivery.admittedInBatch ? askingAdmission([delivery], control: control) : [delivery]
            let cancelled = await startBatch(asking, cancelRequestsExist: cancelRequestsExist, control: control)
            return await process(
                asking[0], cancelRequested: cancelled.contains(delivery.jobID), control: control, slots: slots)
        case .run, .handBack:
            await putBack([(delivery.entry, delivery.attempt)], control: control)
            logger.debug("read_ahead_put_back", metadata: ["ferry.entry_id": "\(delivery.entry.id)"])
            return .done
        }
    }

    /// Runs one delivery to its outcome. Returns ``JobSlots/Exit/acknowledging`` when the job
    /// succeeded and its acknowledgement, batched with others' and not waited for, is on its way.
    func process(
        _ delivery: Delivery, cancelRequested: Bool, control: ControlChannel, slots: JobSlots
    ) async -> JobSlots.Exit {
        let entry = delivery.entry
        let attempt = delivery.attempt
        let jobID = delivery.jobID
        var logger = self.logger
        // Every per-job line is info or debug; below that level, skip the metadata (a handler
        // may re-render its metadata on every change, a cost paid per job). One update per job.
        if logger.logLevel <= .info {
            logger.handler.metadata.merge(
                ["ferry.entry_id": "\(entry.id)", "ferry.delivery_attempt": "\(attempt)", "ferry.job_id": "\(jobID)"]
            ) { $1 }
        }

        // Slots go back after the job's outcome, in the write batcher's order, to waiting jobs,
        // and its ordering key's turn passes on (or stops, at a dead letter under `block`).
        var limitSlots: [LimitSlot] = []
        var turn: OrderingTurn?
        defer { release(limitSlots, turn, control: control) }
        /// Whether a dead letter that landed stops the job's ordering key.
        func deadLettered(_ moved: Bool) { turn?.block = moved && configuration.orderingOnDead == .block }
        /// Before a dead letter under `block`: the key's turn says its owner is ending, in the
        /// flush before the dead letter's, so no worker takes the turn between the dead letter
        /// and the block that follows it.
        func deadLettering() {
            if let turn, configuration.orderingOnDead == .block {
                control.enqueueStatus(
                    [RedisCommand("HSET", [.string(turn.turn), "ending", .string(turn.entryID)])], about: [turn.entryID])
            }
        }

        let message: JobMessage
        let handler: any JobHandler
        switch delivery.plan {
        case .acknowledgeOnly:
            logger.debug("redrive_skip: redriven for another group")
            await acknowledge(entry.id, control: control, logger: logger)
            return .done
        case .deadLetter(let errorClass, let error):
            turn = orderingTurn(of: delivery)
            if cancelRequested {
                await cancel(jobID, entry: entry, attempt: attempt, control: control, logger: logger)
                return .done
            }
            deadLettering()
            deadLettered(
                await deadLetter(
                    entry, jobID: jobID, attempt: attempt, errorClass: errorClass, error: error, control: control,
                    logger: logger))
            return .done
        case .run(let decoded, let chosen):
            message = decoded
            handler = chosen
        }
        if let traceparent = message.traceparent, logger.logLevel <= .info {
            logger[metadataKey: "trace.traceparent"] = "\(traceparent)"  // every line of the job joins its trace
        }

        if let batch = delivery.admission {
            let admitted = await batch.task.value[batch.index]
            guard let taken = started(admitted, delivery, message: message, control: control, slots: slots) else { return .done }
            limitSlots = taken
            turn = orderingTurn(of: delivery)
        }

        if cancelRequested {
            await cancel(jobID, entry: entry, attempt: attempt, control: control, logger: logger)
            return .done
        }
        if delivery.waitsForDeliveryTime, let deliverAt = message.deliverAt {
            switch await park(
                entry.id, jobID: jobID, type: message.type, attempt: attempt, until: .at(deliverAt), why: .notYetDue,
                control: control, logger: logger)
            {
            case .parked(let dueAt):
                logger.info("job_parked_until_deliver_at", metadata: ["ferry.deliver_at": "\(dueAt)"])
                return .done
            case .lost, .failed:
                return .done
            case .due:
                var due = delivery
                due.handedBack = true  // read early, now due: no longer a first look at the entry
                let admitted =
                    await admit([due], control: control, logger: logger).first ?? Admitted(admission: .notRun, limited: true)
                guard let taken = started(admitted, due, message: message, control: control, slots: slots) else { return .done }
                limitSlots = taken
                turn = orderingTurn(of: delivery)
            }
        }
        var lock: IdempotencyLock?
        if let key = message.idempotencyKey {
            lock = await mayRun(
                entry.id, jobID: jobID, type: message.type, idempotencyKey: key, attempt: attempt, control: control,
                logger: logger)
            guard lock != nil else { return .done }
        }

        var job = Job(
            id: jobID, entryID: entry.id, queue: queue, group: configuration.group, deliveryAttempt: attempt, message: message,
            progressReporter: { [self] percent, stage in
                var fields: [String: RedisArgument] = ["progress": .integer(Int64(min(max(percent, 0), 100)))]
                if let stage { fields["stage"] = .string(stage) }
                // Waited for: a job with an idempotency key records its success in `complete.lua`,
                // sent outside the batcher, and a progress write still queued could land after it
                // (and clear its expiry).
                await recordProgress(jobID, entryID: entry.id, fields: fields, control: control)
            })
        // A workflow's step logs step_started / step_completed / step_failed with its workflow and step.
        let lifecycle = message.workflowStep == nil ? "job" : "step"
        if let (workflow, step) = message.workflowStep, logger.logLevel <= .info {
            logger[metadataKey: "ferry.workflow_id"] = "\(workflow)"
            logger[metadataKey: "ferry.step"] = "\(step)"
        }
        logger.info("\(lifecycle)_started", metadata: ["ferry.job_type": "\(message.type)"])
        metrics.started(publishedAt: message.publishedAt ?? entry.time)
        let started = ContinuousClock.now
        do {
            if let reference = message.dataReference {
                job.message.data = try await reference.fetch(
                    for: message, keys, ttl: configuration.payloadTTL, pipeline: control.pipeline)
            }
            job.workflow = try await workflowContext(of: message, control: control)
            try await Self.runHandler(handler, job, timeout: message.timeout ?? configuration.jobTimeout, lock: lock)
            let duration = ContinuousClock.now - started
            metrics.handlerDuration(duration, type: message.type, step: message.step)
            // Completed only once acknowledged: a worker that lost the entry meanwhile (a long
            // pause, a frozen connection) ran the handler for nothing, and must not say otherwise.
            let completed: @Sendable (Logger) -> Void = { [self] logger in
                logger.info("\(lifecycle)_completed", metadata: ["ferry.latency_ms": "\(duration.milliseconds)"])
                metrics.job(.completed, type: message.type)
                notify(.succeeded, jobID: jobID, entry: entry, attempt: attempt, message: message)
            }
            if let (workflow, step) = message.workflowStep {
                if await endStep(
                    entry.id, jobID: jobID, workflow: workflow, step: step, outcome: .succeeded, processing: duration,
                    result: job.workflow?.resultSink.value.withLock { $0 }, control: control, logger: logger)
                {
                    completed(logger)
                }
                return .done
            }
            if let key = message.idempotencyKey, let lock {
                if await complete(
                    entry.id, jobID: jobID, idempotencyKey: key, lock: lock, processing: duration, control: control,
                    logger: logger)
                {
                    completed(logger)
                }
                return .done
            }
            let acknowledgement = acknowledgement(entry.id, jobID: jobID, processing: duration)
            settleAcknowledgement(acknowledgement, control: control) { [self, logger] acknowledged in
                switch acknowledged {
                case true?: completed(logger)
                case false?: logLeaseLostAfterRun(entry.id, logger)
                case nil: break  // given up at shutdown; the job comes back after the lease
                }
                slots.finishAcknowledging(entry.id)
            }
            return .acknowledging
        } catch let error as IdempotencyLockLost {
            // Not ours to settle: the entry comes back, or another delivery already has it.
            metrics.job(.failed, type: message.type)
            logger.warning("lease_lost: \(error)")
        } catch let decision as WorkflowDecision where message.workflowStep != nil {
            let duration = ContinuousClock.now - started
            metrics.handlerDuration(duration, type: message.type, step: message.step)
            metrics.job(.completed, type: message.type)
            if let (workflow, step) = message.workflowStep,
                await endStep(
                    entry.id, jobID: jobID, workflow: workflow, step: step, outcome: .succeeded, processing: duration,
                    result: job.workflow?.resultSink.value.withLock { $0 }, decision: decision, control: control, logger: logger)
            {
                logger.info("step_completed", metadata: ["ferry.latency_ms": "\(duration.milliseconds)"])
                notify(.succeeded, jobID: jobID, entry: entry, attempt: attempt, message: message)
            }
        } catch let error as PermanentJobError {
            metrics.job(.failed, type: message.type)
            metrics.handlerDuration(ContinuousClock.now - started, type: message.type)
            deadLettering()
            deadLettered(
                await deadLetter(
                    entry, jobID: jobID, attempt: attempt, errorClass: error.errorClass, error: error.message,
                    processing: ContinuousClock.now - started, lock: lock, control: control, logger: logger))
        } catch is CancellationError {
            if slots.wasCancelledOnRequest(entry.id) {
                await cancel(jobID, entry: entry, attempt: attempt, control: control, logger: logger)
            } else {
                logger.info("job_interrupted; left pending for another worker")
                state.withLock { $0.interruptedAtShutdown += 1 }
                // Idle for the lease, then the next reclaim pass of some worker takes it.
                let comesBack = configuration.lease + configuration.reclaimInterval
                recordState(
                    .failed, jobID: jobID, entryID: entry.id, attempt: attempt, control: control,
                    fields: [
                        "error_class": "interrupted", "retryable": "1",
                        "last_error": "the worker stopped before the job finished; another worker runs it again",
                        "next_attempt_at": .integer(nowMilliseconds() + comesBack.milliseconds),
                    ])
            }
        } catch let snooze as JobSnooze {
            let processing = ContinuousClock.now - started
            metrics.handlerDuration(processing, type: message.type)
            metrics.job(.snoozed, type: message.type)
            let parked = await park(
                entry.id, jobID: jobID, type: message.type, attempt: attempt, until: .after(snooze.delay),
                why: .snooze(reason: snooze.reason, processing: processing), lock: lock, control: control, logger: logger)
            if case .parked(let dueAt) = parked {
                logger.info(
                    "job_snoozed",
                    metadata: ["ferry.snooze_ms": "\(snooze.delay.milliseconds)", "ferry.next_attempt_at": "\(dueAt)"])
            } else if parked == .lost {
                logger.info("lease_lost: another worker owns the entry now; not snoozed")
            }
        } catch {
            metrics.job(.failed, type: message.type)
            metrics.handlerDuration(ContinuousClock.now - started, type: message.type)
            let errorClass = (error as? any RetryableJobError)?.errorClass ?? String(describing: type(of: error))
            logger.info(
                "\(lifecycle)_failed",
                metadata: [
                    "ferry.error_class": "\(errorClass)", "ferry.latency_ms": "\((ContinuousClock.now - started).milliseconds)",
                    "ferry.error": "\(FailureText.keepingEnd("\(error)", limit: FailureText.loggedLimit))",
                ])
            let processing = ContinuousClock.now - started
            if attempt >= maxAttempts(of: message) {
                deadLettering()
                deadLettered(
                    await deadLetter(
                        entry, jobID: jobID, attempt: attempt, errorClass: errorClass, error: "\(error)",
                        processing: processing, lock: lock, control: control, logger: logger))
            } else {
                metrics.job(.retried, type: message.type)
                await scheduleRetry(
                    entry.id, message: message, jobID: jobID, attempt: attempt, error: (errorClass, "\(error)"),
                    processing: processing, retryAfter: (error as? any RetryableJobError)?.retryAfter, lock: lock,
                    control: control, logger: logger)
            }
        }
        return .done
    }

    /// Runs the handler, cancelling it once `timeout` has passed (the exec handler then kills
    /// its process group) and throwing ``JobTimeoutError``, or once the idempotency `lock`'s
    /// fence deadline has passed unrenewed, throwing ``IdempotencyLockLost``. Returns only once
    /// the handler has returned.
    static func runHandler(
        _ handler: any JobHandler, _ job: Job, timeout: Duration?, lock: IdempotencyLock? = nil
    ) async throws {
        try Task.checkCancellation()  // cancelled on request before it started
        if timeout == nil && lock == nil { return try await handler.handle(job) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await handler.handle(job) }
            if let timeout {
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw JobTimeoutError(timeout: timeout)
                }
            }
            if let lock {
                group.addTask {
                    try await lock.waitForFence()
                    throw IdempotencyLockLost()
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// A handler finished, but this consumer no longer owns its entry: not acknowledged, not
    /// completed. An entry deleted while it ran was reported then (``recordDeleted``).
    func logLeaseLostAfterRun(_ entryID: String, _ logger: Logger) {
        if state.withLock({ $0.slots })?.wasDeleted(entryID) == true {
            logger.info("the handler finished; its entry was deleted while it ran, so there is nothing to acknowledge")
            return
        }
        logger.warning(
            "lease_lost: the handler finished, but the entry is no longer this worker's (another worker owns it, or its group is gone); not acknowledged"
        )
    }

    /// Acknowledges through the group commit, with no status. Returns when the entry's batch is flushed.
    func acknowledge(_ entryID: String, control: ControlChannel, logger: Logger) async {
        if await control.acknowledge(ControlChannel.Acknowledgement(entryID: entryID)) == false {
            logger.info("lease_lost: another worker owns the entry now; not acknowledged")
        }
    }

    /// The idempotency guard before a job with a key runs: skips (and acknowledges) a key that
    /// already completed, and lets only one delivery per key run at a time. Returns the lock
    /// this delivery took, or nil when it must not run.
    func mayRun(
        _ entryID: String, jobID: String, type: String, idempotencyKey key: String, attempt: Int, control: ControlChannel,
        logger: Logger
    ) async -> IdempotencyLock? {
        let lockKey = keys.inFlightLock(idempotencyKey: key)
        var scriptKeys: [RedisArgument] = [.string(keys.jobs), .string(keys.completed(idempotencyKey: key)), .string(lockKey)]
        let arguments: [RedisArgument] = [
            .string(configuration.group), .string(configuration.consumer), .string(entryID),
            .integer(configuration.idempotencyLockTTL.milliseconds),
        ]
        var statusArguments: [RedisArgument] = []
        if configuration.recordsStatus {
            scriptKeys.append(.string(keys.jobStatus(jobID: jobID)))
            statusArguments = [
                .integer(configuration.keepSucceeded.milliseconds), .string(keys.statusIndexPrefix), .string(jobID),
                .string(type), .integer(Int64(attempt)),
            ]
        }
        var waiting = false
        while true {
            let reply: [RedisReply]
            let sentAt = ContinuousClock.now
            do {
                reply =
                    try await control.transition(
                        Self.beginScript, keys: scriptKeys,
                        arguments: arguments + (statusArguments.isEmpty ? [] : [now()] + statusArguments), about: [entryID]
                    ).array ?? []
            } catch {
                logger.info("idempotency check failed; the job comes back after the lease", metadata: redisFailure(error))
                return nil
            }
            switch reply.first?.string {
            case "run":
                guard let token = reply.dropFirst().first?.string else { return nil }
                let lock = IdempotencyLock(key: lockKey, token: token, ttl: configuration.idempotencyLockTTL, sentAt: sentAt)
                state.withLock { $0.slots }?.hold(lock, for: entryID)
                return lock
            case "skip":
                logger.info("idempotent_skip")
                metrics.job(.skippedDuplicate, type: type)
                return nil
            case "busy":
                // Another delivery of the key runs (or its worker died and its lock has yet to
                // lapse). Waiting here, lease extended, costs no delivery attempt; a retry
                // through the pending list would, and could dead-letter a job that never failed.
                if !waiting {
                    logger.info("idempotency key in flight on another delivery; waiting for it to finish")
                    waiting = true
                }
                do {
                    try await Task.sleep(for: configuration.maintenanceInterval)
                } catch {
                    logger.info("job_interrupted while waiting for its idempotency key; left pending for another worker")
                    return nil
                }
            default:
                logger.info("lease_lost: another worker owns the entry now")
                return nil
            }
        }
    }

    /// Acknowledges a job with an idempotency key, marks the key done, releases its lock and
    /// records it succeeded, atomically. Returns true when it did; false when the entry was lost
    /// or Redis failed.
    func complete(
        _ entryID: String, jobID: String, idempotencyKey key: String, lock: IdempotencyLock, processing: Duration,
        control: ControlChannel, logger: Logger
    ) async -> Bool {
        var scriptKeys: [RedisArgument] = [.string(keys.jobs), .string(keys.completed(idempotencyKey: key)), .string(lock.key)]
        var arguments: [RedisArgument] = [
            .string(configuration.group), .string(configuration.consumer), .string(entryID),
            .integer(configuration.idempotencyTTL.milliseconds), .string(jobID), .string(lock.token),
        ]
        if configuration.recordsStatus {
            scriptKeys.append(.string(keys.jobStatus(jobID: jobID)))
            arguments += [
                now(), .integer(configuration.keepSucceeded.milliseconds), .integer(processing.milliseconds),
                .string(keys.statusIndexPrefix),
            ]
        }
        return await settle(
            entryID, Self.completeScript, keys: scriptKeys, arguments: arguments, control: control, logger: logger)
    }

    /// Runs a script that ends a finished job (it answers 1 when it acknowledged, 0 when another
    /// consumer owns the entry), trying again after a backoff while Redis refuses or the call
    /// fails, as ``settleAcknowledgement(_:control:retries:settled:)`` does for batched ones.
    /// Returns whether it ended the job here.
    func settle(
        _ entryID: String, _ script: RedisScript, keys scriptKeys: [RedisArgument], arguments: [RedisArgument],
        control: ControlChannel, logger: Logger
    ) async -> Bool {
        var retries = 0
        defer { if retries > 0 { acknowledgementRetryEnded() } }
        while true {
            do {
                let ended = try await control.transition(script, keys: scriptKeys, arguments: arguments, about: [entryID])
                if ended.integer == 1 { return true }
                logLeaseLostAfterRun(entryID, logger)
                return false
            } catch {
                if error.prefix == .noGroup {
                    logLeaseLostAfterRun(entryID, logger)
                    return false
                }
                guard let delay = acknowledgementRetryDelay(after: retries) else {
                    logger.info(
                        "ack failed at shutdown; the job will be delivered again after the lease", metadata: redisFailure(error))
                    return false
                }
                retries += 1
                try? await Task.sleep(for: delay)
            }
        }
    }

    /// Acknowledges a finished job through the write batcher and, when Redis refuses or the call
    /// fails (an ACL change, OOM, a lost connection), tries again after a backoff instead of
    /// letting the job run again after its lease; the entry stays in the worker's running set
    /// meanwhile, so its lease is still extended. While any acknowledgement waits to be retried
    /// the read loop takes no new work: an outage of writes costs duplicates only for what was
    /// in flight. `settled` gets true (acknowledged), false (another consumer owns the entry), or
    /// nil (given up because the worker is stopping).
    func settleAcknowledgement(
        _ acknowledgement: ControlChannel.Acknowledgement, control: ControlChannel, retries: Int = 0,
        settled: @escaping @Sendable (Bool?) -> Void
    ) {
        control.enqueueAcknowledgement(acknowledgement) { [self] outcome in
            if outcome == nil, let delay = acknowledgementRetryDelay(after: retries) {
                Task {
                    try? await Task.sleep(for: delay)
                    settleAcknowledgement(acknowledgement, control: control, retries: retries + 1, settled: settled)
                }
                return
            }
            if retries > 0 { acknowledgementRetryEnded() }
            settled(outcome)
        }
    }

    /// How long to wait before trying a failed acknowledgement again, counting it among those
    /// awaiting retry on its first failure (the caller calls ``acknowledgementRetryEnded()``
    /// once it settles); nil once the worker is stopping (it gives up).
    func acknowledgementRetryDelay(after retries: Int) -> Duration? {
        let stopping = state.withLock { state in
            if state.stopping { return true }
            if retries == 0 { state.acknowledgementsAwaitingRetry += 1 }
            return false
        }
        if stopping { return nil }
        return min(.milliseconds(100) * (1 << min(retries, 6)), .seconds(5))
    }

    /// Whether acknowledgements wait to be retried, which holds the read loop back.
    var acknowledgementsFailing: Bool { state.withLock { $0.acknowledgementsAwaitingRetry > 0 } }

    /// A failed acknowledgement was settled (or given up): one fewer holds the reads back.
    func acknowledgementRetryEnded() {
        state.withLock { $0.acknowledgementsAwaitingRetry -= 1 }
    }

    /// Moves the entry to the dead-letter stream with its reason (`deadletter.lua`). Returns
    /// whether it did (false: another worker owns the entry now, or Redis failed).
    @discardableResult
    func deadLetter(
        _ entry: StreamEntry, jobID: String, attempt: Int, errorClass: String, error: String, processing: Duration? = nil,
        lock: IdempotencyLock? = nil, control: ControlChannel, logger: Logger
    ) async -> Bool {
        let failedAt = Date().millisecondsSince1970
        let fields: [RedisArgument] = [
            "dead_letter.source_stream", .string(keys.jobs), "dead_letter.source_group", .string(configuration.group),
            "dead_letter.source_id", .string(entry.id), "dead_letter.delivery_count", .integer(Int64(attempt)),
            "dead_letter.error_class", .string(errorClass), "dead_letter.error", .string(FailureText.keepingEnd(error)),
            "dead_letter.failed_at", .integer(failedAt), "dead_letter.consumer", .string(configuration.consumer),
        ]
        var scriptKeys: [RedisArgument] = [.string(keys.jobs), .string(keys.deadLetter)]
        if configuration.recordsStatus { scriptKeys.append(.string(keys.jobStatus(jobID: jobID))) }
        if let lock { scriptKeys.append(.string(lock.key)) }
        let arguments: [RedisArgument] = [
            .string(configuration.group), .string(configuration.consumer), .string(entry.id), .integer(failedAt),
            .integer(configuration.keepFailed.milliseconds), .string(keys.statusIndexPrefix), .string(jobID),
            .integer(Int64(attempt)), .string(errorClass), .string(FailureText.keepingEnd(error)),
            processing.map { .integer($0.milliseconds) } ?? "", .string(lock?.token ?? ""),
        ]
        do {
            let moved = try await control.transition(
                Self.deadLetterScript, keys: scriptKeys, arguments: arguments + fields, about: [entry.id])
            if moved.string != nil {
                logger.info("dead_lettered", metadata: ["ferry.error_class": "\(errorClass)"])
                metrics.job(.deadLettered, type: entry.text(of: WireFormat.Field.type))
                notify(.dead, jobID: jobID, entry: entry, attempt: attempt, errorClass: errorClass, error: error)
                keepPayload(of: entry, control: control)
                return true
            }
            logger.info("lease_lost: another worker owns the entry now; not dead-lettered")
        } catch {
            logger.info(
                "dead-lettering failed; the entry stays pending and comes back after the lease", metadata: redisFailure(error))
        }
        return false
    }

    /// A dead letter's payload stored by reference lives as long as the dead letter
    /// (``Configuration/deadLetterRetention``; for ever without one), so a redrive finds it.
    func keepPayload(of entry: StreamEntry, control: ControlChannel) {
        guard entry.text(of: WireFormat.Field.dataReference) == PayloadReference.Place.redis.rawValue,
            let sha256 = entry.text(of: WireFormat.Field.dataSHA256), sha256.count == 64, sha256.allSatisfy(\.isHexDigit)
        else { return }
        let key = keys.payload(sha256: sha256)
        control.enqueueStatus(
            [
                configuration.deadLetterRetention.map { PayloadReference.renew(key, $0) }
                    ?? RedisCommand("PERSIST", [.string(key)])
            ],
            about: [])  // no job's status
    }
}
