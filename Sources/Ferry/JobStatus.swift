import FerryRedis
import Foundation

/// A job's status in one consumer group, as its workers recorded it in `ferry:{Q}:job:<job_id>`.
///
/// The hash holds the job's own fields (`job_id`, `type`, `entry_id`, `queued_at`,
/// `cancel_requested`) and, for each group that has started the job, that group's
/// fields named `<group>.<field>` (data format 2, docs/wire-format.md): `state` (a
/// ``JobState``), `attempts`, `error_class`, `retryable` (`1` when another attempt will come,
/// `0` when none will), `processing_ms` (how long the last attempt's handler ran), `last_error`,
/// `next_attempt_at` (retry guidance), `progress` (0-100) and `stage` when the handler reports
/// them, `started_at`, `finished_at`, `updated_at` (milliseconds since the epoch), `consumer`,
/// `dead_id` (the dead letter's entry ID). A group with no fields of its own has not started
/// the job: it reads `queued`. A hash written before format 2 has one set of unprefixed fields
/// shared by every group; it reads as every group's status until it expires.
public struct JobStatus: Sendable, Hashable {
    /// The job it describes.
    public var jobID: String
    /// The group whose status this is.
    public var group: String
    /// The group's fields, unprefixed, over the job's own fields: every field a view shows.
    public var fields: [String: String]

    /// Where the job is now in the group; nil in a hash only `ferry job cancel` wrote (or one
    /// with a state this version does not know).
    public var state: JobState? { fields["state"].flatMap(JobState.init(rawValue:)) }
    /// Deliveries so far, counting the one running or last run.
    public var attempts: Int? { fields["attempts"].flatMap { Int($0) } }

    /// The fields whose values are times, in milliseconds since the epoch.
    public static func isTime(_ field: String) -> Bool { field.hasSuffix("_at") }
    /// The fields whose values are counts.
    public static let countFields: Set<String> = ["attempts", "progress", "processing_ms"]

    /// Reads a job's status in one group.
    ///
    /// - Returns: nil when there is none: the job never ran with status recording on, or its
    ///   status expired.
    public static func load(
        jobID: String, queue: QueueName, group: String = "workers", connection: RedisConnection
    ) async throws(FerryError) -> JobStatus? {
        try await JobStatusRecord.load(jobID: jobID, queue: queue, connection: connection)?.status(group: group)
    }

    static let cancelScript = FerryScripts.script("cancel", EmbeddedLuaScripts.cancel)

    /// Asks for a job to be cancelled: one that has not started is acknowledged as `cancelled`
    /// without running; a running one has its handler cancelled (an `--exec` command's process
    /// group is killed) and is acknowledged as `cancelled`; one waiting for a retry (or parked
    /// until its `deliver_at`, or waiting on a limit) is taken out of its group's later deliveries and is `cancelled` at once.
    ///
    /// - Parameters:
    ///   - keepFor: how long the request is kept: a job delivered after that runs.
    ///   - evenIfUnknown: records the request for a job with no status too (one still to be
    ///     published, or published by a plain `XADD`); otherwise such a job is left alone.
    /// - Returns: the job's state before the request (of the first group that has not finished
    ///   it), nil when none was recorded; a job every group has finished is left as it is, and
    ///   a finished state is returned when one is kept.
    public static func requestCancellation(
        jobID: String, queue: QueueName, connection: RedisConnection, keepFor: Duration = .seconds(7 * 24 * 3600),
        evenIfUnknown: Bool = false
    ) async throws(FerryError) -> JobState? {
        let state = try await requestCancellationInScript(
            jobID: jobID, queue: queue, connection: connection, keepFor: keepFor, evenIfUnknown: evenIfUnknown)
        guard state == nil, !evenIfUnknown, jobID.wholeMatch(of: /[0-9]{1,20}-[0-9]{1,20}/) != nil,
            let found = try await JobLocator(queue: queue, connection: connection).find(jobID)
        else { return state }
        // A job whose id is its entry ID has no status hash until a group starts it (its entry
        // is its queued record): the stream says whether a group has yet to finish it.
        let unfinished = found.groups.values.filter { $0 != .done }
        guard found.groups.isEmpty || !unfinished.isEmpty else {
            // Every group finished it: its first group's state when one is kept (a packed
            // success, data format 3), so a caller can say "already succeeded", not "unknown".
            let record = try await JobStatusRecord.load(jobID: jobID, queue: queue, connection: connection)
            return found.groups.keys.sorted().lazy.compactMap { record?.status(group: $0).state }.first { $0.isTerminal }
        }
        _ = try await requestCancellationInScript(
            jobID: jobID, queue: queue, connection: connection, keepFor: keepFor, evenIfUnknown: true)
        return unfinished.contains { if case .pending = $0 { true } else { false } } ? .running : .queued
    }

    static let retryCancelledScript = FerryScripts.script("retry_cancelled", EmbeddedLuaScripts.retry_cancelled)

