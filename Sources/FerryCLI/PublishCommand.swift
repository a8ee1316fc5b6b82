import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry publish`: append jobs to a queue and print their ids, one per line.
struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish jobs to a queue and print their job ids, one per line.",
        discussion: """
            The payload comes from --data, --data-file, or standard input when it is not a terminal; \
            with none of them the payload is empty. With an idempotency key already published within \
            the dedup window (24 h) nothing is added and the first job's id is printed.
            """)

    @Argument(help: "The queue name: 1 to 128 of A-Z a-z 0-9 . _ -")
    var queue: String

    @Option(help: "The job type, which routes the job to a handler.")
    var type: String

    @Option(help: "The payload as text (JSON by convention).")
    var data: String?

    @Option(help: "Read the payload from this file (any bytes).", completion: .file())
    var dataFile: String?

    @Option(help: "A stable job id of your choosing; by default the stream entry ID serves.")
    var jobID: String?

    @Option(help: "Publish at most once per key within the dedup window.")
    var idempotencyKey: String?

    @Option(name: .customLong("attr"), help: ArgumentHelp("An attribute name=value; repeat for more.", valueName: "name=value"))
    var attributes: [String] = []

    @Option(help: "Publish this many copies, each with its own generated id (pipelined).")
    var count: Int = 1

    @Option(help: "The largest payload accepted, in bytes.")
    var maxPayloadBytes: Int = WireFormat.defaultMaxPayloadBytes

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        if data != nil && dataFile != nil { throw ValidationError("give the payload once: --data or --data-file, not both") }
        if count < 1 { throw ValidationError("--count must be at least 1") }
        if count > 1 && (jobID != nil || idempotencyKey != nil) {
            throw ValidationError(
                "--count gives every job a generated id; it cannot be combined with --job-id or --idempotency-key")
        }
        if maxPayloadBytes < 0 { throw ValidationError("--max-payload-bytes must not be negative") }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let queueName = try QueueName(queue)
        var attributeMap: [String: String] = [:]
        for attribute in attributes {
            guard let equals = attribute.firstIndex(of: "="), equals != attribute.startIndex else {
                throw InputError("--attr \"\(attribute)\" must be name=value")
            }
            attributeMap[String(attribute[..<equals])] = String(attribute[attribute.index(after: equals)...])
        }
        let job = JobMessage(
            type: type, data: try readPayload(), jobID: jobID, idempotencyKey: idempotencyKey, attributes: attributeMap)
        try job.validateForPublishing(maxPayloadBytes: maxPayloadBytes)

        var configuration = Publisher.Configuration()
        configuration.maxPayloadBytes = maxPayloadBytes
        let publisher = Publisher(
            queue: queueName, connection: try await redis.connect(clientName: "ferry-publish"), configuration: configuration)

        var remaining = count
        while remaining > 0 {
            let batch = min(remaining, 10_000)
            let receipts = try await publisher.publish(Array(repeating: job, count: batch))
            print(receipts.map(\.jobID).joined(separator: "\n"))
            if receipts.count == 1, receipts[0].isDuplicate {
                FileHandle.standardError.writeBestEffort(
                    "ferry: idempotency key already published; nothing added, printed the first job id\n")
            }
            remaining -= batch
        }
    }

    /// Reads the payload without ever holding more than the limit plus one byte in memory.
    private func readPayload() throws -> [UInt8] {
        if let data { return Array(data.utf8) }
        if let dataFile {
            guard let handle = FileHandle(forReadingAtPath: dataFile) else {
                throw InputError(
                    "cannot read --data-file \(dataFile): \(String(cString: strerror(errno))); check the path and permissions")
            }
            defer { try? handle.close() }
            return try readBounded(handle)
        }
        if isatty(STDIN_FILENO) != 0 { return [] }
        return try readBounded(FileHandle.standardInput)
    }

    private func readBounded(_ handle: FileHandle) throws -> [UInt8] {
        var payload: [UInt8] = []
        while payload.count <= maxPayloadBytes {
            guard let chunk = try handle.read(upToCount: min(1 << 20, maxPayloadBytes + 1 - payload.count)), !chunk.isEmpty else {
                break
            }
            payload.append(contentsOf: chunk)
        }
        return payload
    }
}
