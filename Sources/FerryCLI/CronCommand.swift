import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry cron`: recurring jobs, kept in Redis and run by whichever worker of the queue looks first.
struct CronCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cron", abstract: "Recurring jobs: set, list, pause, resume or delete a queue's schedules.",
        discussion: """
            Schedules live in Redis (ferry:{Q}:cron and ferry:{Q}:cron:<name>): every worker of the queue runs \
            them, none needs configuration, and a restart loses nothing. Each tick enqueues exactly one job, \
            job_id cron-<name>-<tick ms>, however many workers look.
            """,
        subcommands: [
            CronSetCommand.self, CronListCommand.self, CronPauseCommand.self, CronResumeCommand.self, CronDeleteCommand.self,
        ])
}

/// `QUEUE NAME`, the arguments of every `ferry cron` subcommand that names one schedule.
struct CronReference: ParsableArguments {
    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The schedule's name: 1 to 64 of A-Z a-z 0-9 . _ -")
    var name: String
}

/// `ferry cron set QUEUE NAME --every 5m | --cron EXPR [--tz ZONE] --type T [--data D] …`.
struct CronSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Create or replace a schedule.",
        discussion: """
            --every ticks on multiples of the interval since the Unix epoch (every 5m: :00, :05, … UTC). \
            --cron takes a standard 5-field expression (minute hour day-of-month month day-of-week; ranges, \
            lists, steps, month and day names) on the wall clock of --tz (default UTC). On daylight-saving \
            changes each matching wall-clock time runs once: in a repeated hour at its first occurrence; a time \
            the clock skips (02:30 when 02:00 becomes 03:00) one gap later (03:30). --catch-up decides what \
            happens to ticks no worker reached within a minute (downtime): skip them (default), enqueue one \
            job for them, or enqueue all (the latest 1,000). --overlap skip enqueues nothing while the last \
            tick's job is unfinished in any group. Bad input exits 2 and writes nothing.
            """)

    @OptionGroup var schedule: CronReference

    @Option(parsing: .unconditional, help: "Tick every interval: 30s, 5m, 1h, 1d (whole seconds).")
    var every: String?

    @Option(parsing: .unconditional, help: "Tick at the times of a 5-field cron expression, such as '*/5 * * * *'.")
    var cron: String?

    @Option(help: "The time zone of --cron, from the tz database (default UTC).")
    var tz: String?

    @Option(help: "The job type each tick publishes.")
    var type: String

    @Option(parsing: .unconditional, help: "The payload each tick publishes (default empty).")
    var data: String?

    @Option(help: "Ticks missed by more than a minute: skip, one or all (default skip).")
    var catchUp: String?

    @Option(help: "While the last tick's job is unfinished: allow or skip (default allow).")
    var overlap: String?

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let queue = try QueueName(schedule.queue)
        var interval: Duration?
        if let every {
            guard let parsed = Settings.parseDuration(every), parsed > .zero else {
                throw Settings.invalidDuration(every, for: "--every")
            }
            interval = parsed
        }
        let timing = try CronSchedule.timing(every: interval, cron: cron, timeZone: tz)
        let settings = Settings(environment: [:])
        let definition = CronSchedule(
            name: schedule.name, timing: timing, job: JobMessage(type: type, data: Array((data ?? "").utf8)),
            catchUp: try settings.choice(catchUp, option: "catch-up", variable: "", default: .skip),
            overlap: try settings.choice(overlap, option: "overlap", variable: "", default: .allow))
        try definition.validate()
        let schedules = CronSchedules(queue: queue, connection: try await redis.connect(clientName: "ferry-cron"))
        let replaced = try await schedules.set(definition)
        let stored = try await schedules.get(definition.name)
        print(
            "schedule \(definition.name) \(replaced ? "replaced" : "created") on \(queue): \(definition.timingDescription); next run \(stored?.nextAt?.rfc3339 ?? (stored?.paused == true ? "paused" : "never"))"
        )
    }
}

/// `ferry cron list QUEUE [--json]`.
struct CronListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List a queue's schedules: timing, next run, last run and its job, paused.")

    @Argument(help: "The queue name.")
    var queue: String

    @Flag(help: "Print JSON lines, one schedule each, times as RFC 3339.")
    var json = false

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let schedules = CronSchedules(queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-cron"))
        let entries = try await schedules.list()
        if json {
            for entry in entries {
                let object: [String: Any] = [
                    "name": entry.schedule.name, "schedule": entry.schedule.timingDescription, "type": entry.schedule.job.type,
                    "next_run": entry.nextAt?.rfc3339 ?? NSNull(), "last_run": entry.lastAt?.rfc3339 ?? NSNull(),
                    "last_job_id": entry.lastJobID ?? NSNull(), "paused": entry.paused,
                    "catch_up": entry.schedule.catchUp.rawValue, "overlap": entry.schedule.overlap.rawValue,
                    "skipped": entry.skipped,
                ]
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
            }
            return
        }
        if entries.isEmpty {
            print("no schedules on \(queue); add one with ferry cron set \(queue) NAME --every 5m --type T")
            return
        }
        let rows =
            [["NAME", "SCHEDULE", "TYPE", "NEXT RUN", "LAST RUN", "LAST JOB", "PAUSED", "CATCH-UP", "OVERLAP"]]
            + entries.map { entry in
                [
                    entry.schedule.name, entry.schedule.timingDescription, entry.schedule.job.type,
                    entry.nextAt?.rfc3339 ?? "-", entry.lastAt?.rfc3339 ?? "-", entry.lastJobID ?? "-",
                    entry.paused ? "yes" : "no",
                    entry.schedule.catchUp.rawValue, entry.schedule.overlap.rawValue,
                ]
            }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            let line = zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
            print(line.replacingOccurrences(of: #"\s+$"#, with: "", options: .regularExpression))
        }
    }
}

/// What `ferry cron pause|resume|delete` share: find the schedule, act, say what was done.
protocol CronChange: AsyncParsableCommand {
    var schedule: CronReference { get }
    var redis: RedisOptions { get }
    /// Past tense of the change, for the message.
    static var done: String { get }
    func change(_ schedules: CronSchedules) async throws -> Bool
}

extension CronChange {
    func run() async throws {
        LogOutput.text.bootstrap()
        let schedules = CronSchedules(
            queue: try QueueName(schedule.queue), connection: try await redis.connect(clientName: "ferry-cron"))
        guard try await change(schedules) else {
            throw FerryError(
                .notFound, "no schedule \"\(schedule.name)\" on \(schedule.queue); ferry cron list \(schedule.queue) shows them")
        }
        print("schedule \(schedule.name) \(Self.done)")
    }
}

/// `ferry cron pause QUEUE NAME`.
struct CronPauseCommand: CronChange {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Stop a schedule ticking until it is resumed. Exits 1 when there is none.")
    static let done = "paused"
    @OptionGroup var schedule: CronReference
    @OptionGroup var redis: RedisOptions
    func change(_ schedules: CronSchedules) async throws -> Bool { try await schedules.pause(schedule.name) }
}

/// `ferry cron resume QUEUE NAME`.
struct CronResumeCommand: CronChange {
    static let configuration = CommandConfiguration(
        commandName: "resume", abstract: "Resume a paused schedule from its next tick (ticks missed while paused are not run).")
    static let done = "resumed"
    @OptionGroup var schedule: CronReference
    @OptionGroup var redis: RedisOptions
    func change(_ schedules: CronSchedules) async throws -> Bool { try await schedules.resume(schedule.name) }
}

/// `ferry cron delete QUEUE NAME`.
struct CronDeleteCommand: CronChange {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a schedule; jobs it already enqueued stay. Exits 1 when there is none.")
    static let done = "deleted"
    @OptionGroup var schedule: CronReference
    @OptionGroup var redis: RedisOptions
    func change(_ schedules: CronSchedules) async throws -> Bool { try await schedules.delete(schedule.name) }
}
