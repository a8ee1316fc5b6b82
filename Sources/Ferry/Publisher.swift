import FerryRedis
import Foundation
import Logging
import Synchronization

/// Appends jobs to a queue's stream in wire format v1.
///
/// A job without an idempotency key is one `XADD`. A job with one runs the `publish` script
/// (`ops/lua/publish.lua`), which adds the entry only if the key was not published within the
/// dedup window and returns the first job id otherwise, atomically, so concurrent publishers in
/// any number of processes add exactly one entry. Batches are pipelined: one round trip per
/// ``Configuration/pipelineDepth`` jobs.
///
/// Every job of a call is validated before anything is written: a bad queue name, an empty type
/// or an oversized payload writes nothing.
public final class Publisher: Sendable {
    /// Long-lived publishing settings.
    public struct Configuration: Sendable {
        /// The largest `data` accepted, in bytes; workers should be given the same limit.
        public var maxPayloadBytes = WireFormat.defaultMaxPayloadBytes
        /// How long a publish idempotency key is remembered (Pub/Sub's and asynq's default: 24 h).
        public var dedupWindow: Duration = .seconds(24 * 3600)
        /// When set, entries older than this are trimmed from the job stream, never one that a
        /// consumer group has not finished (see `trim.lua`). Off by default: a stream holds what
        /// was published until an operator decides otherwise.
        public var retention: Duration?
        /// How often, at most, a publisher enforces ``retention``.
        public var retentionInterval: Duration = .seconds(1)
        /// How many jobs go in one pipelined round trip.
        public var pipelineDepth = 1000
        /// Whether each new job with an id of its own gets a status hash in state `queued`, in the
        /// script that adds its entry (a job whose id is its entry ID needs none: its entry is its
        /// record), so `ferry job status` knows a job before a worker takes it; and whether each
        /// publish is a `queued` event while the queue's events are on.
        public var recordsStatus = true
        /// How long a queued status lives if no worker ever runs the job.
        public var statusTTL: Duration = .seconds(24 * 3600)
        /// A payload larger than this is stored once in `ferry:{Q}:payload:<sha256>` and the entry
        /// carries a reference (``PayloadReference``), which the worker fetches and checks before
        /// the handler runs; nil keeps every payload in its entry. ``maxPayloadBytes`` bounds both.
        public var inlinePayloadLimit: Int? = PayloadReference.defaultInlineLimit
        /// How long a payload stored by reference lives after its publish (plus a scheduled job's
        /// wait) or its last delivery, at least: longer than any job waits in the queue.
        public var payloadTTL: Duration = PayloadReference.defaultTTL

        /// The defaults: idempotent publish within 24 h, status recorded, retention off.
        public init() {}
    }

    /// The queue every call publishes to.
    public let queue: QueueName
    /// Its keys, for callers that look at what was published.
    public let keys: QueueKeys
    /// The settings every call uses.
    public let configuration: Configuration
    private let connection: RedisConnection
    private let lastTrim = Mutex<ContinuousClock.Instant?>(nil)
    /// The queue's bounds and whether its events are on, as last read, and when: read again
    /// after a second, so a change (`ferry queue set`, `ferry queue events on`) reaches every
    /// publisher within one.
    private let settingsRead = Mutex<(value: PublishSettings, at: ContinuousClock.Instant)?>(nil)
    /// Whether this publisher has listed its queue in ``QueueRegistry``.
    private let registered = Atomic(false)

    /// What decides how a batch is published.
    struct PublishSettings: Sendable {
        var bounds: QueueSettings.Bounds
        var eventsOn: Bool
    }

    static let publishScript = FerryScripts.script("publish", EmbeddedLuaScripts.publish)
    static let publishBatchScript = FerryScripts.script("publish_batch", EmbeddedLuaScripts.publish_batch)
    static let publishPriorityScript = FerryScripts.script("publish_priority", EmbeddedLuaScripts.publish_priority)
    static let publishOrderedScript = FerryScripts.script("publish_ordered", EmbeddedLuaScripts.publish_ordered)

    /// How long a key's set of unfinished jobs outlives its last publish.
    static let keyJobsKeep: Duration = .seconds(7 * 24 * 3600)

