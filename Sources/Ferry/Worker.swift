import FerryRedis
import Foundation
import Logging
import Synchronization

/// Consumes one queue as one consumer of a consumer group: Pub/Sub subscription semantics on
/// Redis Streams.
///
/// - Every group on a queue receives every job (fan-out); the workers of one group share them.
/// - A job is acknowledged only after its handler returns. A failure schedules a redelivery
///   after the retry policy's backoff; after the last attempt, or at once for a malformed entry,
///   an unknown type or a ``PermanentJobError``, the job moves to the dead-letter stream with
///   its reason (`deadletter.lua`), atomically with the acknowledgement.
/// - An entry idle longer than the lease plus its backoff (its worker crashed) is reclaimed by
///   a live worker; a running job's lease is extended so a slow job is never stolen.
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
        /// Jobs run at once, 1 to 1000; the worker never reads more entries than it can start.
        public var concurrency = 16
        /// How long an entry may sit idle before another worker reclaims it (Pub/Sub's ack deadline).
        public var lease: Duration = .seconds(30)
        public var retry = RetryPolicy()
        /// How long to wait for in-flight jobs after ``Worker/stop()`` before cancelling them.
        public var shutdownGrace: Duration = .seconds(25)
        /// The longest `XREADGROUP BLOCK`; shorter when the lease asks for more frequent reclaims.
        public var readBlock: Duration = .seconds(2)
        /// The largest `data` a job may have; larger entries are dead-lettered as malformed.
        public var maxPayloadBytes = WireFormat.defaultMaxPayloadBytes
        /// How long one run of a handler may take before it is cancelled and counted as a
        /// failure; nil for no limit. A job's `timeout_ms` field overrides it.
        public var jobTimeout: Duration?
        /// How long a completed idempotency key is remembered (`ferry:{Q}:idem:done:<key>`): a
        /// job with the key delivered again within it is acknowledged without running.
        public var idempotencyTTL: Duration = .seconds(24 * 3600)
        /// Whether each job's status hash (`ferry:{Q}:job:<job_id>`) is kept up to date; costs
        /// a write per state change.
        public var recordsStatus = true
        /// How long a status hash lives after the job's terminal state (succeeded, dead).
        public var statusTTL: Duration = .seconds(24 * 3600)

        public init() {}

        /// How often leases of running jobs are extended.
        var maintenanceInterval: Duration {
            min(max(lease / 4, .milliseconds(50)), .seconds(5))
        }

        /// How often idle entries are looked for: often enough that a retry comes back close
        /// to its backoff, and a crashed worker's job close to its lease.
        var reclaimInterval: Duration {
            min(maintenanceInterval, max(retry.minimumBackoff / 2, .milliseconds(50)))
        }

        /// - Throws: ``FerryError`` with ``FerryError/Code/invalidInput`` naming the bad setting.
        public func validate() throws(FerryError) {
            func invalid(_ message: String) -> FerryError { FerryError(.invalidInput, message) }
            guard (1...1000).contains(concurrency) else { throw invalid("concurrency must be 1 to 1000 (got \(concurrency))") }
            guard !group.isEmpty, !consumer.isEmpty else { throw invalid("the group and consumer names must not be empty") }
            guard lease >= .milliseconds(100) else { throw invalid("the lease must be at least 100ms") }
            guard retry.maxAttempts >= 1 else { throw invalid("max attempts must be at least 1") }
            guard retry.minimumBackoff > .zero, retry.minimumBackoff <= retry.maximumBackoff else {
                throw invalid("the minimum backoff must be positive and no larger than the maximum backoff")
            }
            guard readBlock >= .milliseconds(10) else { throw invalid("the read block must be at least 10ms") }
        }
    }

    public let queue: QueueName
    public let keys: QueueKeys
    public let configuration: Configuration
    private let redis: RedisConfiguration
    private let handlers: [String: any JobHandler]
    private let fallbackHandler: (any JobHandler)?
    private let observer: (any JobEventObserver)?
    private let logger: Logger
    private let metrics: WorkerMetrics
    private let state = Mutex(State())

    private struct State {
        var stopping = false
        var running = false
        /// When the maintenance and read loops last came round: what `/healthz` checks.
        var lastLoopTurn: ContinuousClock.Instant?
        /// The in-flight lock key of each running job that has an idempotency key, by entry ID.
        var locks: [String: String] = [:]
    }

    static let ackScript = RedisScript(name: "ack", source: EmbeddedLuaScripts.ack)
    static let leaseScript = RedisScript(name: "lease", source: EmbeddedLuaScripts.lease)
    static let claimScript = RedisScript(name: "claim", source: EmbeddedLuaScripts.claim)
    static let retryScript = RedisScript(name: "retry", source: EmbeddedLuaScripts.retry)
    static let deadLetterScript = RedisScript(name: "deadletter", source: EmbeddedLuaScripts.deadletter)
    static let releaseConsumerScript = RedisScript(name: "release_consumer", source: EmbeddedLuaScripts.release_consumer)
    static let beginScript = RedisScript(name: "begin", source: EmbeddedLuaScripts.begin)
    static let completeScript = RedisScript(name: "complete", source: EmbeddedLuaScripts.complete)
    static let extendLockScript = RedisScript(name: "extend_lock", source: EmbeddedLuaScripts.extend_lock)
    static let startBatchScript = RedisScript(name: "start_batch", source: EmbeddedLuaScripts.start_batch)

    /// - Parameters:
    ///   - handlers: by job type.
    ///   - fallbackHandler: runs every type without a handler of its own (`ferry worker --exec`);
    ///     without one, such a job is dead-lettered as unknown.
    ///   - observer: hears about every job that succeeds, is dead-lettered or is cancelled here.
    public init(
        queue: QueueName, redis: RedisConfiguration, handlers: [String: any JobHandler],
        configuration: Configuration = Configuration(), fallbackHandler: (any JobHandler)? = nil,
        observer: (any JobEventObserver)? = nil, logger: Logger = Logger(label: "ferry.worker")
    ) {
        self.observer = observer
        self.metrics = WorkerMetrics(queue: queue, group: configuration.group)
        self.queue = queue
        self.keys = QueueKeys(queue: queue)
        self.redis = redis
        self.handlers = handlers
        self.fallbackHandler = fallbackHandler
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "ferry.queue"] = "\(queue)"
        logger[metadataKey: "ferry.group"] = "\(configuration.group)"
        logger[metadataKey: "ferry.consumer"] = "\(configuration.consumer)"
        self.logger = logger
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

    private var isStopping: Bool { state.withLock { $0.stopping } }

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

    public var health: Health {
        state.withLock {
            Health(
                running: $0.running, stopping: $0.stopping, lastLoopTurn: $0.lastLoopTurn,
                expectedTurnInterval: configuration.maintenanceInterval)
        }
    }

    private func loopTurned() {
        state.withLock { $0.lastLoopTurn = .now }
    }

    /// Reads and runs jobs until ``stop()`` has drained them, or the task is cancelled.
    ///
    /// Redis errors (a restart, `LOADING`, `READONLY`, `OOM`, a lost connection) make the worker
    /// back off and try again; they never end the loop.
    ///
    /// - Throws: ``FerryError`` for an invalid configuration, before anything is read.
    public func run() async throws(FerryError) {
        try configuration.validate()
        let reader = RedisConnection(configuration: connectionConfiguration(role: "read"), logger: logger)
        let control = makeControlChannel(RedisConnection(configuration: connectionConfiguration(role: "control"), logger: logger))
        let slots = JobSlots(limit: configuration.concurrency)
        logger.info("worker_started", metadata: ["ferry.concurrency": "\(configuration.concurrency)"])
        state.withLock {
            $0.running = true
            $0.lastLoopTurn = .now
        }
        defer { state.withLock { $0.running = false } }

        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.maintainLeases(control, slots: slots) }
                await dispatch(reader: reader, control: control, slots: slots)
                logger.info("worker_stopping", metadata: ["ferry.in_flight": "\(slots.used)"])
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
        await control.writeStatus([])  // every write enqueued before is flushed
        await releaseConsumer(control)
    }

    /// The control channel for one run, its batcher bound to `connection`.
    private func makeControlChannel(_ connection: RedisConnection) -> ControlChannel {
        ControlChannel(
            connection: connection,
            writes: GroupCommit { [self] writes in
                var commands: [RedisCommand] = []
                var acks: [ControlChannel.Acknowledgement] = []
                for write in writes {
                    switch write {
                    case .status(let status): commands += status
                    case .acknowledgement(let ack): acks.append(ack)
                    }
                }
                // Every acknowledgement goes last: a job's status writes were all made before it.
                if !acks.isEmpty { commands.append(acknowledgeCommand(acks)) }
                let lostIDs: Set<String>?
                do throws(RedisError) {
                    let replies = try await connection.pipeline(commands)
                    let ackReply = acks.isEmpty ? nil : replies.last
                    if let failed = replies.dropLast(acks.isEmpty ? 0 : 1).lazy.compactMap(\.errorMessage).first {
                        logger.debug("job status not recorded", metadata: ["ferry.error": "\(failed)"])
                    }
                    if let failed = ackReply?.errorMessage {
                        logger.info(
                            "ack failed; the jobs will be delivered again after the lease", metadata: ["ferry.error": "\(failed)"]
                        )
                        lostIDs = nil
                    } else {
                        lostIDs = Set(ackReply?.array?.compactMap(\.string) ?? [])
                    }
                } catch {
                    logger.info(
                        "acks and job statuses not written; the jobs will be delivered again after the lease",
                        metadata: redisFailure(error))
                    lostIDs = nil
                }
                return writes.map { write -> Bool? in
                    guard case .acknowledgement(let ack) = write, let lostIDs else { return nil }
                    return !lostIDs.contains(ack.entryID)
                }
            })
    }

    /// One `ack.lua` call for many entries, recording `succeeded` for those with a status key.
    private func acknowledgeCommand(_ acks: [ControlChannel.Acknowledgement]) -> RedisCommand {
        var scriptKeys: [RedisArgument] = [.string(keys.jobs)]
        var arguments: [RedisArgument] = [
            .string(configuration.group), .string(configuration.consumer), now(),
            .integer(configuration.statusTTL.milliseconds),
        ]
        for ack in acks {
            arguments.append(.string(ack.entryID))
            if let statusKey = ack.statusKey {
                scriptKeys.append(.string(statusKey))
                arguments.append(.integer(Int64(scriptKeys.count)))  // its index in KEYS, from 1
            } else {
                arguments.append(0)
            }
        }
        return Self.ackScript.command(keys: scriptKeys, arguments: arguments)
    }

    private func connectionConfiguration(role: String) -> RedisConfiguration {
        var configuration = redis
        configuration.clientName = "ferry-worker-\(role)-\(self.configuration.consumer)"
            .map { $0 == " " ? "_" : $0 }.reduce(into: "") { $0.append($1) }
        return configuration
    }

    // MARK: - Dispatch

    /// The read loop: reclaim idle entries when due, then read new ones, never more than free slots.
    private func dispatch(reader: RedisConnection, control: ControlChannel, slots: JobSlots) async {
        var groupReady = false
        var errorBackoff = Duration.milliseconds(100)
        var nextReclaim = ContinuousClock.now
        var reclaimCursor = ReclaimCursor()
        let block = min(configuration.readBlock, configuration.reclaimInterval)

        while !isStopping && !Task.isCancelled {
            loopTurned()
            let free = await slots.waitForFreeSlots()
            if isStopping || Task.isCancelled { break }
            do {
                if !groupReady {
                    try await ensureGroup(control)
                    groupReady = true
                }
                var delivered: [(StreamEntry, Int)] = []
                // Reclaims are rare; after one, look for cancel requests without asking first.
                var cancelRequestsExist = true
                if ContinuousClock.now >= nextReclaim {
                    delivered = try await reclaim(control, cursor: &reclaimCursor, count: free, slots: slots)
                    // A pass that stopped part-way through the pending list goes on at once.
                    nextReclaim = reclaimCursor.start == "-" ? .now + configuration.reclaimInterval : .now
                }
                if delivered.isEmpty {
                    let read = try await read(reader, count: free, block: block)
                    delivered = read.entries.map { ($0, 1) }
                    cancelRequestsExist = read.cancelRequestsExist
                }
                // An entry this worker reclaimed from itself (a lease extension fell behind) is
                // left to the copy already running here, before its batch records any status.
                // Only this loop starts jobs, so one not running now is still not running below.
                let deliveries = delivered.filter { entry, _ in
                    guard slots.isRunning(entry.id) else { return true }
                    logger.info(
                        "reclaimed_own_running_entry: left to the copy already running here",
                        metadata: ["ferry.entry_id": "\(entry.id)"])
                    return false
                }.map { plan($0.0, attempt: $0.1) }
                let cancelled = await startBatch(deliveries, cancelRequestsExist: cancelRequestsExist, control: control)
                for delivery in deliveries {
                    let cancelRequested = cancelled.contains(delivery.jobID)
                    slots.start(entryID: delivery.entry.id, jobID: delivery.jobID) {
                        await self.process(delivery, cancelRequested: cancelRequested, control: control, slots: slots)
                    }
                }
                errorBackoff = .milliseconds(100)
            } catch {
                if error.prefix == .noGroup {
                    logger.info("the stream or group disappeared (NOGROUP); recreating it", metadata: redisFailure(error))
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

    /// Creates the group at the start of the stream (`0`), so jobs published before the first
    /// worker started are delivered, never skipped. An existing group is fine.
    private func ensureGroup(_ control: ControlChannel) async throws(RedisError) {
        do {
            try await control.send(
                RedisCommand("XGROUP CREATE", [.string(keys.jobs), .string(configuration.group), "0", "MKSTREAM"]))
            logger.info("group_created")
        } catch  where error.prefix == .busyGroup {
            return
        }
    }

    /// Reads new entries and, in the same round trip, whether anyone has asked to cancel a job
    /// (Redis runs the `EXISTS` once the blocked read returns), so a batch only pays for the
    /// cancel check when there is something to find.
    private func read(
        _ reader: RedisConnection, count: Int, block: Duration
    ) async throws(RedisError) -> (entries: [StreamEntry], cancelRequestsExist: Bool) {
        precondition(count > 0, "XREADGROUP COUNT 0 reads the whole stream")
        let read = RedisCommand(
            "XREADGROUP",
            [
                "GROUP", .string(configuration.group), .string(configuration.consumer), "COUNT", .integer(Int64(count)),
                "BLOCK", .integer(block.milliseconds), "STREAMS", .string(keys.jobs), ">",
            ])
        let replies = try await reader.pipeline(
            [read, RedisCommand("EXISTS", [.string(keys.cancelRequests)])], timeout: block + redis.commandTimeout)
        if case .error(let message) = replies[0] {
            throw RedisError.server(message, command: read.name, endpoint: redis.redactedURL)
        }
        let cancelRequestsExist = replies[1] != .integer(0)  // an error reply counts as "maybe"
        // [[stream, [[id, [field, value, ...]], ...]]], or nil when BLOCK timed out.
        guard let streams = replies[0].array, let first = streams.first?.array, first.count == 2 else {
            return ([], cancelRequestsExist)
        }
        return (StreamEntry.entries(from: first[1]), cancelRequestsExist)
    }

    /// Where the reclaim scan of the pending list resumes: `-` for the start, else `(ID`.
    struct ReclaimCursor: Sendable {
        var start = "-"
    }

    /// How many pending entries one reclaim pass looks at, at most.
    static let reclaimScanLimit = 100

    /// Claims entries whose lease ran out and whose backoff is over: their worker died, or a
    /// retry is due. An entry is due once idle for the lease plus the backoff of its delivery
    /// count (``RetryPolicy/backoff(afterAttempt:entryID:)``, the same in every worker), so a
    /// crashed worker's job comes back with the same backoff as a failed one, and a scheduled
    /// retry (idle set to the lease) comes back after its backoff however long it is. Entries
    /// deleted while pending are counted and logged. Returns the claimed entries and attempts.
    private func reclaim(
        _ control: ControlChannel, cursor: inout ReclaimCursor, count: Int, slots: JobSlots
    ) async throws(RedisError) -> [(StreamEntry, Int)] {
        let lease = configuration.lease.milliseconds
        let pending = try await control.send(
            RedisCommand(
                "XPENDING",
                [
                    .string(keys.jobs), .string(configuration.group), "IDLE", .integer(lease), .string(cursor.start), "+",
                    .integer(Int64(Self.reclaimScanLimit)),
                ]))
        let items = pending.array ?? []
        var due: [(id: String, deliveries: Int, minimumIdle: Int64)] = []
        var lastConsidered: String?
        for item in items {
            guard let fields = item.array, fields.count >= 4, let id = fields[0].string, let idle = fields[2].integer,
                let deliveries = fields[3].integer
            else { continue }
            if due.count == count { break }
            lastConsidered = id
            // Its own running job, whose lease extension fell behind (a loaded machine, a Redis
            // hiccup): claiming it would only raise its delivery count.
            if fields[1].string == configuration.consumer && slots.isRunning(id) { continue }
            let minimumIdle = lease + configuration.retry.backoff(afterAttempt: Int(deliveries), entryID: id).milliseconds
            if idle >= minimumIdle { due.append((id, Int(deliveries), minimumIdle)) }
        }
        let scannedAll = items.count < Self.reclaimScanLimit && lastConsidered == items.last?.array?.first?.string
        cursor.start = scannedAll ? "-" : lastConsidered.map { "(" + $0 } ?? cursor.start
        if due.isEmpty { return [] }

        var arguments: [RedisArgument] = [.string(configuration.group), .string(configuration.consumer)]
        for entry in due { arguments += [.string(entry.id), .integer(entry.minimumIdle)] }
        let reply = try await control.run(
            Self.claimScript, keys: [.string(keys.jobs), .string(keys.retryAfter)], arguments: arguments)
        guard let parts = reply.array, parts.count == 2 else { return [] }
        if let deleted = parts[1].array, !deleted.isEmpty {
            logger.info(
                "reclaimed_deleted",
                metadata: ["ferry.count": "\(deleted.count)", "ferry.entry_ids": "\(deleted.compactMap(\.string))"])
        }
        let deliveries = Dictionary(due.map { ($0.id, $0.deliveries + 1) }) { first, _ in first }
        metrics.reclaimed(parts[0].array?.count ?? 0)
        return StreamEntry.entries(from: parts[0]).map { entry in
            let attempt = deliveries[entry.id] ?? 2
            logger.info("reclaimed", metadata: ["ferry.entry_id": "\(entry.id)", "ferry.delivery_attempt": "\(attempt)"])
            return (entry, attempt)
        }
    }

    // MARK: - One job

    /// A delivered entry and what it asks of this worker, decided before its task starts so a
    /// read batch can be started (cancel requests, `running` status) in one round trip.
    private struct Delivery: Sendable {
        enum Plan: Sendable {
            /// Redriven for another group, which ran it the first time: only acknowledged here.
            case acknowledgeOnly
            /// Dead-lettered without running: malformed, of an unknown type, or delivered
            /// more than its attempts allow.
            case deadLetter(errorClass: String, error: String)
            case run(JobMessage, any JobHandler)
        }

        let entry: StreamEntry
        let attempt: Int
        /// The producer's `job_id`, or the entry ID when there is none (or it is unreadable).
        let jobID: String
        let plan: Plan

        /// The message of a job that runs without the idempotency guard, whose `running` status
        /// the batch start records (a guarded job records it once its key is taken).
        var unguardedMessage: JobMessage? {
            if case .run(let message, _) = plan, message.idempotencyKey == nil { return message }
            return nil
        }
    }

    private func plan(_ entry: StreamEntry, attempt: Int) -> Delivery {
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
        if attempt > maxAttempts(of: message) {
            return Delivery(
                entry: entry, attempt: attempt, jobID: jobID,
                plan: .deadLetter(
                    errorClass: "worker_lost",
                    error: "delivered \(attempt) times without an outcome: the workers running it stopped or crashed"))
        }
        guard let handler = handlers[message.type] ?? fallbackHandler else {
            return Delivery(
                entry: entry, attempt: attempt, jobID: jobID,
                plan: .deadLetter(
                    errorClass: "unknown_type", error: "no handler for job type \"\(message.type.debugEscaped)\" in this worker"))
        }
        return Delivery(entry: entry, attempt: attempt, jobID: jobID, plan: .run(message, handler))
    }

    /// How many deliveries the job may have: its own `max_attempts`, else the worker's.
    private func maxAttempts(of message: JobMessage) -> Int {
        message.maxAttempts ?? configuration.retry.maxAttempts
    }

    /// Starts a read batch (`start_batch.lua`): finds the jobs someone asked to cancel and
    /// records the others that run unguarded as `running`. When no one asked to cancel anything,
    /// the records join the next flush of the write batcher and the jobs start at once; the
    /// batcher keeps each job's later writes behind its record. Skipped when there is nothing to
    /// do. If Redis fails here, no job is taken as cancelled (a running one is still caught at
    /// the next lease extension) and the status catches up at the job's outcome.
    /// Returns the job ids to cancel.
    private func startBatch(_ deliveries: [Delivery], cancelRequestsExist: Bool, control: ControlChannel) async -> Set<String> {
        let runnable = deliveries.filter { if case .run = $0.plan { true } else { false } }
        let recorded = configuration.recordsStatus ? deliveries.filter { $0.unguardedMessage != nil } : []
        if recorded.isEmpty && (!cancelRequestsExist || runnable.isEmpty) { return [] }
        let checked = cancelRequestsExist ? runnable.map(\.jobID) : []
        var arguments: [RedisArgument] = [
            now(), .string(configuration.consumer), .string(configuration.group), .integer(Int64(checked.count)),
        ]
        arguments += checked.map { .string($0) }
        for delivery in recorded {
            arguments += [
                .string(delivery.jobID), .string(delivery.unguardedMessage?.type ?? ""), .string(delivery.entry.id),
                .integer(Int64(delivery.attempt)),
            ]
        }
        let scriptKeys: [RedisArgument] =
            [.string(keys.cancelRequests)] + recorded.map { .string(keys.jobStatus(jobID: $0.jobID)) }
        if checked.isEmpty {
            control.enqueueStatus([Self.startBatchScript.command(keys: scriptKeys, arguments: arguments)])
            return []
        }
        do {
            let reply = try await control.run(Self.startBatchScript, keys: scriptKeys, arguments: arguments)
            return Set(reply.array?.compactMap(\.string) ?? [])
        } catch {
            logger.info("could not start the batch in Redis; statuses catch up later", metadata: redisFailure(error))
            return []
        }
    }

    /// Runs one delivery to its outcome. Returns ``JobSlots/Exit/acknowledging`` when the job
    /// succeeded and its acknowledgement, batched with others' and not waited for, is on its way.
    private func process(
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

        let message: JobMessage
        let handler: any JobHandler
        switch delivery.plan {
        case .acknowledgeOnly:
            logger.debug("redrive_skip: redriven for another group")
            await acknowledge(entry.id, control: control, logger: logger)
            return .done
        case .deadLetter(let errorClass, let error):
            await deadLetter(
                entry, jobID: jobID, attempt: attempt, errorClass: errorClass, error: error, control: control, logger: logger)
            return .done
        case .run(let decoded, let chosen):
            message = decoded
            handler = chosen
        }

        if cancelRequested {
            await acknowledge(entry.id, control: control, logger: logger)
            await recordCancelled(jobID, entry: entry, attempt: attempt, control: control, logger: logger)
            return .done
        }
        if let key = message.idempotencyKey {
            guard
                await mayRun(
                    entry.id, jobID: jobID, type: message.type, idempotencyKey: key, attempt: attempt, control: control,
                    logger: logger)
            else { return .done }
            await recordStatus(
                jobID, "running", attempt: attempt, terminal: false, control: control,
                fields: [
                    "type": .string(message.type), "entry_id": .string(entry.id), "started_at": now(), "next_attempt_at": "",
                ],
                waitsForWrite: true)
        }
        defer { state.withLock { _ = $0.locks.removeValue(forKey: entry.id) } }

        let job = Job(
            id: jobID, entryID: entry.id, queue: queue, group: configuration.group, deliveryAttempt: attempt, message: message,
            progressReporter: { [self] percent, stage in
                var fields: [String: RedisArgument] = ["progress": .integer(Int64(min(max(percent, 0), 100)))]
                if let stage { fields["stage"] = .string(stage) }
                // Waited for: a job with an idempotency key records its success in `complete.lua`,
                // sent outside the batcher, and a progress write still queued could land after it
                // (and clear its expiry).
                await recordStatus(
                    jobID, nil, attempt: attempt, terminal: false, control: control, fields: fields, waitsForWrite: true)
            })
        logger.info("job_started", metadata: ["ferry.job_type": "\(message.type)"])
        metrics.started(publishedAt: message.publishedAt ?? entry.time)
        let started = ContinuousClock.now
        do {
            try await Self.runHandler(handler, job, timeout: message.timeout ?? configuration.jobTimeout)
            logger.info("job_completed", metadata: ["ferry.latency_ms": "\((ContinuousClock.now - started).milliseconds)"])
            metrics.job(.completed, type: message.type)
            metrics.handlerDuration(ContinuousClock.now - started, type: message.type)
            if let key = message.idempotencyKey {
                if await complete(entry.id, jobID: jobID, idempotencyKey: key, control: control, logger: logger) {
                    notify(.succeeded, jobID: jobID, entry: entry, attempt: attempt, message: message)
                }
                return .done
            }
            let acknowledgement = ControlChannel.Acknowledgement(
                entryID: entry.id, statusKey: configuration.recordsStatus ? keys.jobStatus(jobID: jobID) : nil)
            control.enqueueAcknowledgement(acknowledgement) { [self, logger] acknowledged in
                switch acknowledged {
                case true?: notify(.succeeded, jobID: jobID, entry: entry, attempt: attempt, message: message)
                case false?: logger.info("lease_lost: another worker owns the entry now; not acknowledged")
                case nil: break  // the flush logged it; the job comes back after the lease
                }
                slots.finishAcknowledging(entry.id)
            }
            return .acknowledging
        } catch let error as PermanentJobError {
            metrics.job(.failed, type: message.type)
            metrics.handlerDuration(ContinuousClock.now - started, type: message.type)
            await deadLetter(
                entry, jobID: jobID, attempt: attempt, errorClass: "permanent_failure", error: error.message, control: control,
                logger: logger)
        } catch is CancellationError {
            if slots.wasCancelledOnRequest(entry.id) {
                await acknowledge(entry.id, control: control, logger: logger)
                await recordCancelled(jobID, entry: entry, attempt: attempt, control: control, logger: logger)
            } else {
                logger.info("job_interrupted; left pending for another worker")
                let comesBack = configuration.lease + configuration.retry.backoff(afterAttempt: attempt, entryID: entry.id)
                await recordStatus(
                    jobID, "failed", attempt: attempt, terminal: false, control: control,
                    fields: [
                        "error_class": "interrupted",
                        "last_error": "the worker stopped before the job finished; another worker runs it again",
                        "next_attempt_at": .integer(nowMilliseconds() + comesBack.milliseconds),
                    ])
            }
        } catch {
            metrics.job(.failed, type: message.type)
            metrics.handlerDuration(ContinuousClock.now - started, type: message.type)
            let errorClass = (error as? any RetryableJobError)?.errorClass ?? String(describing: type(of: error))
            logger.info(
                "job_failed",
                metadata: [
                    "ferry.error_class": "\(errorClass)", "ferry.latency_ms": "\((ContinuousClock.now - started).milliseconds)",
                    "ferry.error": "\(String("\(error)".prefix(300)))",
                ])
            if attempt >= maxAttempts(of: message) {
                await deadLetter(
                    entry, jobID: jobID, attempt: attempt, errorClass: errorClass, error: "\(error)", control: control,
                    logger: logger)
            } else {
                metrics.job(.retried, type: message.type)
                await scheduleRetry(
                    entry.id, jobID: jobID, attempt: attempt, error: (errorClass, "\(error)"),
                    retryAfter: (error as? any RetryableJobError)?.retryAfter, control: control, logger: logger)
            }
        }
        return .done
    }

    /// Runs the handler, cancelling it once `timeout` has passed (the exec handler then kills
    /// its process group) and throwing ``JobTimeoutError``.
    static func runHandler(_ handler: any JobHandler, _ job: Job, timeout: Duration?) async throws {
        try Task.checkCancellation()  // cancelled on request before it started
        guard let timeout else { return try await handler.handle(job) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await handler.handle(job) }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw JobTimeoutError(timeout: timeout)
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Acknowledges through the group commit, with no status. Returns when the entry's batch is flushed.
    private func acknowledge(_ entryID: String, control: ControlChannel, logger: Logger) async {
        if await control.acknowledge(ControlChannel.Acknowledgement(entryID: entryID)) == false {
            logger.info("lease_lost: another worker owns the entry now; not acknowledged")
        }
    }

    /// The idempotency guard before a job with a key runs: skips (and acknowledges) a key that
    /// already completed, and lets only one entry per key run at a time. Returns true to run.
    private func mayRun(
        _ entryID: String, jobID: String, type: String, idempotencyKey key: String, attempt: Int, control: ControlChannel,
        logger: Logger
    ) async -> Bool {
        let lock = keys.inFlightLock(idempotencyKey: key)
        let decision: String?
        do {
            decision = try await control.run(
                Self.beginScript, keys: [.string(keys.jobs), .string(keys.completed(idempotencyKey: key)), .string(lock)],
                arguments: [
                    .string(configuration.group), .string(configuration.consumer), .string(entryID),
                    .integer(configuration.lease.milliseconds),
                ]
            ).string
        } catch {
            logger.info("idempotency check failed; the job comes back after the lease", metadata: redisFailure(error))
            return false
        }
        switch decision {
        case "run":
            state.withLock { $0.locks[entryID] = lock }
            return true
        case "skip":
            logger.info("idempotent_skip")
            metrics.job(.skippedDuplicate, type: type)
            await recordStatus(
                jobID, "succeeded", attempt: attempt, terminal: true, control: control,
                fields: ["finished_at": now(), "note": "idempotent_skip: the key had already completed"])
        case "busy":
            logger.info("idempotency key in flight on another entry; retrying later")
            await scheduleRetry(entryID, jobID: jobID, attempt: attempt, error: nil, control: control, logger: logger)
        default:
            logger.info("lease_lost: another worker owns the entry now")
        }
        return false
    }

    /// Acknowledges a job with an idempotency key, marks the key done, releases its lock and
    /// records it succeeded, atomically. Returns true when it did; false when the entry was lost
    /// or Redis failed.
    private func complete(
        _ entryID: String, jobID: String, idempotencyKey key: String, control: ControlChannel, logger: Logger
    ) async -> Bool {
        var scriptKeys: [RedisArgument] = [
            .string(keys.jobs), .string(keys.completed(idempotencyKey: key)), .string(keys.inFlightLock(idempotencyKey: key)),
        ]
        var arguments: [RedisArgument] = [
            .string(configuration.group), .string(configuration.consumer), .string(entryID),
            .integer(configuration.idempotencyTTL.milliseconds), .string(jobID),
        ]
        if configuration.recordsStatus {
            scriptKeys.append(.string(keys.jobStatus(jobID: jobID)))
            arguments += [now(), .integer(configuration.statusTTL.milliseconds)]
        }
        do {
            let completed = try await control.run(Self.completeScript, keys: scriptKeys, arguments: arguments)
            if completed.integer == 1 { return true }
            logger.info("lease_lost: another worker owns the entry now; not acknowledged")
        } catch {
            logger.info("ack failed; the job will be delivered again after the lease", metadata: redisFailure(error))
        }
        return false
    }

    /// Makes the entry reclaimable once the backoff (and `retryAfter`, if later) has passed
    /// (`retry.lua`): its idle time is set to the lease, and reclaim waits for the lease plus
    /// the backoff of this delivery, and for the earliest time if one was asked for.
    private func scheduleRetry(
        _ entryID: String, jobID: String, attempt: Int, error: (errorClass: String, message: String)?,
        retryAfter: Duration? = nil, control: ControlChannel, logger: Logger
    ) async {
        let backoff = configuration.retry.backoff(afterAttempt: attempt, entryID: entryID)
        let delay = max(backoff, retryAfter ?? .zero)
        let notBefore = retryAfter.map { nowMilliseconds() + $0.milliseconds } ?? 0
        do {
            let scheduled = try await control.run(
                Self.retryScript, keys: [.string(keys.jobs), .string(keys.retryAfter)],
                arguments: [
                    .string(configuration.group), .string(configuration.consumer), .integer(configuration.lease.milliseconds),
                    .string(entryID), .integer(notBefore),
                ])
            guard scheduled.integer == 1 else {
                logger.info("lease_lost: another worker owns the entry now; retry not scheduled")
                return
            }
            logger.info("retry_scheduled", metadata: ["ferry.backoff_ms": "\(delay.milliseconds)"])
            var fields: [String: RedisArgument] = ["next_attempt_at": .integer(nowMilliseconds() + delay.milliseconds)]
            if let error {
                fields["error_class"] = .string(error.errorClass)
                fields["last_error"] = .string(String(error.message.prefix(4096)))
            }
            await recordStatus(jobID, "retrying", attempt: attempt, terminal: false, control: control, fields: fields)
        } catch {
            logger.info("could not schedule the retry; the job comes back after the lease", metadata: redisFailure(error))
        }
    }

    private func deadLetter(
        _ entry: StreamEntry, jobID: String, attempt: Int, errorClass: String, error: String, control: ControlChannel,
        logger: Logger
    ) async {
        let failedAt = Date().millisecondsSince1970
        let fields: [RedisArgument] = [
            "dead_letter.source_stream", .string(keys.jobs), "dead_letter.source_group", .string(configuration.group),
            "dead_letter.source_id", .string(entry.id), "dead_letter.delivery_count", .integer(Int64(attempt)),
            "dead_letter.error_class", .string(errorClass), "dead_letter.error", .string(String(error.prefix(4096))),
            "dead_letter.failed_at", .integer(failedAt), "dead_letter.consumer", .string(configuration.consumer),
        ]
        do {
            let moved = try await control.run(
                Self.deadLetterScript, keys: [.string(keys.jobs), .string(keys.deadLetter)],
                arguments: [.string(configuration.group), .string(configuration.consumer), .string(entry.id)] + fields)
            if moved.integer == 1 {
                logger.info("dead_lettered", metadata: ["ferry.error_class": "\(errorClass)"])
                metrics.job(.deadLettered, type: entry.text(of: WireFormat.Field.type))
                await recordStatus(
                    jobID, "dead", attempt: attempt, terminal: true, control: control,
                    fields: [
                        "error_class": .string(errorClass), "last_error": .string(String(error.prefix(4096))),
                        "finished_at": now(),
                    ])
                notify(.dead, jobID: jobID, entry: entry, attempt: attempt, errorClass: errorClass, error: error)
            } else {
                logger.info("lease_lost: another worker owns the entry now; not dead-lettered")
            }
        } catch {
            logger.info(
                "dead-lettering failed; the entry stays pending and comes back after the lease", metadata: redisFailure(error))
        }
    }

    // MARK: - Job status

    /// Updates the job's status hash (`state`, `attempts`, `consumer`, `updated_at` and `fields`;
    /// a nil state leaves the state as it is). A terminal state starts the hash's expiry; any
    /// other state clears it. A failed write is logged and never changes the job's outcome.
    ///
    /// - Parameter waitsForWrite: true to return once the write is flushed (`running`, so the
    ///   status is true while the handler runs; progress, so it cannot land after the success
    ///   that `ack.lua` records); otherwise the job goes on without a round trip.
    private func recordStatus(
        _ jobID: String, _ state: String?, attempt: Int, terminal: Bool, control: ControlChannel,
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
        if let state { all["state"] = .string(state) }
        for (name, value) in all.sorted(by: { $0.key < $1.key }) {
            hset.append(name)
            hset.append(value)
        }
        let expiry =
            terminal
            ? RedisCommand("PEXPIRE", [.string(key), .integer(configuration.statusTTL.milliseconds)])
            : RedisCommand("PERSIST", [.string(key)])
        if waitsForWrite {
            await control.writeStatus([hset, expiry])
        } else {
            // Batches keep their order, and the worker waits for the last one before it returns.
            control.enqueueStatus([hset, expiry])
        }
    }

    private func recordCancelled(_ jobID: String, entry: StreamEntry, attempt: Int, control: ControlChannel, logger: Logger) async
    {
        logger.info("job_cancelled")
        metrics.job(.cancelled, type: entry.text(of: WireFormat.Field.type))
        await recordStatus(jobID, "cancelled", attempt: attempt, terminal: true, control: control, fields: ["finished_at": now()])
        notify(.cancelled, jobID: jobID, entry: entry, attempt: attempt)
    }

    /// Cancels the handlers of running jobs someone asked to cancel (`ferry job cancel`).
    private func cancelRequestedJobs(_ control: ControlChannel, slots: JobSlots) async throws(RedisError) {
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
    private func notify(
        _ state: JobEvent.State, jobID: String, entry: StreamEntry, attempt: Int, message: JobMessage? = nil,
        errorClass: String? = nil, error: String? = nil
    ) {
        guard let observer else { return }
        let message = message ?? (try? entry.decodedJob(maxPayloadBytes: .max))
        observer.jobFinished(
            JobEvent(
                jobID: jobID, entryID: entry.id, queue: queue, group: configuration.group, state: state, attempts: attempt,
                type: message?.type, errorClass: errorClass, error: error.map { String($0.prefix(4096)) },
                publishedAt: message?.publishedAt))
    }

    private func now() -> RedisArgument { .integer(nowMilliseconds()) }

    private func nowMilliseconds() -> Int64 { Date().millisecondsSince1970 }

    // MARK: - Leases and shutdown

    /// Extends the lease of every running job at a quarter of the lease, so a slow job on a live
    /// worker is never reclaimed by another.
    private func maintainLeases(_ control: ControlChannel, slots: JobSlots) async {
        defer { metrics.inFlight(0) }
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.maintenanceInterval)
            loopTurned()
            let running = Array(slots.running.keys)
            metrics.inFlight(running.count)
            let locks = state.withLock { $0.locks }
            if running.isEmpty { continue }
            do {
                let lost = try await control.run(
                    Self.leaseScript, keys: [.string(keys.jobs)],
                    arguments: [.string(configuration.group), .string(configuration.consumer), 0] + running.map { .string($0) })
                for id in lost.array?.compactMap(\.string) ?? [] {
                    logger.info("lease_lost", metadata: ["ferry.entry_id": "\(id)"])
                }
                if !locks.isEmpty {
                    try await control.run(
                        Self.extendLockScript, keys: locks.values.map { .string($0) },
                        arguments: [.integer(configuration.lease.milliseconds)] + locks.keys.map { .string($0) })
                }
                metrics.leasesExtended(running.count)
                logger.info(
                    "lease_extended",
                    metadata: ["ferry.count": "\(running.count)", "ferry.entry_ids": "\(running.prefix(20).sorted())"])
                try await cancelRequestedJobs(control, slots: slots)
            } catch {
                logger.info("lease extension failed", metadata: redisFailure(error))
            }
        }
    }

    /// Removes this consumer from the group when it holds nothing, so finished containers do not
    /// pile up in `XINFO CONSUMERS`. A consumer that still holds entries is kept.
    private func releaseConsumer(_ control: ControlChannel) async {
        _ = try? await control.run(
            Self.releaseConsumerScript, keys: [.string(keys.jobs)],
            arguments: [.string(configuration.group), .string(configuration.consumer)])
    }

    /// Counts a Redis error (`ferry_redis_errors_total`) and describes it for a log line.
    private func redisFailure(_ error: RedisError) -> Logger.Metadata {
        metrics.redisError(error)
        return ["redis.error": "\(error.message)", "redis.error_prefix": "\(error.prefix?.rawValue ?? error.kind.description)"]
    }
}
