import FerryRedis
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Consumes one queue as one consumer of a consumer group: Pub/Sub subscription semantics on
/// Redis Streams.
///
/// - Every group on a queue receives every job (fan-out); the workers of one group share them.
/// - A job is acknowledged only after its handler returns. A failure parks it in the group's
///   later deliveries until the retry policy's backoff has passed, when a worker of the group
///   takes it back with its attempt count (``JobSnooze`` parks it spending no attempt); after
///   the last attempt, or at once for a malformed entry,
///   an unknown type or a ``PermanentJobError``, the job moves to the dead-letter stream with
///   its reason (`deadletter.lua`), atomically with the acknowledgement.
/// - An entry idle longer than the lease (its worker crashed) is reclaimed by a live worker; a
///   running job's lease is extended so a slow job is never stolen.
/// - Acknowledgements, extensions and dead-lettering check that this consumer still owns the
///   entry, so a worker that lost a lease cannot interfere with the new owner.
///
/// Blocking reads and control traffic use separate connections, so an acknowledgement never
/// waits behind an `XREADGROUP BLOCK`.
public final class Worker: Sendable {
    /// Long-lived worker settings.
    public struct Configuration: Sendable {
        /// The consumer group (subscription); created at the start of the stream if missing.
        public var group = "workers"
        /// Unique per process by default (host name and pid), so scaled containers need no setup.
        public var consumer = Worker.defaultConsumerName()
        /// Jobs run at once, 1 to 1000: handlers running together.
        public var concurrency = 16
        /// The most jobs the worker takes from the group beyond ``concurrency``, 0 to 10,000, to
        /// start as handler slots free without a read's round trip between one job and the next
        /// (Pub/Sub's outstanding messages beyond its callbacks, Celery's prefetch). Only as
        /// many as this worker starts in 50 ms at its recent rate: none while jobs run slowly,
        /// so a slow worker holds no job another could start; none on a queue with priority
        /// lanes, or while jobs ask for admission under limits or ordering keys. A job read ahead
        /// is written as running only once it has its slot, and goes back to the group unrun at
        /// a stop or a pause. 0 reads only what can start at once.
        public var readAhead = 256
        /// How long an entry may sit idle before another worker reclaims it (Pub/Sub's ack deadline).
        public var lease: Duration = .seconds(30)
        /// When a failed job comes back and when it is dead-lettered; a job's `max_attempts`
        /// overrides the count, its `backoff_ms` the backoff's base.
        public var retry = RetryPolicy()
        /// What a dead-lettered job does to its ordering key in this group: stop it until
        /// `ferry ordering resume` (the default, so no job of the key runs out of order) or let
        /// the key's next job run.
        public var orderingOnDead = OrderingOnDead.block
        /// Retry policies of job types that need their own (a partner API's 2^n·3 s, three
        /// attempts); other types use ``retry``.
        public var retryByType: [String: RetryPolicy] = [:]
        /// How long to wait for in-flight jobs after ``Worker/stop()`` before cancelling them.
        public var shutdownGrace: Duration = .seconds(25)
        /// How the worker picks among the queue's priority lanes (``JobPriority``) when several
        /// have jobs: the most urgent first (strict, the default), or in proportion to weights.
        public var priorityMode = PriorityMode.strict
        /// The longest `XREADGROUP BLOCK`; shorter when the lease asks for more frequent reclaims.
        public var readBlock: Duration = .seconds(2)
        /// While entries wait and jobs are in flight, the next read rides on the flush that
        /// acknowledges them: one round trip a round instead of two (docs/design.md, "Reads
        /// carried by the flush"). Off, every read goes on the reader's own connection, as
        /// `ferry bench worker --compare-carried-reads` measures.
        public var carriesReads = true
        /// The largest `data` a job may have; larger entries are dead-lettered as malformed.
        public var maxPayloadBytes = WireFormat.defaultMaxPayloadBytes
        /// How long a payload stored by reference (``PayloadReference``) lives after a delivery
        /// fetched it, at least: each delivery renews it, so a job that keeps retrying keeps it.
        public var payloadTTL: Duration = PayloadReference.defaultTTL
        /// How long one run of a handler may take before it is cancelled and counted as a
        /// failure; nil for no limit. A job's `timeout_ms` field overrides it.
        public var jobTimeout: Duration?
        /// How long a completed idempotency key is remembered (`ferry:{Q}:idem:done:<key>`): a
        /// job with the key delivered again within it is acknowledged without running.
        public var idempotencyTTL: Duration = .seconds(24 * 3600)
        /// Whether each job's status hash (`ferry:{Q}:job:<job_id>`) is kept up to date; costs
        /// a write per state change.
        public var recordsStatus = true
        /// How long a succeeded job's status (and its entry in the index of jobs) is kept.
        public var keepSucceeded: Duration = .seconds(3600)
        /// How long the status of a job that did not succeed (dead, cancelled, deleted) is kept,
        /// for people to find out why.
        public var keepFailed: Duration = .seconds(7 * 24 * 3600)
        /// Consumers of the group idle this long and holding no pending entry are deleted by a
        /// live worker (`prune_consumers.lua`): what a worker killed by `kill -9` leaves behind.
        /// nil keeps them.
        public var pruneIdleConsumersAfter: Duration? = .seconds(24 * 3600)
        /// Job stream entries older than this that every group has acknowledged are trimmed by
        /// the workers (`trim.lua`: never a pending or unread entry); nil keeps them all.
        public var retention: Duration? = .seconds(3600)
        /// Dead letters older than this are trimmed; nil keeps them all.
        public var deadLetterRetention: Duration? = .seconds(14 * 24 * 3600)
        /// How often one of the queue's workers runs the retention pass (trimming, index
        /// cleanup); shorter only for benchmarks and tests with short keep times.
        public var retentionInterval: Duration = .seconds(60)