    /// The queue's maximum depth and quota per key (`ferry:{Q}:settings`), and whether its
    /// events are on; read at most once a second.
    func settings() async throws(FerryError) -> PublishSettings {
        let read = settingsRead.withLock { $0 }
        if let read, ContinuousClock.now - read.at < .seconds(1) { return read.value }
        let value = PublishSettings(
            bounds: try await QueueSettings(queue: queue, connection: connection).bounds(),
            eventsOn: try await QueueEvents(queue: queue, connection: connection).isEnabled())
        settingsRead.withLock { $0 = (value, .now) }
        return value
    }

    /// Publishes one chunk in one script (`publish_batch.lua`): all of it with each job's queued
    /// record and event, or, when it does not fit under the maximum depth or a key's quota, none
    /// (``QueueFullError``).
    private func publishBatch(
        _ jobs: ArraySlice<JobMessage>, bounds: QueueSettings.Bounds, at now: Date
    ) async throws(FerryError) -> [PublishReceipt] {
        var scriptKeys: [RedisArgument] = [.string(keys.jobs), .string(keys.drainSample)]
        var arguments: [RedisArgument] = [
            bounds.maxDepth.map { .integer(Int64($0)) } ?? "", .integer(configuration.dedupWindow.milliseconds),
            .string(keys.delayedPrefix), bounds.maxPendingPerKey.map { .integer(Int64($0)) } ?? "",
            .integer(Self.keyJobsKeep.milliseconds),
            configuration.recordsStatus ? .integer(configuration.statusTTL.milliseconds) : "",
            .integer(now.millisecondsSince1970),
        ]
        var keySets: [String: Int] = [:]  // a key's set, by the key: its index in KEYS
        for job in jobs {
            var dedupIndex = 0
            if let key = job.idempotencyKey {
                scriptKeys.append(.string(keys.publishDedup(idempotencyKey: key)))
                dedupIndex = scriptKeys.count
            }
            var keySetIndex = 0
            if bounds.maxPendingPerKey != nil, let key = job.key {
                if let known = keySets[key] {
                    keySetIndex = known
                } else {
                    scriptKeys.append(.string(keys.keyJobs(key: key)))
                    keySetIndex = scriptKeys.count
                    keySets[key] = keySetIndex
                }
            }
            var orderedIndex = 0
            if let orderingKey = job.orderingKey {
                scriptKeys.append(.string(keys.orderedJobs(key: orderingKey)))
                orderedIndex = scriptKeys.count
            }
            var statusIndex = 0
            if configuration.recordsStatus, let jobID = job.jobID {
                scriptKeys.append(.string(keys.jobStatus(jobID: jobID)))
                statusIndex = scriptKeys.count
            }
            var encoded = RedisCommand("FIELDS")
            job.appendFields(to: &encoded, defaultPublishedAt: now)
            let fields = encoded.arguments.dropFirst().map { RedisArgument.bytes($0) }
            arguments +=
                [
                    .integer(Int64(dedupIndex)), .integer(Int64(keySetIndex)), .integer(Int64(orderedIndex)),
                    .integer(Int64(statusIndex)), .string(job.jobID ?? ""), .integer(Int64(fields.count)),
                ] + fields
        }
        let command = Self.publishBatchScript.command(keys: scriptKeys, arguments: arguments)
        let reply: RedisReply
        do {
            reply = try await connection.send(command)
        } catch {
            throw FerryError(error)
        }
        let parts = reply.array ?? []
        guard parts.first?.integer == 1, let rows = parts.dropFirst().first?.array else {
            let number = { (index: Int) in parts.dropFirst(index).first?.integer }
            let key = number(4).flatMap { index in keySets.first { $0.value == Int(index) }?.key }
            throw FerryError(
                QueueFullError(
                    queue: queue, depth: Int(number(1) ?? 0),
                    maxDepth: (key == nil ? bounds.maxDepth : bounds.maxPendingPerKey) ?? 0,
                    refused: Int(number(2) ?? Int64(jobs.count)), key: key,
                    retryAfter: number(3).flatMap { $0 >= 0 ? .milliseconds($0) : nil }))
        }
        return rows.map { row in
            let values = row.array ?? []
            let entryID = values.dropFirst().first?.string.flatMap { $0.isEmpty ? nil : $0 }
            return PublishReceipt(jobID: values.first?.string ?? "", entryID: entryID, isDuplicate: values.last?.integer == 0)
        }
    }
    static let trimScript = Worker.trimScript
    static let scheduleScript = FerryScripts.script("schedule", EmbeddedLuaScripts.schedule)

