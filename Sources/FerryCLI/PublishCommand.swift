import ArgumentParser
import Ferry
import FerryRedis
import Foundation

// `stat` (below) is declared through CoreFoundation's module once Yams (FerryAPI) is linked in.
#if canImport(CoreFoundation)
    import CoreFoundation
#endif

/// `ferry publish`: append jobs to a queue and print their ids, one per line.
struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish jobs to a queue and print their job ids, one per line.",
        discussion: """
            The payload comes from --data, --data-file, or standard input when it is not a terminal; \
            with none of them the payload is empty. An empty pipe on standard input (a producer that \
            failed, in producer | ferry publish) is refused unless --allow-empty. With an idempotency key already \
            published within the dedup window (24 h) nothing is added and the first job's id is printed.
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

    @Option(help: "The job's flow-control key (a user id, a tenant), which per-key limits count jobs by.")
    var key: String?

    @Option(help: "Jobs with the same ordering key run one at a time, in publish order, in each group.")
    var orderingKey: String?

    @Option(
        help:
            "How urgent the job is: high, normal (the default), low, or 0 (most urgent) to 9. Workers take more urgent jobs first."
    )
    var priority: String?

    @Option(name: .customLong("attr"), help: ArgumentHelp("An attribute name=value; repeat for more.", valueName: "name=value"))
    var attributes: [String] = []

    @Option(
        parsing: .unconditional,
        help: "Deliveries before the job is dead-lettered (the job's max_attempts; default: the worker's).")
    var maxAttempts: Int?

    @Option(
        parsing: .unconditional, help: "How long one run may take before it is cancelled and retried (timeout_ms), such as 30s.")
    var timeout: String?

    @Option(help: "A W3C traceparent (00-<trace id>-<span id>-<flags>) that links the job to the trace that published it.")
    var traceparent: String?

    @Option(help: "Deliver the job this long from now (Redis's clock), such as 10m: a delayed job.")
    var delay: String?

    @Option(help: "Deliver the job at this RFC 3339 time, such as 2026-12-01T09:00:00Z: a scheduled job.")
    var at: String?

    @Flag(help: "Publish an empty payload read from standard input instead of refusing it.")
    var allowEmpty = false

    @Option(parsing: .unconditional, help: "Publish this many copies, each with its own generated id (pipelined).")
    var count: Int = 1

    @Option(parsing: .unconditional, help: "The largest payload accepted, in bytes.")
    var maxPayloadBytes: Int = WireFormat.defaultMaxPayloadBytes

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        if data != nil && dataFile != nil { throw ValidationError("give the payload once: --data or --data-file, not both") }
        if count < 1 { throw ValidationError("--count must be at least 1 (got \(count))") }
        if let maxAttempts, maxAttempts < 1 { throw ValidationError("--max-attempts must be at least 1 (got \(maxAttempts))") }
        if let timeout, Settings.parseDuration(timeout).map({ $0 > .zero }) != true {
            throw ValidationError(Settings.invalidDuration(timeout, for: "--timeout").description)
        }
        if let traceparent, !Self.isTraceparent(traceparent) {
            throw ValidationError(
                "invalid value \"\(traceparent)\" for --traceparent: write 00-<32 hex digits>-<16 hex digits>-<2 hex digits>")
        }
        if count > 1 && (jobID != nil || idempotencyKey != nil) {
            throw ValidationError(
                "--count gives every job a generated id; it cannot be combined with --job-id or --idempotency-key")
        }
        if maxPayloadBytes < 0 { throw ValidationError("--max-payload-bytes must not be negative (got \(maxPayloadBytes))") }
        if delay != nil && at != nil { throw ValidationError("give the delivery time once: --delay or --at, not both") }
        if (delay != nil || at != nil) && count > 1 {
            throw ValidationError("--delay and --at schedule one job; --count cannot be combined with them")
        }
        if let delay, Settings.parseDuration(delay) == nil {
            throw ValidationError(Settings.invalidDuration(delay, for: "--delay").description)
        }
        if let at, (try? Date(at, strategy: .iso8601)) == nil {
            throw ValidationError(
                "invalid value \"\(at)\" for --at: write an RFC 3339 time such as 2026-12-01T09:00:00Z or 2026-12-01T10:00:00+01:00"
            )
        }
    }

    /// When the job is to be delivered, if it is scheduled.
    var due: Publisher.Due? {
        if let delay, let duration = Settings.parseDuration(delay) { return .after(duration) }
        if let at, let date = try? Date(at, strategy: .iso8601) { return .at(date) }
        return nil
    }

    /// Whether standard input is a pipe, as in `producer | ferry publish`, where empty means the
    /// producer failed; empty input redirected from /dev/null or a file is taken as meant.
    static var standardInputIsPipe: Bool {
        var status = stat()
        return fstat(STDIN_FILENO, &status) == 0 && (status.st_mode & S_IFMT) == S_IFIFO
    }

    /// A W3C trace context `traceparent`: version, trace id, parent id and flags in lower-case hex.
    static func isTraceparent(_ text: String) -> Bool {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.map(\.count) == [2, 32, 16, 2] else { return false }
        return parts.allSatisfy { $0.allSatisfy { $0.isHexDigit && !$0.isUppercase } }
            && parts[1] != String(repeating: "0", count: 32) && parts[2] != String(repeating: "0", count: 16)
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
        let jobPriority = try priority.map { text in
            guard let priority = JobPriority(text: text) else {
                throw InputError("--priority \"\(text)\" must be high, normal, low or a digit 0 (most urgent) to 9")
            }
            return priority
        }
        let job = JobMessage(
            type: type, data: try readPayload(), jobID: jobID, idempotencyKey: idempotencyKey, attributes: attributeMap,
            traceparent: traceparent, maxAttempts: maxAttempts, timeout: timeout.flatMap(Settings.parseDuration), key: key,
            orderingKey: orderingKey, priority: jobPriority)
        try job.validateForPublishing(maxPayloadBytes: maxPayloadBytes)

        var configuration = Publisher.Configuration()
        configuration.maxPayloadBytes = maxPayloadBytes
        let publisher = Publisher(
            queue: queueName, connection: try await redis.connect(clientName: "ferry-publish"), configuration: configuration)

        if let due {
            let receipt = try await publisher.schedule(job, due)
            print(receipt.jobID)
            if receipt.isDuplicate {
                FileHandle.standardError.writeBestEffort(
                    "ferry: idempotency key already published; nothing added, printed the first job id\n")
            }
            return
        }
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
        let payload = try readBounded(FileHandle.standardInput)
        if payload.isEmpty && !allowEmpty && Self.standardInputIsPipe {
            throw InputError(
                "standard input was empty: nothing was published (did the producer before the pipe fail?); give --data '' or --allow-empty to publish an empty payload"
            )
        }
        return payload
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