        /// The defaults of `ferry worker`: group `workers`, concurrency 16, 30 s lease, status on.
        public init() {}

        /// How long a running keyed job's in-flight lock lives past its last renewal: two leases
        /// and 2 s, so a worker its machine stalls for under that keeps its job (the lock is
        /// renewed with the lease, every quarter lease); a crashed worker's keyed job waits for
        /// its lock to lapse before another delivery runs it.
        var idempotencyLockTTL: Duration { lease * 2 + .seconds(2) }

        /// How often leases of running jobs are extended.
        var maintenanceInterval: Duration {
            min(max(lease / 4, .milliseconds(50)), .seconds(5))
        }

        /// How often entries whose lease expired (a crashed or frozen worker's) are looked for.
        /// Retries do not wait in the pending list: they come back through the group's later
        /// deliveries, looked at every ``Worker/dueCheckInterval``.
        var reclaimInterval: Duration { maintenanceInterval }

        /// The retry policy of jobs of `type`.
        public func retryPolicy(for type: String) -> RetryPolicy { retryByType[type] ?? retry }

        /// - Throws: ``FerryError`` with ``FerryError/Code/invalidInput`` naming the bad setting.
        public func validate() throws(FerryError) {
            func invalid(_ message: String) -> FerryError { FerryError(.invalidInput, message) }
            guard (1...1000).contains(concurrency) else { throw invalid("concurrency must be 1 to 1000 (got \(concurrency))") }
            guard (0...10_000).contains(readAhead) else { throw invalid("read-ahead must be 0 to 10000 (got \(readAhead))") }
            guard !group.isEmpty, !consumer.isEmpty else { throw invalid("the group and consumer names must not be empty") }
            guard lease >= .milliseconds(100) else { throw invalid("the lease must be at least 100ms") }
            for (type, policy) in [("", retry)] + retryByType.sorted(by: { $0.key < $1.key }) {
                let of = type.isEmpty ? "" : " (retry policy of job type \"\(type)\")"
                guard policy.maxAttempts >= 1 else { throw invalid("max attempts must be at least 1\(of)") }
                guard policy.minimumBackoff > .zero, policy.minimumBackoff <= policy.maximumBackoff else {
                    throw invalid("the minimum backoff must be positive and no larger than the maximum backoff\(of)")
                }
                if case .exponential(let factor) = policy.strategy, !(factor >= 1 && factor <= 100) {
                    throw invalid("the backoff factor must be from 1 to 100 (got \(factor))\(of)")
                }
            }
            guard readBlock >= .milliseconds(10) else { throw invalid("the read block must be at least 10ms") }
            for (name, value) in [("retention", retention), ("dead-letter retention", deadLetterRetention)] {
                if let value, value <= .zero { throw invalid("the \(name) must be positive, or nil to keep everything") }
            }
            guard keepSucceeded >= .milliseconds(100), keepFailed >= .milliseconds(100) else {
                throw invalid("finished jobs' statuses must be kept at least 100ms (keep-succeeded, keep-failed)")
            }
            if let prune = pruneIdleConsumersAfter, prune < .seconds(1) {
                throw invalid("idle consumers may be pruned after 1s at the earliest")
            }
        }
    }