    /// When a scheduled job is to be delivered.
    public enum Due: Sendable, Hashable {
        /// At this time (Redis's clock decides when it has come).
        case at(Date)
        /// This long after Redis receives the publish.
        case after(Duration)
    }

    /// Publishes a job to be delivered later (a delayed or scheduled job): it waits in the queue's
    /// due index (`ferry:{Q}:scheduled`) and a worker moves it into the stream when Redis's clock
    /// reaches `due`; every group then receives it once, as any job. A time in the past delivers
    /// it at once. A job without a `job_id` is given one (a UUID), since it has no entry ID yet.
    ///
    /// - Returns: the receipt; `entryID` is nil until the job is due.
    public func schedule(_ job: JobMessage, _ due: Due) async throws(FerryError) -> PublishReceipt {
        try await schedule([job], due)[0]
    }

    /// Schedules several jobs for the same time, pipelined (``schedule(_:_:)`` for one).
    public func schedule(_ jobs: [JobMessage], _ due: Due) async throws(FerryError) -> [PublishReceipt] {
        let dueArgument: RedisArgument
        switch due {
        case .at(let date): dueArgument = .integer(date.millisecondsSince1970)
        case .after(let delay):
            guard delay >= .zero else { throw FerryError(.invalidInput, "a delay must not be negative; got \(delay)") }
            dueArgument = .string("+\(delay.milliseconds)")
        }
        var named: [JobMessage] = []
        named.reserveCapacity(jobs.count)
        for var job in jobs {
            try job.validateForPublishing(maxPayloadBytes: configuration.maxPayloadBytes)
            if job.jobID == nil { job.jobID = UUID().uuidString.lowercased() }
            job.deliverAt = nil  // the due index holds the time; the entry runs when it arrives
            named.append(job)
        }
        let wait: Duration
        switch due {
        case .at(let date): wait = .milliseconds(max(0, date.millisecondsSince1970 - Date().millisecondsSince1970))
        case .after(let delay): wait = delay
        }
        named = try await storingLargePayloads(named, waiting: wait)
        var receipts: [PublishReceipt] = []
        receipts.reserveCapacity(named.count)
        var start = 0
        while start < named.count {
            let chunk = named[start..<min(start + configuration.pipelineDepth, named.count)]
            let replies: [RedisReply]
            do {
                replies = try await connection.pipeline(chunk.map { scheduleCommand($0, due: dueArgument) })
            } catch {
                throw FerryError(error)
            }
            for (job, reply) in zip(chunk, replies) {
                if case .error(let message) = reply {
                    throw FerryError(
                        RedisError.server(message, command: "FCALL", endpoint: connection.configuration.redactedURL))
                }
                let parts = reply.array ?? []
                receipts.append(
                    PublishReceipt(
                        jobID: parts.dropFirst().first?.string ?? job.jobID ?? "", entryID: nil,
                        isDuplicate: parts.first?.integer == 0))
            }
            start += chunk.count
        }
        return receipts
    }

    private func scheduleCommand(_ job: JobMessage, due: RedisArgument) -> RedisCommand {
        let jobID = job.jobID ?? ""
        var scriptKeys: [RedisArgument] = [.string(keys.scheduled), .string(keys.scheduledJob(jobID: jobID))]
        if configuration.recordsStatus { scriptKeys.append(.string(keys.jobStatus(jobID: jobID))) }
        if let key = job.idempotencyKey { scriptKeys.append(.string(keys.publishDedup(idempotencyKey: key))) }
        var command = Self.scheduleScript.command(
            keys: scriptKeys,
            arguments: [
                due, .string(jobID), .integer(configuration.dedupWindow.milliseconds),
                .integer(Self.scheduledKeep.milliseconds), .string(job.type), configuration.recordsStatus ? "1" : "0",
                job.idempotencyKey == nil ? "0" : "1",
            ])
        job.appendFields(to: &command)
        return command
    }

    /// How long a scheduled job's fields and status outlive its due time when no worker moves it.
    static let scheduledKeep: Duration = .seconds(7 * 24 * 3600)

    /// Publishes through `connection`, which may be shared with other work.
    public init(queue: QueueName, connection: RedisConnection, configuration: Configuration = Configuration()) {
        self.queue = queue
        self.keys = QueueKeys(queue: queue)
        self.configuration = configuration
        self.connection = connection
    }

