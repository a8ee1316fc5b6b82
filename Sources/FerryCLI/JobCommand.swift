import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `QUEUE JOB_ID`, the arguments every `ferry job` subcommand takes.
struct JobReference: ParsableArguments {
    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The job id (the producer's job_id, or the stream entry ID).")
    var jobID: String
}

/// `ferry job`: one job's view.
struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job", abstract: "Show, cancel or retry one job.",
        subcommands: [JobStatusCommand.self, JobCancelCommand.self, JobRetryCommand.self, JobRunNowCommand.self])
}

/// `ferry job status QUEUE JOB_ID [--group G] [--json]`: the job's status in each consumer
/// group, times made readable.
struct JobStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a job's state, attempts, last error, progress and times, in each consumer group.",
        discussion: """
            Without --group: the job's own fields, then one line per consumer group (a group that has not started             the job shows queued); with one group only, that group's fields in full. --json prints one group's             fields (--group, else workers, else the first) and "groups", every group's state. A job without a             status (published by a plain XADD, or its status expired) is looked up in the stream by entry ID or             job_id and shown as queued, pending (with its owner) or acknowledged in each group. Exits 1 when             neither a status nor an entry is found.
            """)

    @OptionGroup var job: JobReference

    @Option(help: "Show only this consumer group's status, in full.")
    var group: String?

    @Flag(help: "Print JSON: counts as numbers, times as RFC 3339 strings.")
    var json = false

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let queueName = try QueueName(job.queue)
        let connection = try await redis.connect(clientName: "ferry-job")
        guard let record = try await JobStatusRecord.load(jobID: job.jobID, queue: queueName, connection: connection) else {
            // No status (a plain XADD, status off, or expired): where the stream says it is.
            guard let found = try await JobLocator(queue: queueName, connection: connection).find(job.jobID) else {
                throw FerryError(
                    .notFound,
                    "no job \"\(job.jobID)\" in queue \(job.queue): no status (never recorded, or expired) and no entry with that ID or job_id among the newest \(JobLocator.searchLimit) of the stream"
                )
            }
            try printFound(found)
            return
        }
        let streamGroups = try await ConsumerGroups(queue: queueName, connection: connection).names()
        let allGroups = record.groupNames(queueGroups: streamGroups)
        var groups = allGroups
        if let group {
            guard groups.contains(group) else {
                throw FerryError(
                    .notFound,
                    "queue \(job.queue) has no group \(group)\(groups.isEmpty ? "" : "; its groups: " + groups.joined(separator: ", "))"
                )
            }
            groups = [group]
        }
        let shown = group ?? (groups.contains("workers") ? "workers" : groups.first ?? "workers")
        if json {
            var object = Self.jsonObject(record.status(group: shown).fields)
            object["group"] = groups.isEmpty ? nil : shown
            object["groups"] = Dictionary(
                uniqueKeysWithValues: allGroups.map { ($0, record.status(group: $0).fields["state"] ?? "unknown") })
            try printJSON(object)
        } else if groups.count <= 1 {
            Self.printFields(record.status(group: shown).fields)
        } else {
            Self.printFields(record.shared.filter { Self.sharedFields.contains($0.key) })
            print("")
            printTable(
                [["GROUP", "STATE", "ATTEMPTS", "PROGRESS", "ERROR_CLASS", "UPDATED"]]
                    + groups.map { name in
                        let fields = record.status(group: name).fields
                        let value = { (field: String) in fields[field].flatMap { $0.isEmpty ? nil : $0 } ?? "-" }
                        return [
                            name, value("state"), value("attempts"), value("progress"), value("error_class"),
                            Self.time(record.groups[name]?["updated_at"] ?? "") ?? "-",
                        ]
                    })
        }
    }

    /// The job's own fields, shown above the groups.
    static let sharedFields: Set<String> = ["job_id", "type", "entry_id", "queued_at", "cancel_requested"]

    static func time(_ value: String) -> String? {
        Int64(value).map { Date(millisecondsSince1970: $0).rfc3339 }
    }

    /// Fields as JSON: counts as numbers, times as RFC 3339, `retryable` as a boolean.
    static func jsonObject(_ fields: [String: String]) -> [String: Any] {
        var object: [String: Any] = [:]
        for (field, value) in fields where !value.isEmpty {
            if JobStatus.isTime(field) {
                object[field] = time(value) ?? value
            } else if JobStatus.countFields.contains(field), let count = Int(value) {
                object[field] = count
            } else if field == "retryable" {
                object[field] = value == "1"
            } else {
                object[field] = value
            }
        }
        return object
    }

    /// One field a line, the most useful first.
    static func printFields(_ fields: [String: String]) {
        let order = [
            "job_id", "state", "attempts", "retryable", "progress", "stage", "error_class", "last_error", "next_attempt_at",
            "processing_ms", "type", "entry_id", "dead_id", "consumer", "queued_at", "started_at", "finished_at",
            "updated_at",
        ]
        let known = order.filter { fields[$0].map { !$0.isEmpty } ?? false }
        let rest = fields.keys.filter { !order.contains($0) && !(fields[$0]?.isEmpty ?? true) }.sorted()
        printTable(
            (known + rest).map { field in
                let value = fields[field] ?? ""
                return [field, JobStatus.isTime(field) ? (time(value) ?? value) : value]
            })
    }
}

