import FerryRedis
import Foundation

/// A job's status as its workers recorded it in `ferry:{Q}:job:<job_id>`.
///
/// Fields: `state` (a ``JobState``), `attempts`, `error_class`, `retryable` (`1` when another
/// attempt will come, `0` when none will) and `processing_ms` (how long the last attempt's
/// handler ran),
/// `last_error`, `next_attempt_at` (retry guidance), `progress` (0-100) and `stage` when the
/// handler reports them, `started_at`, `finished_at`, `updated_at` (milliseconds since the epoch),
/// `consumer`, `group`, `type`, `entry_id`. The hash expires a while after a terminal state.
public struct JobStatus: Sendable, Hashable {
    /// The job it describes.
    public var jobID: String
    /// Every field as stored, for views that show them all.
    public var fields: [String: String]

    /// Where the job is now; nil in a hash only `ferry job cancel` wrote (or one with a state
    /// this version does not know).
    public var state: JobState? { fields["state"].flatMap(JobState.init(rawValue:)) }
    /// Deliveries so far, counting the one running or last run.
    public var attempts: Int? { fields["attempts"].flatMap { Int($0) } }

    /// The fields whose values are times, in milliseconds since the epoch.
    public static func isTime(_ field: String) -> Bool { field.hasSuffix("_at") }
    /// The fields whose values are counts.
    public static let countFields: Set<String> = ["attempts", "progress", "processing_ms"]

    /// Reads a job's status.
    ///
    /// - Returns: nil when there is none: the job never ran with status recording on, or its
    ///   status expired.
    public static func load(jobID: String, queue: QueueName, connection: RedisConnection) async throws(FerryError) -> JobStatus? {
        let reply: RedisReply
        do {
            reply = try await connection.send(RedisCommand("HGETALL", [.string(QueueKeys(queue: queue).jobStatus(jobID: jobID))]))
        } catch {
            throw FerryError(error)
        }
        let flat = reply.array ?? []
        guard !flat.isEmpty else { return nil }
        var fields: [String: String] = [:]
        var index = 0
        while index + 1 < flat.count {
            fields[flat[index].string ?? ""] = flat[index + 1].string ?? ""
            index += 2
        }
        return JobStatus(jobID: jobID, fields: fields)
    }

    static let cancelScript = RedisScript(name: "cancel", source: EmbeddedLuaScripts.cancel)

    /// Asks for a job to be cancelled: one that has not started is acknowledged as `cancelled`
    /// without running; a running one has its handler cancelled (an `--exec` command's process
    /// group is killed) and is acknowledged as `cancelled`.
    ///
    /// - Parameters:
    ///   - keepFor: how long the request is kept: a job delivered after that runs.
    ///   - evenIfUnknown: records the request for a job with no status too (one still to be
    ///     published, or published by a plain `XADD`); otherwise such a job is left alone.
    /// - Returns: the job's state before the request, nil when none was recorded; a job already
    ///   in a terminal state is left as it is.
    public static func requestCancellation(
        jobID: String, queue: QueueName, connection: RedisConnection, keepFor: Duration = .seconds(7 * 24 * 3600),
        evenIfUnknown: Bool = false
    ) async throws(FerryError) -> JobState? {
        let keys = QueueKeys(queue: queue)
        do {
            let reply = try await connection.run(
                cancelScript, keys: [.string(keys.jobStatus(jobID: jobID)), .string(keys.cancelRequests)],
                arguments: [
                    .integer(Date().millisecondsSince1970), .integer(keepFor.milliseconds),
                    .string(jobID), evenIfUnknown ? "1" : "0",
                ])
            return reply.string.flatMap(JobState.init(rawValue:))
        } catch {
            throw FerryError(error)
        }
    }
}