    /// The queue this worker consumes.
    public let queue: QueueName
    /// Its keys, for probes and tools that look at the same queue.
    public let keys: QueueKeys
    /// The settings it runs with, fixed for its lifetime.
    public let configuration: Configuration
    let redis: RedisConfiguration
    let handlers: [String: any JobHandler]
    let fallbackHandler: (any JobHandler)?
    let observer: (any JobEventObserver)?
    let logger: Logger
    let metrics: WorkerMetrics
    /// This consumer's quick successes may be packed (``packedSuccess(_:_:finishedAt:)``): its
    /// name has no `|`, the packed value's separator.
    let consumerPackable: Bool
    let state = Mutex(State())

    struct State {
        var stopping = false
        var running = false
        /// When the maintenance and read loops last came round: what `/healthz` checks.
        var lastLoopTurn: ContinuousClock.Instant?
        /// This run's jobs, for a scrape's exact in-flight count.
        var slots: JobSlots?
        /// Jobs whose handlers the end of the shutdown grace cancelled, left pending for others.
        var interruptedAtShutdown = 0
        /// Why the worker refused the queue (a data format it does not know): ``run()`` throws it.
        var refusal: FerryError?
        /// The queue or this group is paused (`ferry queue pause`): the read loop starts nothing.
        var paused = false
        /// When this worker last confirmed the pause (``Worker/confirmPause(_:)``).
        var pauseConfirmed: ContinuousClock.Instant?
        /// The queue's rate and concurrency limits (`ferry limit`), read every second, with
        /// the JSON each was stored as (which `acquire.lua` checks is still current).
        var limits: [(limit: QueueLimit, json: String)] = []
        /// When a job here last waited on a limit: while jobs wait, the read loop looks for the
        /// ones handed a slot more often (``Worker/limitWaitsRecently``).
        var lastLimitWait: ContinuousClock.Instant?
        /// A finished job's slot went to a job of this group: look for it now.
        var slotHandedToGroup = false
        /// Bumped when a write of this worker's concurrency slots may or may not have landed
        /// (``Worker/slotHolder``): new slots are then counted under a fresh holder name.
        var slotEpoch = 0
        /// The streams of the queue's priority lanes this group reads, the normal lane's first
        /// (``Worker/refreshLanes(_:)``); empty until first read.
        var laneStreams: [String] = []
        /// Acknowledgements of finished jobs that Redis refused and that wait to be tried again;
        /// the read loop takes no new work while there are any (see ``Worker/settleAcknowledgement``).
        var acknowledgementsAwaitingRetry = 0
    }