extension JobStatusCommand {
    /// A job found in the stream without a status: its entry and where it is in each group.
    func printFound(_ found: JobLocator.Found) throws {
        func describe(_ position: JobLocator.Position) -> (state: String, detail: String) {
            switch position {
            case .queued: ("queued", "not delivered yet")
            case .pending(let consumer, let deliveries): ("pending", "held by \(consumer), delivered \(deliveries) time(s)")
            case .done: ("done", "acknowledged, or before where this group began reading")
            }
        }
        let groups = found.groups.sorted { $0.key < $1.key }
        if json {
            try printJSON(
                [
                    "job_id": found.entry.jobID, "entry_id": found.entry.id,
                    "type": found.entry.text(of: WireFormat.Field.type) ?? "",
                    "status_recorded": false,
                    "groups": Dictionary(uniqueKeysWithValues: groups.map { ($0.key, describe($0.value).state) }),
                ] as [String: Any])
            return
        }
        printTable(
            [
                ["job_id", found.entry.jobID], ["entry_id", found.entry.id],
                ["type", found.entry.text(of: WireFormat.Field.type) ?? "-"], ["published", found.entry.time.rfc3339],
                ["status", "none recorded (published with a plain XADD, status off, or expired); from the stream:"],
            ]
                + (groups.isEmpty
                    ? [["groups", "none yet: queued for the first worker"]]
                    : groups.map {
                        let (state, detail) = describe($0.value)
                        return ["group \($0.key)", "\(state): \(detail)"]
                    }))
    }
}

/// `ferry job cancel QUEUE JOB_ID`: a job that has not started will not run; a running one is
/// signalled (its handler sees cancellation) within a quarter of the lease.
struct JobCancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a job: one not started will not run; a running one is signalled.",
        discussion: """
            Exits 1 when the job has no status (unknown, or its status expired): nothing is recorded then, \
            unless --force, for a job still to be published or published without a status (a plain XADD).
            """)

    @OptionGroup var job: JobReference

    @Flag(help: "Record the request even for a job with no status yet.")
    var force = false

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let queueName = try QueueName(job.queue)
        let connection = try await redis.connect(clientName: "ferry-job")
        let previous = try await JobStatus.requestCancellation(
            jobID: job.jobID, queue: queueName, connection: connection, evenIfUnknown: force)
        switch previous {
        case nil where !force:
            throw FerryError(
                .notFound,
                "job \"\(job.jobID)\" of \(job.queue) is unknown: it has no status (never published with status on, or expired); nothing recorded. To cancel a job still to be published, or one published by a plain XADD, run it again with --force"
            )
        case let finished? where finished.isTerminal:
            print("job \(job.jobID) is already \(finished.rawValue); nothing to cancel")
        case .running?:
            print("job \(job.jobID) is running; its handler will be cancelled and the job acknowledged as cancelled")
        case .scheduled?:
            print("job \(job.jobID) was scheduled; it is removed from the schedule and will never run")
        default:
            print("job \(job.jobID) will not run: a worker acknowledges it as cancelled when it is delivered")
        }
    }
}

/// `ferry job retry QUEUE JOB_ID`: run a dead or cancelled job again, found by its job id.
struct JobRetryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry",
        abstract:
            "Run a dead-lettered or cancelled job again (a redrive of one job; a cancelled one for the group that cancelled it).",
        discussion: "Exits 1 when the job is neither dead nor cancelled in any group, saying where it is.")

    @OptionGroup var job: JobReference

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let retry = try await JobStatus.retry(
            jobID: job.jobID, queue: try QueueName(job.queue), connection: try await redis.connect(clientName: "ferry-job"))
        guard !retry.requeued.isEmpty else {
            guard retry.found else {
                throw FerryError(
                    .notFound,
                    "job \"\(job.jobID)\" has no status and no dead letter in \(job.queue); ferry job status \(job.queue) \(job.jobID) shows what is known"
                )
            }
            let states = retry.refused.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
            throw FerryError(
                .invalidInput, "job \"\(job.jobID)\" is neither dead nor cancelled, so there is nothing to retry (\(states))")
        }
        for requeued in retry.requeued {
            print(
                "job \(job.jobID) (\(requeued.from.rawValue)) is queued again as \(requeued.entryID) for group \(requeued.group ?? "-")"
            )
        }
    }
}

/// `ferry job run-now QUEUE JOB_ID`: a scheduled job becomes due at once.
struct JobRunNowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run-now", abstract: "Deliver a scheduled job, or a job waiting for its retry, now instead of at its time.",
        discussion:
            "A worker takes it within a quarter second; a job waiting for a retry runs as its next attempt. Exits 1 when no such job is waiting."
    )

    @OptionGroup var job: JobReference

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let scheduled = ScheduledJobs(
            queue: try QueueName(job.queue), connection: try await redis.connect(clientName: "ferry-job"))
        guard try await scheduled.runNow(jobID: job.jobID) else {
            throw FerryError(
                .notFound,
                "no job \"\(job.jobID)\" is scheduled or waiting for a retry on \(job.queue) (never scheduled, already delivered, or cancelled); ferry job status \(job.queue) \(job.jobID) shows where it is"
            )
        }
        print("job \(job.jobID) is due now: the next worker to look delivers it")
    }
}
