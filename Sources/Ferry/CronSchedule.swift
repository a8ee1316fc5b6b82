import FerryRedis
import Foundation

/// A recurring job of a queue: what `ferry cron set` stores in Redis and every worker of the
/// queue runs, one job per tick however many workers there are.
public struct CronSchedule: Sendable, Hashable {
    /// When the ticks come.
    public enum Timing: Sendable, Hashable {
        /// Every interval, aligned on the Unix epoch (`--every 5m` ticks at :00, :05, …, UTC).
        case every(Duration)
        /// The times a cron expression names on a time zone's wall clock.
        case cron(CronExpression, timeZone: TimeZone)
    }

    /// Reads a timing as `ferry cron set` and the HTTP API take it: an interval, or a cron
    /// expression read on a time zone's wall clock (UTC when none is named).
    ///
    /// - Throws: ``FerryError`` `invalidInput` naming what to change.
    public static func timing(every: Duration?, cron: String?, timeZone: String?) throws(FerryError) -> Timing {
        switch (every, cron) {
        case (let interval?, nil):
            if timeZone != nil {
                throw FerryError(
                    .invalidInput,
                    "a time zone applies to a cron expression; an interval ticks on the Unix epoch, in no time zone")
            }
            return .every(interval)
        case (nil, let expression?):
            let parsed: CronExpression
            do {
                parsed = try CronExpression(expression)
            } catch {
                throw FerryError(.invalidInput, "invalid cron expression: \(error.description)")
            }
            let zoneName = timeZone ?? "UTC"
            guard let zone = TimeZone(identifier: zoneName) else {
                throw FerryError(
                    .invalidInput,
                    "unknown time zone \"\(zoneName)\": give a tz database name such as Europe/Paris, America/New_York or UTC")
            }
            return .cron(parsed, timeZone: zone)
        default:
            throw FerryError(.invalidInput, "give the schedule once: an interval (every) or a cron expression (cron)")
        }
    }

    /// What happens to ticks no worker got to in time (downtime, a stopped fleet).
    public enum CatchUp: String, Sendable, Hashable, CaseIterable {
        /// Ticks more than ``CronSchedule/missedAfter`` old are skipped (the default).
        case skip
        /// They fold into one job, for the latest of them.
        case one
        /// Each gets its job, the latest 1,000 at most.
        case all
    }

    /// Whether a tick is enqueued while the previous tick's job is unfinished.
    public enum Overlap: String, Sendable, Hashable, CaseIterable {
        /// Always (the default).
        case allow
        /// Not while the last tick's job is unread, running, or waiting for a retry in any group.
        case skip
    }

    /// `[A-Za-z0-9._-]{1,64}`: it appears in keys and job ids as it is.
    public var name: String
    /// When it ticks.
    public var timing: Timing
    /// The job each tick publishes; its `job_id` is ``jobID(tick:)``.
    public var job: JobMessage
    /// What happens to missed ticks.
    public var catchUp: CatchUp
    /// Whether ticks overlap a running job.
    public var overlap: Overlap

    /// A tick no worker got to within this is missed (``CatchUp``): far longer than any worker
    /// takes to look (every 250 ms), short enough that downtime is not replayed by default.
    public static let missedAfter: Duration = .seconds(60)
    /// The most ticks one catch-up enqueues (``CatchUp/all``).
    public static let catchUpLimit = 1000

    /// A schedule; ``validate()`` says whether it may be stored.
    public init(name: String, timing: Timing, job: JobMessage, catchUp: CatchUp = .skip, overlap: Overlap = .allow) {
        self.name = name
        self.timing = timing
        self.job = job
        self.catchUp = catchUp
        self.overlap = overlap
    }

    /// Refuses what cannot be stored, naming what to change.
    public func validate() throws(FerryError) {
        func invalid(_ message: String) -> FerryError { FerryError(.invalidInput, message) }
        guard !name.isEmpty, name.utf8.count <= 64, name.utf8.allSatisfy(QueueName.isAllowed) else {
            throw invalid("the schedule name \"\(name.debugEscaped)\" must be 1 to 64 of A-Z a-z 0-9 . _ -")
        }
        if case .every(let interval) = timing, interval < .seconds(1) || interval.milliseconds % 1000 != 0 {
            throw invalid("--every must be a whole number of seconds, at least 1s (got \(interval.milliseconds) ms)")
        }
        try job.validateForPublishing(maxPayloadBytes: WireFormat.defaultMaxPayloadBytes)
        if job.jobID != nil { throw invalid("a schedule's jobs are named by their tick; give the job no id") }
    }

    /// `cron-<name>-<tick ms>`: one id per tick, the same whichever worker enqueues it.
    public func jobID(tick: Date) -> String { "cron-\(name)-\(tick.millisecondsSince1970)" }

    /// The first tick after `date`; nil when the expression names no time in the next 8 years.
    public func tick(after date: Date) -> Date? {
        switch timing {
        case .every(let interval):
            let step = interval.milliseconds
            let after = date.millisecondsSince1970
            return Date(millisecondsSince1970: (after / step + 1) * step)
        case .cron(let expression, let timeZone):
            return expression.next(after: date, in: timeZone)
        }
    }

    /// The ticks to enqueue at `now` for a schedule due since `due`, by its catch-up rule, and the
    /// next tick after `now`.
    public func ticks(due: Date, now: Date) -> (enqueue: [Date], next: Date?) {
        let missedBefore = now.addingTimeInterval(-Double(Self.missedAfter.milliseconds) / 1000)
        var missed: [Date] = []
        var missedCount = 0
        var recent: [Date] = []
        var tick: Date? = due
        // Far behind: jump to the last stretch instead of walking years of ticks.
        if case .every(let interval) = timing {
            let step = interval.milliseconds
            let behind = (missedBefore.millisecondsSince1970 - due.millisecondsSince1970) / step
            if behind > Int64(Self.catchUpLimit) {
                missedCount = Int(behind) - Self.catchUpLimit
                tick = Date(millisecondsSince1970: due.millisecondsSince1970 + Int64(missedCount) * step)
            }
        }
        var steps = 0
        while let current = tick, current <= now, steps < 1_000_000 {
            if current <= missedBefore {
                missed.append(current)
                missedCount += 1
                if missed.count > Self.catchUpLimit { missed.removeFirst(missed.count - Self.catchUpLimit) }
            } else {
                recent.append(current)
            }
            tick = self.tick(after: current)
            steps += 1
        }
        let next = tick.flatMap { $0 > now ? $0 : self.tick(after: now) }
        switch catchUp {
        case .skip: return (recent, next)
        case .one: return ((missed.last.map { [$0] } ?? []) + recent, next)
        case .all: return (missed + recent, next)
        }
    }

    /// `every 5m` or `*/5 * * * * Europe/Paris`, as `ferry cron list` shows it.
    public var timingDescription: String {
        switch timing {
        case .every(let interval): "every \(Self.durationText(interval))"
        case .cron(let expression, let timeZone): "\(expression) \(timeZone.identifier)"
        }
    }

    static func durationText(_ duration: Duration) -> String {
        let seconds = duration.milliseconds / 1000
        for (unit, size) in [("d", Int64(86400)), ("h", 3600), ("m", 60)] where seconds % size == 0 {
            return "\(seconds / size)\(unit)"
        }
        return "\(seconds)s"
    }
}