    static let ackScript = FerryScripts.script("ack", EmbeddedLuaScripts.ack)
    static let leaseScript = FerryScripts.script("lease", EmbeddedLuaScripts.lease)
    static let claimScript = FerryScripts.script("claim", EmbeddedLuaScripts.claim)
    static let deadLetterScript = FerryScripts.script("deadletter", EmbeddedLuaScripts.deadletter)
    static let releaseConsumerScript = FerryScripts.script("release_consumer", EmbeddedLuaScripts.release_consumer)
    static let beginScript = FerryScripts.script("begin", EmbeddedLuaScripts.begin)
    static let completeScript = FerryScripts.script("complete", EmbeddedLuaScripts.complete)
    static let extendLockScript = FerryScripts.script("extend_lock", EmbeddedLuaScripts.extend_lock)
    static let markDeletedScript = FerryScripts.script("mark_deleted", EmbeddedLuaScripts.mark_deleted)
    static let trimScript = FerryScripts.script("trim", EmbeddedLuaScripts.trim)
    static let trimDeadScript = FerryScripts.script("trim_dead", EmbeddedLuaScripts.trim_dead)
    static let pruneConsumersScript = FerryScripts.script("prune_consumers", EmbeddedLuaScripts.prune_consumers)
    static let recreateGroupScript = FerryScripts.script("recreate_group", EmbeddedLuaScripts.recreate_group)
    static let startBatchScript = FerryScripts.script("start_batch", EmbeddedLuaScripts.start_batch)

    /// - Parameters:
    ///   - handlers: by job type.
    ///   - fallbackHandler: runs every type without a handler of its own (`ferry worker --exec`);
    ///     without one, such a job is dead-lettered as unknown.
    ///   - middleware: runs around every handler, the first outermost (``JobMiddleware``).
    ///   - observer: hears about every job that succeeds, is dead-lettered or is cancelled here.
    public init(
        queue: QueueName, redis: RedisConfiguration, handlers: [String: any JobHandler],
        configuration: Configuration = Configuration(), fallbackHandler: (any JobHandler)? = nil,
        middleware: [any JobMiddleware] = [], observer: (any JobEventObserver)? = nil,
        logger: Logger = Logger(label: "ferry.worker")
    ) {
        self.observer = observer
        self.metrics = WorkerMetrics(queue: queue, group: configuration.group)
        self.queue = queue
        self.keys = QueueKeys(queue: queue)
        self.redis = redis
        func wrapped(_ handler: any JobHandler) -> any JobHandler {
            middleware.isEmpty ? handler : MiddlewareChain(handler: handler, middleware: middleware)
        }
        self.handlers = handlers.mapValues(wrapped)
        self.fallbackHandler = fallbackHandler.map(wrapped)
        self.configuration = configuration
        self.consumerPackable = !configuration.consumer.contains("|")
        var logger = logger
        logger[metadataKey: "ferry.queue"] = "\(queue)"
        logger[metadataKey: "ferry.group"] = "\(configuration.group)"
        logger[metadataKey: "ferry.consumer"] = "\(configuration.consumer)"
        self.logger = logger
    }

    /// What a dead letter does to its ordering key (``Configuration/orderingOnDead``).
    public enum OrderingOnDead: String, Sendable, CaseIterable {
        /// The key stops: its next jobs wait until `ferry ordering resume` (shown blocked in
        /// `ferry ordering list` and `ferry_ordering_keys_blocked`).
        case block
        /// The key's next job runs.
        case skip
    }