    /// What asking to run a cancelled job again did.
    public enum RetryOutcome: Sendable, Hashable {
        /// Back in the queue for the group, as this new entry.
        case queued(entryID: String)
        /// The group's job is not cancelled (nil: it has no status there); nothing changed.
        case notCancelled(JobState?)
        /// Its entry (this ID) is no longer in the stream (trimmed after the queue's retention,
        /// or deleted), so its fields are not kept to run it again.
        case entryGone(entryID: String)
    }

    /// Runs a job that `group` cancelled again, for that group only (its workers take it as a
    /// new delivery; other groups' workers, which already finished it, acknowledge it unrun), as
    /// a redrive does for a dead one: its stream entry is added again, its cancel request goes,
    /// and its status shows `queued`, in one script (`retry_cancelled.lua`).
    public static func retryCancelled(
        jobID: String, queue: QueueName, group: String = "workers", connection: RedisConnection
    ) async throws(FerryError) -> RetryOutcome {
        let keys = QueueKeys(queue: queue)
        let reply: RedisReply
        do {
            reply = try await connection.run(
                retryCancelledScript,
                keys: [.string(keys.jobs), .string(keys.jobStatus(jobID: jobID)), .string(keys.cancelRequests)],
                arguments: [
                    .string(group), .integer(Date().millisecondsSince1970), .string(keys.statusIndexPrefix), .string(jobID),
                ])
        } catch {
            throw FerryError(error)
        }
        let parts = reply.array?.compactMap(\.string) ?? []
        switch (parts.first, parts.count == 2 ? parts[1] : nil) {
        case ("queued", let id?): return .queued(entryID: id)
        case ("gone", let id?): return .entryGone(entryID: id)
        case ("state", let state?): return .notCancelled(JobState(rawValue: state))
        default: throw FerryError(.redis, "retry_cancelled.lua answered \(reply), which this version does not know")
        }
    }

    /// What ``retry(jobID:queue:connection:)`` did, group by group.
    public struct Retry: Sendable, Hashable {
        /// A group the job runs again in.
        public struct Requeued: Sendable, Hashable {
            /// The group (nil for a dead letter written before groups were recorded).
            public var group: String?
            /// The job's new stream entry.
            public var entryID: String
            /// What it was there: ``JobState/dead`` or ``JobState/cancelled``.
            public var from: JobState
        }
        /// Where it runs again.
        public var requeued: [Requeued] = []
        /// Why it could not in the other groups that have a status for it, by group: its state
        /// there (not dead or cancelled), or that its entry is gone.
        public var refused: [String: String] = [:]
        /// Whether the job is known at all (a status, or a dead letter).
        public var found: Bool { !requeued.isEmpty || !refused.isEmpty }
    }

    /// Runs a finished-but-failed job again, wherever it can: its dead letter redriven (to the
    /// group that gave up on it) and, in each group that cancelled it, the cancelled job retried
    /// (``retryCancelled(jobID:queue:group:connection:)``). A job that is queued, running or
    /// succeeded is left as it is (``Retry/refused`` says so). For `ferry job retry` and the
    /// API's `:retry`.
    public static func retry(jobID: String, queue: QueueName, connection: RedisConnection) async throws(FerryError) -> Retry {
        var retry = Retry()
        let deadLetters = DeadLetters(queue: queue, connection: connection)
        if let letter = try await deadLetters.letter(jobID: jobID), let entryID = try await deadLetters.redrive(letter) {
            retry.requeued.append(.init(group: letter.sourceGroup, entryID: entryID, from: .dead))
        }
        let record = try await JobStatusRecord.load(jobID: jobID, queue: queue, connection: connection)
        for (group, fields) in (record?.groups ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard !retry.requeued.contains(where: { $0.group == group }) else { continue }
            switch try await retryCancelled(jobID: jobID, queue: queue, group: group, connection: connection) {
            case .queued(let entryID): retry.requeued.append(.init(group: group, entryID: entryID, from: .cancelled))
            case .entryGone(let entryID):
                retry.refused[group] =
                    "cancelled, but its entry \(entryID) is no longer in the stream (trimmed after the queue's retention): publish it anew"
            case .notCancelled(let state): retry.refused[group] = state?.rawValue ?? fields["state"] ?? "unknown"
            }
        }
        return retry
    }

    private static func requestCancellationInScript(
        jobID: String, queue: QueueName, connection: RedisConnection, keepFor: Duration, evenIfUnknown: Bool
    ) async throws(FerryError) -> JobState? {
        let keys = QueueKeys(queue: queue)
        let groups = try await ConsumerGroups(queue: queue, connection: connection).names()
        do {
            let reply = try await connection.run(
                cancelScript,
                keys: [
                    .string(keys.jobStatus(jobID: jobID)), .string(keys.cancelRequests), .string(keys.scheduled),
                    .string(keys.scheduledJob(jobID: jobID)),
                ],
                arguments: [
                    .integer(Date().millisecondsSince1970), .integer(keepFor.milliseconds),
                    .string(jobID), evenIfUnknown ? "1" : "0", .string(keys.delayedPrefix), .string(keys.statusIndexPrefix),
                ] + groups.map { .string($0) })
            return reply.string.flatMap(JobState.init(rawValue:))
        } catch {
            throw FerryError(error)
        }
    }
}

