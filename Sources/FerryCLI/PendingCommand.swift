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
            An entry idle longer than the lease plus its backoff is reclaimed by a live worker; one whose \
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
        let keys = QueueKeys(queue: try QueueName(queue))
        let connection = try await redis.connect(clientName: "ferry-pending")
        let idle = minIdle.flatMap(Settings.parseDuration)?.milliseconds ?? 0
        var arguments: [RedisArgument] = [
            .string(keys.jobs), .string(group), "IDLE", .integer(idle), "-", "+", .integer(Int64(limit)),
        ]
        if let consumer { arguments.append(.string(consumer)) }
        let reply = try await connection.send(
            RedisCommand("XPENDING", arguments), translating: .noGroup,
            into: FerryError(.notFound, "queue \(queue) has no group \(group); ferry inspect \(queue) lists its groups"))
        let items = (reply.array ?? []).compactMap(\.array).filter { $0.count >= 4 }
        let entries = try await connection.pipeline(
            items.map {
                RedisCommand("XRANGE", [.string(keys.jobs), .string($0[0].string ?? "0"), .string($0[0].string ?? "0")])
            })
        let rows: [(id: String, jobID: String, type: String, owner: String, idle: Int, deliveries: Int)] = zip(items, entries).map
        {
            item, entryReply in
            let entry = StreamEntry.entries(from: entryReply).first
            return (
                item[0].string ?? "", entry?.jobID ?? "(deleted)",
                entry?.value(of: WireFormat.Field.type).map { String(decoding: $0, as: UTF8.self) } ?? "-",
                item[1].string ?? "", Int(item[2].integer ?? 0), Int(item[3].integer ?? 0)
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
