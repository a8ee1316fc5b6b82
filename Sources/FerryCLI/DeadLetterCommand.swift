import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry dlq`: inspect, redrive and purge a queue's dead-letter stream.
struct DeadLetterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "Inspect, redrive and purge dead-lettered jobs.",
        subcommands: [DeadLetterList.self, DeadLetterShow.self, DeadLetterRedrive.self, DeadLetterPurge.self])
}

/// Entry IDs or `--all`, with an optional type filter and a dry run: what redrive and purge select.
struct DeadLetterSelection: ParsableArguments {
    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "Dead-letter entry IDs (as `ferry dlq list` shows them).")
    var ids: [String] = []

    @Flag(help: "Every dead-lettered job of the queue.")
    var all = false

    @Option(help: "Only jobs of this type.")
    var type: String?

    @Flag(help: "Print what would be done, change nothing.")
    var dryRun = false

    /// The selected letters, and the named IDs that do not exist.
    func select(
        _ deadLetters: DeadLetters, before: Date? = nil
    ) async throws -> (letters: [DeadLetters.Letter], missing: [String]) {
        var selection = DeadLetters.Selection()
        selection.ids = ids
        selection.type = type
        selection.before = before
        let (letters, missing, _) = try await deadLetters.select(selection)
        return (letters, missing)
    }

    func validateSelection(allowsOlderThan olderThan: Bool = false) throws {
        let ways = (ids.isEmpty ? 0 : 1) + (all ? 1 : 0) + (olderThan ? 1 : 0)
        if ways == 0 { throw ValidationError("name the entries: give IDs, or --all\(olderThan ? ", or --older-than D" : "")") }
        if ways > 1 { throw ValidationError("give one of: IDs, --all\(olderThan ? ", --older-than" : "")") }
    }
}

/// Reports IDs that were named but are not in the dead-letter stream; exit 1 if there were any.
private func reportMissing(_ missing: [String], queue: String) throws {
    if missing.isEmpty { return }
    throw FerryError(
        .notFound, "no dead-letter entry \(missing.joined(separator: ", ")) in queue \(queue); see ferry dlq list \(queue)")
}

/// `ferry dlq list QUEUE [--limit N] [--json]`
struct DeadLetterList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List dead-lettered jobs, oldest first.")

    @Argument(help: "The queue name.")
    var queue: String

    @Option(parsing: .unconditional, help: "How many to show.")
    var limit = 50

    @Flag(help: "Print a JSON array instead of a table.")
    var json = false

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        if limit < 1 { throw ValidationError("--limit must be at least 1 (got \(limit))") }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let queueName = try QueueName(queue)
        let connection = try await redis.connect(clientName: "ferry-dlq")
        try await QueueInspector(connection: connection).requireQueue(queueName)
        let deadLetters = DeadLetters(queue: queueName, connection: connection)
        let letters = try await deadLetters.list(limit: limit)
        if json {
            let rows: [[String: Any]] = letters.map { letter in
                var row: [String: Any] = ["id": letter.id, "job_id": letter.jobID]
                row["type"] = letter.type
                row["source_group"] = letter.sourceGroup
                row["delivery_count"] = letter.deliveryCount
                row["error_class"] = letter.errorClass
                row["error"] = letter.error
                row["failed_at"] = letter.failedAt.map(\.rfc3339)
                return row
            }
            try printJSON(rows)
            return
        }
        let total = try await deadLetters.count()
        printTable(
            [["ID", "JOB ID", "TYPE", "GROUP", "DELIVERIES", "FAILED AT", "ERROR CLASS", "ERROR"]]
                + letters.map { letter in
                    [
                        letter.id, letter.jobID, letter.type ?? "-", letter.sourceGroup ?? "-",
                        letter.deliveryCount.map(String.init) ?? "-", letter.failedAt.map(\.rfc3339) ?? "-",
                        letter.errorClass ?? "-",
                        oneLine(letter.error ?? "", limit: 60),
                    ]
                })
        if total > letters.count { print("(\(letters.count) of \(total); --limit to see more)") }
    }
}

/// `ferry dlq show QUEUE ID`
struct DeadLetterShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show every field of one dead-lettered job.")

    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The dead-letter entry ID.")
    var id: String

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let deadLetters = DeadLetters(queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-dlq"))
        guard let letter = try await deadLetters.letter(id: id) else { return try reportMissing([id], queue: queue) }
        printTable(
            [["id", letter.id]]
                + letter.entry.fields.map { field in
                    let name = String(decoding: field.name, as: UTF8.self)
                    let value = String(validating: field.value, as: UTF8.self) ?? "<\(field.value.count) bytes, not UTF-8>"
                    if name == "dead_letter.failed_at", let date = letter.failedAt { return [name, date.rfc3339] }
                    return [name, value]
                })
    }
}

/// `ferry dlq redrive QUEUE [ID… | --all] [--type T] [--dry-run]`
struct DeadLetterRedrive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redrive", abstract: "Put dead-lettered jobs back on their queue for the group that gave up on them.",
        discussion: """
            Each job goes back with its original fields, its job id and a fresh delivery count, and leaves the \
            dead-letter stream in the same atomic step: a redrive run twice, or killed half-way, never duplicates \
            or loses a job. Fix the cause first, or the job comes back here.
            """)

    @OptionGroup var selection: DeadLetterSelection
    @OptionGroup var redis: RedisOptions

    func validate() throws { try selection.validateSelection() }

    func run() async throws {
        LogOutput.text.bootstrap()
        let deadLetters = DeadLetters(
            queue: try QueueName(selection.queue), connection: try await redis.connect(clientName: "ferry-dlq"))
        let (letters, missing) = try await selection.select(deadLetters)
        var redriven = 0
        for letter in letters {
            if selection.dryRun {
                print("would redrive \(letter.id) (job \(letter.jobID), \(letter.type ?? "no type"))")
            } else if let newID = try await deadLetters.redrive(letter) {
                print("redrove \(letter.id) as \(newID) (job \(letter.jobID))")
                redriven += 1
            } else {
                print("\(letter.id) was already redriven or purged")
            }
        }
        print(selection.dryRun ? "\(letters.count) jobs would be redriven" : "\(redriven) jobs redriven")
        try reportMissing(missing, queue: selection.queue)
    }
}

/// `ferry dlq purge QUEUE [ID… | --all | --older-than D] [--type T] [--dry-run]`
struct DeadLetterPurge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "purge", abstract: "Delete dead-lettered jobs for good.")

    @OptionGroup var selection: DeadLetterSelection

    @Option(parsing: .unconditional, help: "Only jobs dead-lettered longer ago than this (30s, 5m, 24h, 7d).")
    var olderThan: String?

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        try selection.validateSelection(allowsOlderThan: olderThan != nil)
        if let olderThan, Settings.parseDuration(olderThan) == nil {
            throw ValidationError(Settings.invalidDuration(olderThan, for: "--older-than").description)
        }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let deadLetters = DeadLetters(
            queue: try QueueName(selection.queue), connection: try await redis.connect(clientName: "ferry-dlq"))
        let cutoff = olderThan.flatMap(Settings.parseDuration).map {
            Date(millisecondsSince1970: Date().millisecondsSince1970 - $0.milliseconds)
        }
        if let cutoff, !selection.dryRun && selection.type == nil {
            // One XTRIM MINID: entry IDs are the times jobs were dead-lettered.
            print("\(try await deadLetters.purge(before: cutoff)) jobs purged")
            return
        }
        let (letters, missing) = try await selection.select(deadLetters, before: cutoff)
        if selection.dryRun {
            letters.forEach { print("would purge \($0.id) (job \($0.jobID))") }
            print("\(letters.count) jobs would be purged")
        } else {
            print("\(try await deadLetters.purge(ids: letters.map(\.id))) jobs purged")
        }
        try reportMissing(missing, queue: selection.queue)
    }
}

/// Text for one table cell: newlines flattened, long text cut with an ellipsis.
func oneLine(_ text: String, limit: Int) -> String {
    let flat = text.replacingOccurrences(of: "\n", with: " ")
    return flat.count > limit ? String(flat.prefix(limit - 1)) + "…" : flat
}

/// Prints a JSON value, keys sorted, as scripts read it.
func printJSON(_ value: Any) throws {
    let data = try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
    print(String(decoding: data, as: UTF8.self))
}