/// Everything the status hash of one job holds: the job's own fields and each group's.
public struct JobStatusRecord: Sendable, Hashable {
    /// The job it describes.
    public var jobID: String
    /// The job's own fields (`type`, `entry_id`, `queued_at`, `cancel_requested`, ...; a hash
    /// written before data format 2 also has its one shared status here).
    public var shared: [String: String]
    /// Each group's fields, unprefixed, by group name: the groups that have started the job.
    public var groups: [String: [String: String]]

    /// Splits a status hash's fields into the job's own and each group's (`<group>.<field>`:
    /// the group name is everything before the last dot, so it may hold dots itself).
    public init(jobID: String, hash: [String: String]) {
        self.jobID = jobID
        var shared: [String: String] = [:]
        var groups: [String: [String: String]] = [:]
        for (name, value) in hash {
            if let dot = name.lastIndex(of: ".") {
                groups[String(name[..<dot]), default: [:]][String(name[name.index(after: dot)...])] = value
            } else {
                shared[name] = value
            }
        }
        self.shared = shared
        self.groups = groups
    }

    /// The job's status in `group`: its own fields over the job's; `queued` when the group has
    /// not started a job whose hash says it was published; the shared status of a hash written
    /// before data format 2.
    public func status(group: String) -> JobStatus {
        var fields = shared
        if let own = groups[group] {
            fields.merge(own) { $1 }
        } else if fields["state"] == nil, fields["queued_at"] != nil {
            fields["state"] = JobState.queued.rawValue
        } else if fields["state"] == nil, fields["deliver_at"] != nil {
            fields["state"] = JobState.scheduled.rawValue
        }
        return JobStatus(jobID: jobID, group: group, fields: fields)
    }

    /// The groups a view of the job shows: the queue's groups (`queueGroups`, in their order),
    /// then any other group that recorded a status for it (a group since deleted).
    public func groupNames(queueGroups: [String]) -> [String] {
        queueGroups + groups.keys.filter { !queueGroups.contains($0) }.sorted()
    }

    /// Reads a job's status hash, and for a job whose id is its entry ID, each group's packed
    /// succeeded status (``QueueKeys/succeededStatuses(entryID:)``), as if in the hash.
    ///
    /// - Returns: nil when there is none.
    public static func load(
        jobID: String, queue: QueueName, connection: RedisConnection
    ) async throws(FerryError) -> JobStatusRecord? {
        let keys = QueueKeys(queue: queue)
        var hash: [String: String] = [:]
        do {
            let packedKey = keys.succeededStatuses(entryID: jobID)
            var commands = [RedisCommand("HGETALL", [.string(keys.jobStatus(jobID: jobID))])]
            if packedKey != nil { commands.append(RedisCommand("XINFO", ["GROUPS", .string(keys.jobs)])) }
            let replies = try await connection.pipeline(commands)
            hash = QueueInspector.fields(replies[0]).compactMapValues(\.string)
            // Only a group with no fields of its own may have a packed success; no stream (an
            // error reply) has no groups.
            let groups =
                replies.dropFirst().first.map(ConsumerGroups.names(inGroupsReply:))?.filter {
                    hash[$0 + ".state"] == nil
                } ?? []
            if let packedKey, !groups.isEmpty {
                let packed = try await connection.send(
                    RedisCommand("HMGET", [.string(packedKey)] + groups.map { .string($0 + "." + jobID) }))
                for (group, value) in zip(groups, packed.array ?? []) {
                    guard let value = value.string, let fields = unpack(value, jobID: jobID) else { continue }
                    for (name, value) in fields.group { hash[group + "." + name] = value }
                    for (name, value) in fields.shared where hash[name] == nil { hash[name] = value }
                }
            }
        } catch {
            throw FerryError(error)
        }
        guard !hash.isEmpty else { return nil }
        return JobStatusRecord(jobID: jobID, hash: hash)
    }

    /// The fields a packed succeeded status stands for (`succeeded|<finished_at>|<started_at>|
    /// <attempts>|<processing_ms>|<consumer>|<type>`, written by `pack_succeeded` in the scripts'
    /// prelude): the group's, and the job's own. Nil for a value this version cannot read.
    static func unpack(_ value: String, jobID: String) -> (group: [String: String], shared: [String: String])? {
        let parts = value.split(separator: "|", maxSplits: 6, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 7, let state = JobState(rawValue: parts[0]) else { return nil }
        let group = [
            "state": state.rawValue, "finished_at": parts[1], "updated_at": parts[1], "started_at": parts[2],
            "attempts": parts[3], "processing_ms": parts[4], "consumer": parts[5], "progress": "100", "retryable": "0",
        ]
        return (group, ["job_id": jobID, "entry_id": jobID, "type": parts[6]])
    }
}
