import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry peek`: the queue's entries as the worker will see them, wire format checked.
///
/// `redis-cli XRANGE` shows raw fields; this shows each entry's job id, type, payload size and
/// attributes, and for an entry that breaks the format, the field at fault.
struct PeekCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peek",
        abstract: "Show the oldest entries of a queue as jobs, checking the wire format.")

    @Argument(help: "The queue name.")
    var queue: String

    @Option(parsing: .unconditional, help: "How many entries to show, oldest first.")
    var count: Int = 20

    @Flag(help: "Print a JSON array instead of a table.")
    var json = false

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        if count < 1 { throw ValidationError("--count must be at least 1 (got \(count))") }
    }

    /// One entry as printed; the JSON keys are snake_case like the wire format's fields.
    struct Row: Encodable {
        var entryID: String
        var jobID: String?
        var type: String?
        var dataBytes: Int?
        var dataPreview: String?
        var attributes: [String: String]?
        var malformed: String?

        enum CodingKeys: String, CodingKey {
            case entryID = "entry_id", jobID = "job_id", type, dataBytes = "data_bytes", dataPreview = "data_preview"
            case attributes, malformed
        }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let queueName = try QueueName(queue)
        let keys = QueueKeys(queue: queueName)
        let inspector = QueueInspector(connection: try await redis.connect(clientName: "ferry-peek"))
        let rows = try await inspector.peek(queueName, count: count).map { peeked -> Row in
            guard let job = peeked.job else { return Row(entryID: peeked.entryID, malformed: peeked.problem) }
            return Row(
                entryID: peeked.entryID, jobID: job.jobID, type: job.type, dataBytes: job.data.count,
                dataPreview: String(validating: job.data.prefix(60), as: UTF8.self), attributes: job.attributes)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(rows), as: UTF8.self))
            return
        }
        if rows.isEmpty {
            print("no entries in \(keys.jobs)")
            return
        }
        let table =
            [["ENTRY ID", "JOB ID", "TYPE", "BYTES", "ATTRIBUTES / PROBLEM"]]
            + rows.map { row in
                if let malformed = row.malformed { return [row.entryID, "-", "MALFORMED", "-", malformed] }
                let attributes = (row.attributes ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(
                    separator: " ")
                return [row.entryID, row.jobID ?? "-", row.type ?? "-", String(row.dataBytes ?? 0), attributes]
            }
        printTable(table)
    }
}

/// Prints rows as left-aligned columns separated by two spaces.
func printTable(_ rows: [[String]]) {
    let widths = rows.reduce(into: [Int]()) { widths, row in
        for (index, cell) in row.enumerated() {
            if index >= widths.count { widths.append(0) }
            widths[index] = max(widths[index], cell.count)
        }
    }
    for row in rows {
        let cells = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }
        print(cells.joined(separator: "  "))
    }
}
