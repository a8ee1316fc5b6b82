import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry jobs`: many jobs at once, from the index of job statuses.
struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobs", abstract: "List a consumer group's jobs by state.", subcommands: [JobsListCommand.self])
}

/// `ferry jobs list QUEUE [--group G] [--state S]... [--type T] [--limit N] [--cursor C] [--json]`.
struct JobsListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List a group's jobs, newest published first, a page at a time.",
        discussion: """
            Reads the index that workers keep with job status on (no stream scan): jobs a group has started, in \
            states running, retrying, failed, succeeded, dead, cancelled or deleted, while their status is kept \
            (an hour after success, 7 days otherwise, by default). --state queued lists, on its own, the jobs the \
            group has yet to read, from the stream (ferry inspect counts them as LAG); --state scheduled the due \
            index. A page that is not the last ends with the --cursor to pass \
            for the next one; paging on while jobs change state lists each job once.
            """)

    @Argument(help: "The queue name.")
    var queue: String

    @Option(help: "The consumer group.")
    var group = "workers"

    @Option(help: "Only jobs in this state; repeat for several (default: every state).")
    var state: [String] = []

    @Option(help: "Only jobs of this type.")
    var type: String?

    @Option(help: "Only jobs with this flow-control key (known for jobs with ids of their own).")
    var key: String?

    @Option(parsing: .unconditional, help: "Jobs per page.")
    var limit = 50

    @Option(help: "Where to go on from: the cursor the previous page printed.")
    var cursor: String?

    @Flag(help: "Print JSON: {\"jobs\": [...], \"next_cursor\": ...}, times as RFC 3339.")
    var json = false

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        if limit < 1 || limit > 1000 { throw ValidationError("--limit must be 1 to 1000 (got \(limit))") }
        for name in state where JobState(rawValue: name) == nil {
            throw ValidationError(
                "--state \(name) is not a state; use one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        for alone in [JobState.scheduled, .queued] where state.contains(alone.rawValue) && state.count > 1 {
            throw ValidationError(
                "--state \(alone.rawValue) lists \(alone == .queued ? "the stream" : "the due index") on its own; give it without other states"
            )
        }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let queueName = try QueueName(queue)
        let connection = try await redis.connect(clientName: "ferry-jobs")
        if state == [JobState.scheduled.rawValue] {
            return try await listScheduled(queueName, connection: connection)
        }
        guard try await ConsumerGroups(queue: queueName, connection: connection).names().contains(group) else {
            throw FerryError(.notFound, "queue \(queue) has no group \(group); ferry inspect \(queue) shows its groups")
        }
        let page = try await JobIndex(queue: queueName, connection: connection).list(
            group: group, states: state.compactMap(JobState.init(rawValue:)), type: type, key: key, limit: limit,
            after: try cursor.map(JobIndex.Cursor.init))
        func time(_ milliseconds: Int64?) -> String? { milliseconds.map { Date(millisecondsSince1970: $0).rfc3339 } }
        if json {
            try printJSON(
                [
                    "jobs": page.rows.map { row in
                        var object: [String: Any] = [
                            "job_id": row.jobID, "state": row.state.rawValue, "published_at": time(row.publishedAt) ?? "",
                        ]
                        object["type"] = row.type
                        object["attempts"] = row.attempts
                        object["error_class"] = row.errorClass
                        object["updated_at"] = time(row.updatedAt)
                        return object
                    },
                    "next_cursor": page.next.map { $0.description as Any } ?? NSNull(),
                ] as [String: Any])
            return
        }
        if page.rows.isEmpty && page.next == nil {
            print("no jobs in group \(group) of \(queue) match")
            return
        }
        printTable(
            [["JOB_ID", "STATE", "TYPE", "ATTEMPTS", "ERROR_CLASS", "PUBLISHED", "UPDATED"]]
                + page.rows.map { row in
                    [
                        row.jobID, row.state.rawValue, row.type ?? "-", row.attempts.map(String.init) ?? "-",
                        row.errorClass ?? "-", time(row.publishedAt) ?? "-", time(row.updatedAt) ?? "-",
                    ]
                })
        if let next = page.next { print("more: --cursor \(next)") }
    }

    /// `--state scheduled`: the due index, soonest first (jobs of every group: they are in no
    /// group yet).
    private func listScheduled(_ queue: QueueName, connection: RedisConnection) async throws {
        let page = try await ScheduledJobs(queue: queue, connection: connection).list(
            limit: limit, after: try cursor.map(JobIndex.Cursor.init))
        if json {
            try printJSON(
                [
                    "jobs": page.rows.map { row in
                        ["job_id": row.jobID, "state": "scheduled", "type": row.type as Any, "deliver_at": row.dueAt.rfc3339]
                    },
                    "next_cursor": page.next.map { $0.description as Any } ?? NSNull(),
                ] as [String: Any])
            return
        }
        if page.rows.isEmpty {
            print("no jobs scheduled on \(self.queue)")
            return
        }
        printTable(
            [["JOB_ID", "STATE", "TYPE", "DUE"]]
                + page.rows.map { [$0.jobID, "scheduled", $0.type ?? "-", $0.dueAt.rfc3339] })
        if let next = page.next { print("more: --cursor \(next)") }
    }
}