    /// Publishes one job.
    ///
    /// - Returns: the job id (the one given, or the stream entry ID) and whether it was a duplicate.
    /// - Throws: ``FerryError``: ``FerryError/Code/invalidInput`` when the job breaks a rule (nothing
    ///   is written), ``FerryError/Code/redis`` when Redis is unreachable or refuses (`OOM`, `NOPERM`).
    public func publish(_ job: JobMessage) async throws(FerryError) -> PublishReceipt {
        try await publish([job])[0]
    }

    /// Publishes several jobs, pipelined, and returns a receipt for each, in order.
    ///
    /// If Redis fails part-way the call throws, and jobs before the failure may have been added:
    /// publish with idempotency keys to make a retry of the whole batch safe.
    /// A job with a ``JobMessage/deliverAt`` or ``JobMessage/delay`` is scheduled
    /// (``schedule(_:_:)``), in the order given among the others.
    public func publish(_ jobs: [JobMessage]) async throws(FerryError) -> [PublishReceipt] {
        if let firstTimed = jobs.firstIndex(where: { $0.deliverAt != nil || $0.delay != nil }) {
            // Runs of immediate and timed jobs, in order.
            var receipts = try await publish(Array(jobs[..<firstTimed]))
            var timed = jobs[firstTimed]
            let due: Due = timed.delay.map { .after($0) } ?? .at(timed.deliverAt ?? Date())
            timed.delay = nil
            receipts.append(try await schedule(timed, due))
            return receipts + (try await publish(Array(jobs[(firstTimed + 1)...])))
        }
        if jobs.isEmpty { return [] }
        for job in jobs { try job.validateForPublishing(maxPayloadBytes: configuration.maxPayloadBytes) }
        let jobs = try await storingLargePayloads(jobs)
        let now = Date()
        let settings = try await settings()
        var receipts: [PublishReceipt] = []
        receipts.reserveCapacity(jobs.count)
        var start = 0
        while start < jobs.count {
            let chunk = jobs[start..<min(start + configuration.pipelineDepth, jobs.count)]
            // The script when the queue is bounded or a job needs a queued record or event, in
            // the step that adds its entry; else plain XADDs (a fifth of the script's Redis time).
            let records = configuration.recordsStatus && (settings.eventsOn || chunk.contains { $0.jobID != nil })
            if !settings.bounds.isEmpty || records {
                receipts += try await publishBatch(chunk, bounds: settings.bounds, at: now)
                start += chunk.count
                continue
            }
            let commands = chunk.map { command(publishing: $0, at: now) }
            let replies: [RedisReply]
            do {
                replies = try await connection.pipeline(commands)
            } catch {
                throw FerryError(error)
            }
            for (job, (command, reply)) in zip(chunk, zip(commands, replies)) {
                receipts.append(try receipt(for: job, command: command, reply: reply))
            }
            start += chunk.count
        }
        // The first publish lists the queue among the Redis's queues (QueueRegistry), once its
        // stream exists: a listing that prunes names without a stream never sees this one
        // registered and streamless, and removes it while its first jobs are on their way.
        if !registered.load(ordering: .relaxed) {
            try await QueueRegistry.register(queue, connection: connection)
            registered.store(true, ordering: .relaxed)
        }
        try await enforceRetentionIfDue()
        return receipts
    }

    /// Moves each payload over ``Configuration/inlinePayloadLimit`` out of its job into
    /// `ferry:{Q}:payload:<sha256>`, stored (one pipeline) before any entry names it, for
    /// ``Configuration/payloadTTL`` plus `waiting` (a scheduled job's wait for its time).
    private func storingLargePayloads(_ jobs: [JobMessage], waiting: Duration = .zero) async throws(FerryError) -> [JobMessage] {
        guard let limit = configuration.inlinePayloadLimit, jobs.contains(where: { $0.data.count > limit }) else { return jobs }
        var stores: [RedisCommand] = []
        let moved = jobs.map { job in
            guard job.data.count > limit else { return job }
            var referring = job
            let (reference, commands) = PayloadReference.store(job.data, keys, ttl: configuration.payloadTTL + waiting)
            referring.dataReference = reference
            referring.data = []
            stores += commands
            return referring
        }
        let replies: [RedisReply]
        do {
            replies = try await connection.pipeline(stores)
        } catch {
            throw FerryError(error)
        }
        for (command, reply) in zip(stores, replies) {
            if case .error(let message) = reply {
                throw FerryError(
                    RedisError.server(message, command: command.name, endpoint: connection.configuration.redactedURL))
            }
        }
        return moved
    }