    /// `<host name>-<pid>`: unique per process, stable for its lifetime.
    public static func defaultConsumerName() -> String {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count)
        let name = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(name.isEmpty ? "worker" : name)-\(getpid())"
    }

    /// Begins a graceful shutdown: no more entries are read; running jobs get the shutdown grace
    /// to finish and be acknowledged, then are cancelled and left pending for other workers.
    public func stop() {
        state.withLock { $0.stopping = true }
    }

    var isStopping: Bool { state.withLock { $0.stopping } }

    /// Cancels the handlers of every running job now, without waiting for the shutdown grace:
    /// they stay pending and another worker runs them again after the lease (a second SIGTERM).
    public func cancelRunningJobs() {
        state.withLock { $0.slots }?.cancelAll()
    }

    /// Whether the worker's loops are turning: what a liveness probe (`/healthz`) asks.
    public struct Health: Sendable {
        /// ``run()`` has started and not returned.
        public var running: Bool
        /// ``stop()`` was called: draining, reading nothing new.
        public var stopping: Bool
        /// When a loop of the worker last came round; nil before the first turn.
        public var lastLoopTurn: ContinuousClock.Instant?
        /// The longest a healthy worker goes between loop turns.
        public var expectedTurnInterval: Duration

        /// Running, and a loop came round recently enough.
        public var isHealthy: Bool {
            guard running, let lastLoopTurn else { return false }
            return ContinuousClock.now - lastLoopTurn < expectedTurnInterval * 3 + .seconds(5)
        }
    }

    /// What `/healthz` reports: read under a lock, so any thread may ask.
    public var health: Health {
        state.withLock {
            Health(
                running: $0.running, stopping: $0.stopping, lastLoopTurn: $0.lastLoopTurn,
                expectedTurnInterval: configuration.maintenanceInterval)
        }
    }

    func loopTurned() {
        state.withLock { $0.lastLoopTurn = .now }
    }

    /// Reads and runs jobs until ``stop()`` (or a ``ServiceGroup``'s graceful shutdown) has
    /// drained them, or the task is cancelled.
    ///
    /// Redis errors (a restart, `LOADING`, `READONLY`, `OOM`, a lost connection) make the worker
    /// back off and try again; they never end the loop.
    ///
    /// - Throws: ``FerryError`` for an invalid configuration, before anything is read, or for a
    ///   queue in a data format this version does not know (``QueueFormat``), before any job runs.
    public func run() async throws(FerryError) {
        try configuration.validate()
        let reader = RedisConnection(configuration: connectionConfiguration(role: "read"), logger: logger)
        let control = makeControlChannel(RedisConnection(configuration: connectionConfiguration(role: "control"), logger: logger))
        let slots = JobSlots(limit: configuration.concurrency, readAhead: configuration.readAhead) {
            control.carriedRead.slotsChanged()
        }
        logger.info(
            "worker_started",
            metadata: [
                "ferry.concurrency": "\(configuration.concurrency)", "ferry.read_ahead": "\(configuration.readAhead)",
            ])
        state.withLock {
            $0.running = true
            $0.lastLoopTurn = .now
            $0.slots = slots
            $0.interruptedAtShutdown = 0
        }
        defer { state.withLock { $0.running = false } }
        var inFlightAtStop = 0

        // In a ServiceGroup, graceful shutdown (SIGTERM, or a service before it ending) drains.
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await withDiscardingTaskGroup { group in
                    group.addTask { await self.maintainLeases(control, slots: slots) }
                    group.addTask { await self.moveDueJobs(control) }
                    await dispatch(reader: reader, control: control, slots: slots)
                    logHandedBack(slots.handBackWaiting())  // jobs read ahead go back to the group unrun
                    inFlightAtStop = slots.running.count
                    logger.info("worker_stopping", metadata: ["ferry.in_flight": "\(inFlightAtStop)"])
                    group.addTask {
                        try? await Task.sleep(for: self.configuration.shutdownGrace)
                        if slots.used > 0 {
                            self.logger.info("shutdown grace over; cancelling running jobs, which stay pending for other workers")
                        }
                        slots.cancelAll()
                    }
                    await slots.waitUntilIdle()
                    group.cancelAll()
                }
            } onCancel: {
                stop()
                slots.cancelAll()
            }
        } onGracefulShutdown: { [self] in
            stop()
        }
        await control.writeStatus([], about: nil)  // every write enqueued before, and every record held, is flushed
        await releaseConsumer(control)
        let (interrupted, refusal) = state.withLock { ($0.interruptedAtShutdown, $0.refusal) }
        logger.info(
            "worker_stopped",
            metadata: [
                "ferry.drained": "\(max(inFlightAtStop - interrupted, 0))", "ferry.interrupted": "\(interrupted)",
            ])
        if let refusal { throw refusal }
    }

    /// Records the jobs held now (running, read ahead, or being acknowledged) in
    /// `ferry_jobs_in_flight`, so a scrape reads the exact count rather than the one of the last
    /// lease extension.
    public func recordInFlight() {
        guard let slots = state.withLock({ $0.slots }) else { return }
        metrics.inFlight(slots.running.count)
    }

    /// The control channel for one run, its batcher bound to `connection`.
    func makeControlChannel(_ connection: RedisConnection) -> ControlChannel {
        let carriedRead = CarriedRead()
        return ControlChannel(
            connection: connection,
            writes: GroupCommit(whenIdle: carriedRead.flushesEnded) { [self] writes in
                // The read loop's next read goes first, and its reply on as soon as it is read:
                // the worker starts the jobs it brings while Redis acknowledges the jobs before
                // them. It asks for the slots free now; acknowledgements on their way never count
                // against those, so it needs nothing after it in the pipeline to land first. The
                // normal lane's read, or every lane's (most urgent first, or weighted) when there are several.
                let read = carriedRead.take()
                let lanes = read == nil ? [] : laneStreams
                var commands: [RedisCommand] = []
                if let read {
                    commands =
                        lanes.count > 1
                        ? [readLanesCommand(readOrder(lanes), count: read.count)]
                        : readCommands(count: read.count, block: nil)
                }
                // What the read brought, handed on from its replies once: early, or with the rest.
                let early = read.map { read in
                    RedisConnection.EarlyReplies(count: commands.count) { [self] replies in
                        do throws(RedisError) {
                            let entries = lanes.count > 1 ? try lanesRead(replies[0]) : try readReplies(replies[...])
                            read.deliver(.read(entries, asked: read.count))
                        } catch {
                            read.deliver(.failed(error))
                        }
                    }
                }
                var transitionAt: [Int: Int] = [:]  // write index -> its command's index
                var acks: [ControlChannel.Acknowledgement] = []
                var releases: [ControlChannel.SlotRelease] = []
                // Acknowledgements with a status, by entry: a running record waiting in this
                // flush for one of them is written with it instead (ControlChannel.Write.start).
                // Made only for a flush with such records: most acknowledgements took theirs
                // when they were enqueued (ControlChannel.enqueueAcknowledgement).
                var recordedAcks: Set<String> = []
                if writes.contains(where: \.isStart) {
                    for write in writes {
                        if case .acknowledgement(let ack) = write, ack.status != nil { recordedAcks.insert(ack.entryID) }
                    }
                }
                var starts: [String: ControlChannel.RunningRecord] = [:]
                for (index, write) in writes.enumerated() {
                    switch write {
                    case .status(let status): commands += status
                    case .transition(let command):
                        transitionAt[index] = commands.count
                        commands.append(command)
                    case .start(let records):
                        let kept = records.filter { record in
                            guard recordedAcks.contains(record.entryID) else { return true }
                            starts[record.entryID] = record
                            return false
                        }
                        if !kept.isEmpty {
                            transitionAt[index] = commands.count
                            commands.append(startBatchCommand(kept, at: kept[0].startedAt))
                        }
                    case .acknowledgement(var ack):
                        if let start = starts[ack.entryID] { ack.start = start }
                        acks.append(ack)
                    case .release(let release): releases.append(release)
                    }
                }
                // Every acknowledgement goes last: a job's other writes were all made before it;
                // then the slots of finished jobs, released after their outcomes (in the same
                // `ack.lua` call when there are acknowledgements).
                let ackAt = acks.isEmpty ? nil : commands.count
                if !acks.isEmpty { commands.append(acknowledgeCommand(acks, releasing: releases)) }
                let releaseAt = releases.isEmpty ? nil : (ackAt ?? commands.count)
                if !releases.isEmpty && acks.isEmpty {
                    let release = releaseArguments(releases)
                    commands.append(Self.releaseScript.command(keys: release.keys, arguments: release.arguments))
                }
                let replies: [RedisReply]
                do throws(RedisError) {
                    replies = try await connection.pipeline(commands, early: early)
                    // A read that could not go early (an error reply) goes now; one that did ignores this.
                    if let early { early.deliver(Array(replies.prefix(early.count))) }
                } catch {
                    read?.deliver(.failed(error))
                    logger.warning(
                        "acks, transitions and job statuses not written; acks are tried again after a backoff",
                        metadata: redisFailure(error))
                    return writes.map { write in
                        switch write {
                        case .status: .written
                        case .transition, .start, .release: .replied(.failure(error))
                        case .acknowledgement: .acknowledged(nil)
                        }
                    }
                }
                let scriptIndexes = Set(transitionAt.values).union([ackAt, releaseAt].compactMap { $0 })
                let statusFailure = replies.enumerated()
                    .first { !scriptIndexes.contains($0.offset) && $0.element.errorMessage != nil }
                if let failed = statusFailure?.element.errorMessage {
                    logger.debug("job status not recorded", metadata: redisFailure(RedisError.server(failed)))
                }
                let lostIDs: Set<String>? = ackAt.map { acknowledgedLost(replies[$0], acks) } ?? []
                func replied(_ at: Int) -> ControlChannel.Outcome {
                    let reply = replies[at]
                    if let failed = reply.errorMessage {
                        return .replied(.failure(RedisError.server(failed, command: "FCALL")))
                    }
                    return .replied(.success(reply))
                }
                return writes.enumerated().map { index, write -> ControlChannel.Outcome in
                    switch write {
                    case .status: return .written
                    case .transition: return replied(transitionAt[index] ?? 0)
                    case .start:
                        // Every record went with its job's outcome: none was refused.
                        guard let at = transitionAt[index] else { return .replied(.success(.array([.array([]), .array([])]))) }
                        return replied(at)
                    case .release:
                        // Inside an ack.lua reply: the integer it ends with.
                        guard ackAt != nil, case .array(let parts) = replies[releaseAt ?? 0] else {
                            return replied(releaseAt ?? 0)
                        }
                        return .replied(.success(parts.last { $0.integer != nil } ?? .integer(0)))
                    case .acknowledgement(let ack): return .acknowledged(lostIDs.map { !$0.contains(ack.entryID) })
                    }
                }
            },
            carriedRead: carriedRead,
            startReplies: { [self] result in
                if case .success(let reply) = result { _ = startedBatch(reply) }
            })
    }

    /// The entries an `ack.lua` reply says were not acknowledged (another consumer owns them);
    /// every entry when the group is gone; nil when the call failed (they are tried again).
    private func acknowledgedLost(_ reply: RedisReply?, _ acks: [ControlChannel.Acknowledgement]) -> Set<String>? {
        guard let failed = reply?.errorMessage else { return Set(reply?.array?.compactMap(\.string) ?? []) }
        let error = RedisError.server(failed, command: "FCALL")
        if error.prefix == .noGroup {
            // The group is gone, and its pending entries with it: nothing to acknowledge.
            return Set(acks.map(\.entryID))
        }
        logger.warning(
            "ack failed; tried again after a backoff, and no new jobs are taken meanwhile", metadata: redisFailure(error))
        return nil
    }

    /// One `ack.lua` call for many entries, recording the outcome of those with a status, and
    /// releasing the limit slots of `releasing` after them.
    func acknowledgeCommand(
        _ acks: [ControlChannel.Acknowledgement], releasing: [ControlChannel.SlotRelease] = []
    ) -> RedisCommand {
        let now = nowMilliseconds()
        var scriptKeys: [RedisArgument] = [.string(keys.jobs)]
        var arguments: [RedisArgument] = [
            .string(configuration.group), .string(configuration.consumer), .integer(now),
            .integer(configuration.keepSucceeded.milliseconds), .integer(configuration.keepFailed.milliseconds),
            .string(keys.statusIndexPrefix),
        ]
        // The flush's lowest and highest entry IDs: the range of its one ownership check.
        let ordered = acks.map { (order: StreamEntry.order(of: $0.entryID), id: $0.entryID) }
        let low = ordered.min { $0.order < $1.order }?.id ?? ""
        let high = ordered.max { $0.order < $1.order }?.id ?? ""
        arguments += [.string(low), .string(high), .integer(Int64(acks.count))]
        for ack in acks {
            arguments.append(.string(ack.entryID))
            guard let status = ack.status else {
                // No status to write: the entry ends here.
                arguments.append(0)
                continue
            }
            if let packed = packedSuccess(ack, status, finishedAt: now) {
                // No key: the script names the status hash itself in the rare case it needs one.
                arguments += [-1, .string(packed)]
                continue
            }
            scriptKeys.append(.string(keys.jobStatus(jobID: status.jobID)))
            arguments += [
                .integer(Int64(scriptKeys.count)), .string(status.jobID), .string(status.outcome.rawValue),
                .integer(ack.processingMilliseconds),
            ]
            if let start = ack.start {
                arguments += [.integer(start.startedAt), .string(start.type), .integer(Int64(start.attempt)), .string(start.key)]
            } else {
                arguments += ["", "", "", ""]
            }
        }
        if !releasing.isEmpty {
            let release = releaseArguments(releasing)
            arguments += ["release", .integer(Int64(scriptKeys.count + 1))] + release.arguments
            scriptKeys += release.keys
        }
        return Self.ackScript.command(keys: scriptKeys, arguments: arguments)
    }

    /// The packed status (data format 3, `pack_succeeded` in the scripts) of a success `ack.lua`
    /// keeps in its minute's hash, or nil when the job needs a status hash of its own: the first
    /// run's success of a job whose id is its entry ID and which has no flow-control key, its
    /// running record still waiting in the flush, by a consumer whose name has no `|` (the
    /// value's last part, the type, may have one).
    private func packedSuccess(
        _ ack: ControlChannel.Acknowledgement, _ status: ControlChannel.Acknowledgement.Status, finishedAt: Int64
    ) -> String? {
        guard status.outcome == .succeeded, status.jobID == ack.entryID, let start = ack.start, start.attempt == 1,
            start.key.isEmpty, consumerPackable
        else { return nil }
        let times = "\(finishedAt)|\(start.startedAt)|1|\(ack.processingMilliseconds)"
        return "succeeded|\(times)|\(configuration.consumer)|\(start.type)"
    }

    func connectionConfiguration(role: String) -> RedisConfiguration {
        var configuration = redis
        configuration.clientName = "ferry-worker-\(role)-\(self.configuration.consumer)"
            .map { $0 == " " ? "_" : $0 }.reduce(into: "") { $0.append($1) }
        return configuration
    }

    // MARK: - Helpers

    func now() -> RedisArgument { .integer(nowMilliseconds()) }

    func nowMilliseconds() -> Int64 { Date().millisecondsSince1970 }

    /// Counts a Redis error (`ferry_redis_errors_total`) and describes it for a log line.
    func redisFailure(_ error: RedisError) -> Logger.Metadata {
        metrics.redisError(error)
        return ["redis.error": "\(error.message)", "redis.error_prefix": "\(error.prefix?.rawValue ?? error.kind.description)"]
    }
}

/// A worker is a swift-service-lifecycle `Service`: put it in a `ServiceGroup` beside an HTTP
/// server or other workers, and the group's graceful shutdown drains it (``Worker/run()``), its
/// cancellation cancels the running jobs.
extension Worker: Service {}
