import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry pending QUEUE [--group G] [--consumer C] [--min-idle D]`: entries delivered and not yet
/// acknowledged, with their job, owner, idle time and delivery count.
struct PendingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pending",
        abstract: "List pending entries: delivered to a worker, not yet acknowledged.",
        discussion: """
            An entry idle longer than the lease is reclaimed by a live worker (failed jobs wait for their retry \
            out of the pending list, in ferry:{Q}:delayed:<group>); one whose \
            delivery count keeps growing is crashing its workers and will be dead-lettered as worker_lost.
            """)

    @Argument(help: "The queue name.")
    var queue: String

    @Option(help: "The consumer group.")
    var group = "workers"

    @Option(help: "Only entries held by this consumer.")
    var consumer: String?

    @Option(parsing: .unconditional, help: "Only entries idle at least this long (30s, 5m).")
    var minIdle: String?

    @Option(parsing: .unconditional, help: "How many entries to show, oldest first.")
    var limit = 100

    @Flag(help: "Print a JSON array instead of a table.")
    var json = false

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        if limit < 1 { throw ValidationError("--limit must be at least 1 (got \(limit))") }
        if let minIdle, Settings.parseDuration(minIdle) == nil {
            throw ValidationError(Settings.invalidDuration(minIdle, for: "--min-idle").description)
        }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let groups = ConsumerGroups(queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-pending"))
        let pending = try await groups.pending(
            group, consumer: consumer, minimumIdle: minIdle.flatMap(Settings.parseDuration) ?? .zero, limit: limit)
        let rows: [(id: String, jobID: String, type: String, owner: String, idle: Int, deliveries: Int)] = pending.map {
            (
                $0.entryID, $0.entry?.jobID ?? "(deleted)", $0.entry?.text(of: WireFormat.Field.type) ?? "-",
                $0.consumer, $0.idleMilliseconds, $0.deliveries
            )
        }
        if json {
            try printJSON(
                rows.map {
                    [
                        "id": $0.id, "job_id": $0.jobID, "type": $0.type, "consumer": $0.owner, "idle_ms": $0.idle,
                        "delivery_count": $0.deliveries,
                    ] as [String: Any]
                })
            return
        }
        if rows.isEmpty {
            print("nothing pending in group \(group) of \(queue)")
            return
        }
        printTable(
            [["ID", "JOB ID", "TYPE", "CONSUMER", "IDLE", "DELIVERIES"]]
                + rows.map { [$0.id, $0.jobID, $0.type, $0.owner, durationText(milliseconds: $0.idle), "\($0.deliveries)"] })
    }
}
