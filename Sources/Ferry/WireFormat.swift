import Foundation

/// The names and limits of wire format version 1 (docs/wire-format.md): the public contract
/// between producers in any language and Ferry's workers.
public enum WireFormat {
    /// The format version written in the `v` field.
    public static let version = "1"
    /// The default largest accepted `data`, in bytes: 1 MiB is accepted, one byte more is not.
    public static let defaultMaxPayloadBytes = 1_048_576

    /// Field names of a job entry.
    public enum Field {
        public static let type = "type"
        public static let data = "data"
        public static let jobID = "job_id"
        public static let idempotencyKey = "idempotency_key"
        public static let publishedAt = "published_at"
        public static let traceparent = "traceparent"
        public static let maxAttempts = "max_attempts"
        public static let timeoutMilliseconds = "timeout_ms"
        public static let version = "v"
        /// Set by a redrive: only this consumer group runs the job; others acknowledge it unrun.
        public static let redriveGroup = "redrive_group"
        /// Prefix of attribute fields: `attr.customer` carries attribute `customer`.
        public static let attributePrefix = "attr."

        /// Fields that may appear at most once; a second copy makes the entry malformed.
        public static let reserved: Set<String> = [type, data, jobID, idempotencyKey, maxAttempts, timeoutMilliseconds, version]
    }
}

/// Why a stream entry is not a valid job, naming the field. Such an entry is never run; the
/// worker moves it to the dead-letter stream at once with this message as the reason.
public struct WireFormatError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The offending field (`type`, `max_attempts`, …).
    public var field: String
    /// What is wrong with it, in words a producer can act on.
    public var problem: String

    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String { "field \"\(field)\": \(problem)" }
}

extension Date {
    /// Milliseconds since the Unix epoch, rounded down: how the wire format and the status hash
    /// write times (`published_at`, `started_at`, `dead_letter.failed_at`, …).
    public var millisecondsSince1970: Int64 { Int64((timeIntervalSince1970 * 1000).rounded(.down)) }

    /// RFC 3339 in UTC with milliseconds (`2023-11-14T22:13:20.500Z`): how every view, log line,
    /// push request and webhook writes a time.
    public var rfc3339: String { Self.rfc3339Style.format(self) }

    /// Built once: times are formatted on hot paths (a log line, a push request per job).
    private static let rfc3339Style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// The time a wire-format or stream-entry-ID millisecond count stands for.
    public init(millisecondsSince1970 milliseconds: Int64) {
        self.init(timeIntervalSince1970: Double(milliseconds) / 1000)
    }
}
