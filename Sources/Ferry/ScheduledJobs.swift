import FerryRedis
import Foundation

/// A queue's scheduled jobs, those published for later (``Publisher/schedule(_:_:)``) and not yet
/// due: how many, the next due time, and moving one in at once.
public struct ScheduledJobs: Sendable {
    /// The queue whose due index this reads.
    public let queue: QueueName
    private let keys: QueueKeys
    private let connection: RedisConnection

    /// Reads and writes through `connection`; nothing is sent until a method is called.
    public init(queue: QueueName, connection: RedisConnection) {
        self.queue = queue
        self.keys = QueueKeys(queue: queue)
        self.connection = connection
    }

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
    /// into the stream. Returns false when no job with that id is scheduled (never, already
    /// moved, or cancelled).
    @discardableResult
    public func runNow(jobID: String) async throws(FerryError) -> Bool {
        let member = QueueKeys.keyComponent(jobID)
        do {
            let reply = try await connection.send(
                RedisCommand("ZADD", [.string(keys.scheduled), "XX", "CH", 0, .string(member)]))
            if reply.integer == 1 { return true }
            // Unchanged: due at 0 already, or not there at all.
            return try await connection.send(RedisCommand("ZSCORE", [.string(keys.scheduled), .string(member)])) != .null
        } catch {
            throw FerryError(error)
        }
    }

    static let moveDueScript = RedisScript(name: "move_due", source: EmbeddedLuaScripts.move_due)

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
}