    /// Trims entries older than ``Configuration/retention`` that every group has finished, in
    /// every priority lane.
    ///
    /// - Returns: how many entries were removed (0 when retention is off).
    @discardableResult
    public func trimExpiredJobs() async throws(FerryError) -> Int {
        guard let retention = configuration.retention else { return 0 }
        var trimmed = 0
        for stream in try await connection.laneStreams(of: keys) {
            do {
                let reply = try await connection.run(
                    Self.trimScript, keys: [.string(stream)],
                    arguments: [.integer(retention.milliseconds), .string(keys.delayedPrefix)])
                trimmed += Int(reply.integer ?? 0)
            } catch {
                throw FerryError(error)
            }
        }
        return trimmed
    }

    private func enforceRetentionIfDue() async throws(FerryError) {
        guard configuration.retention != nil else { return }
        let due = lastTrim.withLock { last -> Bool in
            let now = ContinuousClock.now
            if let last, now - last < configuration.retentionInterval { return false }
            last = now
            return true
        }
        if due { try await trimExpiredJobs() }
    }

    private func command(publishing job: JobMessage, at now: Date) -> RedisCommand {
        var command: RedisCommand
        if let orderingKey = job.orderingKey {
            var scriptKeys: [RedisArgument] = [.string(keys.jobs), .string(keys.orderedJobs(key: orderingKey))]
            if let idempotencyKey = job.idempotencyKey {
                scriptKeys.append(.string(keys.publishDedup(idempotencyKey: idempotencyKey)))
            }
            command = Self.publishOrderedScript.command(
                keys: scriptKeys,
                arguments: [
                    job.idempotencyKey == nil ? "" : .integer(configuration.dedupWindow.milliseconds),
                    .string(job.jobID ?? ""), .string(keys.delayedPrefix),
                ])
        } else if let priority = job.priority, priority != .normal {
            // To its priority's lane, whose entry ID the script chooses.
            var scriptKeys: [RedisArgument] = [.string(keys.jobs)]
            if let idempotencyKey = job.idempotencyKey {
                scriptKeys.append(.string(keys.publishDedup(idempotencyKey: idempotencyKey)))
            }
            command = Self.publishPriorityScript.command(
                keys: scriptKeys,
                arguments: [
                    job.idempotencyKey == nil ? "" : .integer(configuration.dedupWindow.milliseconds), .string(job.jobID ?? ""),
                ])
        } else if let idempotencyKey = job.idempotencyKey {
            command = Self.publishScript.command(
                keys: [.string(keys.jobs), .string(keys.publishDedup(idempotencyKey: idempotencyKey))],
                arguments: [.integer(configuration.dedupWindow.milliseconds), .string(job.jobID ?? "")])
        } else {
            // Room for the entry's usual fields too (about 200 bytes of RESP): one allocation.
            command = RedisCommand("XADD", reservingCapacity: job.data.count + job.type.utf8.count + 256)
            command.append(keys.jobs)
            command.append("*")
        }
        job.appendFields(to: &command, defaultPublishedAt: now)
        return command
    }

    private func receipt(for job: JobMessage, command: RedisCommand, reply: RedisReply) throws(FerryError) -> PublishReceipt {
        if case .error(let message) = reply {
            throw FerryError(RedisError.server(message, command: command.name, endpoint: connection.configuration.redactedURL))
        }
        if let entryID = reply.string {
            return PublishReceipt(jobID: job.jobID ?? entryID, entryID: entryID, isDuplicate: false)
        }
        if let parts = reply.array, parts.count >= 2, let added = parts[0].integer, let jobID = parts[1].string {
            return PublishReceipt(jobID: jobID, entryID: parts.count > 2 ? parts[2].string : nil, isDuplicate: added == 0)
        }
        throw FerryError(
            RedisError(kind: .protocolError, message: "unexpected reply to \(command.name) while publishing: \(reply)"))
    }
}

/// What publishing one job did.
public struct PublishReceipt: Sendable, Hashable {
    /// The job's id: the one the producer gave, else the stream entry ID. For a duplicate, the
    /// id of the job first published with the idempotency key.
    public var jobID: String
    /// The new stream entry's ID; nil for a duplicate, which added nothing.
    public var entryID: String?
    /// True when the idempotency key was already published within the dedup window.
    public var isDuplicate: Bool
}
