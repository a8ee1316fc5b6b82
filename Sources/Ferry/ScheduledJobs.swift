import FerryRedis
import Foundation

/// A queue's scheduled jobs, those published for later (``Publisher/schedule(_:_:)``) and not yet
/// due: how many, the next due time, and moving one in at once.
public struct ScheduledJobs: QueueStore {
    /// The queue, its keys and the connection every call uses.
    public let scope: QueueScope

    /// A store of `scope.queue`; nothing is sent until a method is called.
    public init(_ scope: QueueScope) { self.scope = scope }

    /// How many jobs are scheduled, and when the next is due (nil when none is).
    public func summary() async throws(FerryError) -> (count: Int, nextDue: Date?) {
        let replies: [RedisReply]
        do {
            replies = try await connection.pipeline([
                RedisCommand("ZCARD", [.string(keys.scheduled)]),
                RedisCommand("ZRANGE", [.string(keys.scheduled), 0, 0, "WITHSCORES"]),
            ])
        } catch {
            throw FerryError(error)
        }
        if let failed = replies.lazy.compactMap(\.errorMessage).first { throw FerryError(RedisError.server(failed)) }
        let next = replies[1].array?.dropFirst().first?.string.flatMap { Double($0) }
        return (Int(replies[0].integer ?? 0), next.map { Date(millisecondsSince1970: Int64($0)) })
    }

    /// Makes a scheduled job due now: the next worker to look (within a quarter second) moves it
    /// into the stream. A job a group parked for later (waiting for a retry or a snooze, or
    /// read before its `deliver_at`) is made due in each group that parked it, and runs as its
    /// next attempt. Returns false when no job with that id is waiting (never scheduled,
    /// already delivered, or cancelled).
    @discardableResult
    public func runNow(jobID: String) async throws(FerryError) -> Bool {
        let member = QueueKeys.keyComponent(jobID)
        do {
            let reply = try await connection.send(
                RedisCommand("ZADD", [.string(keys.scheduled), "XX", "CH", 0, .string(member)]))
            if reply.integer == 1 { return true }
            // Unchanged: due at 0 already, or not there at all.
            if try await connection.send(RedisCommand("ZSCORE", [.string(keys.scheduled), .string(member)])) != .null {
                return true
            }
        } catch {
            throw FerryError(error)
        }
        guard let status = try await JobStatusRecord.load(jobID: jobID, queue: queue, connection: connection),
            let entryID = status.shared["entry_id"]
        else { return false }
        var madeDue = false
        for (group, fields) in status.groups
        where [JobState.retrying.rawValue, JobState.scheduled.rawValue].contains(fields["state"]) {
            do {
                // XX: only while it is still parked; CH: 1 when this call moved it (a worker may
                // take it the moment after, so the answer cannot wait for a second look).
                let changed = try await connection.send(
                    RedisCommand("ZADD", [.string(keys.delayed(group: group).due), "XX", "CH", 0, .string(entryID)]))
                if changed.integer == 1 {
                    madeDue = true
                } else if try await connection.send(
                    RedisCommand("ZSCORE", [.string(keys.delayed(group: group).due), .string(entryID)])) != .null
                {
                    madeDue = true  // due at 0 already
                }
            } catch {
                throw FerryError(error)
            }
        }
        return madeDue
    }

    static let moveDueScript = FerryScripts.script("move_due", EmbeddedLuaScripts.move_due)

    /// Moves up to `limit` due jobs into the stream in one script (`move_due.lua`): what every
    /// worker does every quarter second. Each job is moved once, whoever calls.
    ///
    /// - Returns: how many were moved, and whether more are due.
    public func moveDue(limit: Int = 100) async throws(FerryError) -> (moved: Int, more: Bool) {
        let reply: RedisReply
        do {
            reply = try await connection.run(
                Self.moveDueScript, keys: [.string(keys.jobs), .string(keys.scheduled)],
                arguments: [.string(keys.scheduled + ":"), .string(keys.jobStatusPrefix), .integer(Int64(limit))])
        } catch {
            throw FerryError(error)
        }
        let parts = reply.array ?? []
        return (Int(parts.first?.integer ?? 0), parts.last?.integer == 1)
    }

    /// One scheduled job in a listing.
    public struct Row: Sendable, Hashable {
        /// Its job id.
        public var jobID: String
        /// Its type.
        public var type: String?
        /// When it is due.
        public var dueAt: Date
    }

    /// A page of scheduled jobs, the soonest due first, after `cursor` (a ``JobIndex/Cursor``
    /// of a previous page: due time and job).
    public func list(
        limit: Int = 50, after cursor: JobIndex.Cursor? = nil
    ) async throws(FerryError) -> (
        rows: [Row], next: JobIndex.Cursor?
    ) {
        guard limit > 0 else { throw FerryError(.invalidInput, "the page size must be at least 1; got \(limit)") }
        do {
            // Members due at the cursor's time sort by name: those after the cursor's come first.
            var members: [(member: String, score: String)] = []
            if let cursor {
                let tied = try await connection.send(
                    RedisCommand(
                        "ZRANGE",
                        [.string(keys.scheduled), .string(cursor.score), .string(cursor.score), "BYSCORE", "WITHSCORES"]))
                members += pairs(tied).filter { $0.member > cursor.member }
            }
            let from: RedisArgument = cursor.map { .string("(" + $0.score) } ?? "-inf"
            let rest = try await connection.send(
                RedisCommand(
                    "ZRANGE",
                    [.string(keys.scheduled), from, "+inf", "BYSCORE", "LIMIT", 0, .integer(Int64(limit + 1)), "WITHSCORES"]))
            members += pairs(rest)
            let page = Array(members.prefix(limit))
            // One round trip for the page's fields, not one per job.
            let fields =
                page.isEmpty
                ? []
                : try await connection.pipeline(
                    page.map { RedisCommand("HMGET", [.string(keys.scheduled + ":" + $0.member), "job_id", "type"]) })
            let rows = zip(page, fields).map { entry, reply in
                let values = reply.array ?? []
                return Row(
                    jobID: values.first?.string ?? entry.member, type: values.dropFirst().first?.string,
                    dueAt: Date(millisecondsSince1970: Int64(Double(entry.score) ?? 0)))
            }
            let next = members.count > limit ? page.last.map { JobIndex.Cursor(score: $0.score, member: $0.member) } : nil
            return (rows, next)
        } catch {
            throw FerryError(error)
        }
    }

    private func pairs(_ reply: RedisReply) -> [(member: String, score: String)] {
        reply.pairs.compactMap { member, score in
            guard let member = member.string, let score = score.string else { return nil }
            return (member, score)
        }
    }
}
