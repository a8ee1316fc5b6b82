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
        /// Routes the job to a handler; required.
        public static let type = "type"
        /// The payload; absent means empty.
        public static let data = "data"
        /// The producer's id for the job; the entry ID when absent.
        public static let jobID = "job_id"
        /// Publish dedup and run-once guard.
        public static let idempotencyKey = "idempotency_key"
        /// The job's flow-control key (a user id, a tenant): per-key limits count jobs by it.
        public static let key = "key"
        /// Jobs with the same ordering key run one at a time, in publish order, in each group.
        public static let orderingKey = "ordering_key"
        /// Where the payload is when it is not in `data`: `redis` (in `ferry:{Q}:payload:<sha256>`),
        /// with `data_sha256` and `data_size` (``PayloadReference``).
        public static let dataReference = "data_ref"
        /// The referenced payload's SHA-256, lower-case hex.
        public static let dataSHA256 = "data_sha256"
        /// The referenced payload's length in bytes.
        public static let dataSize = "data_size"
        /// The workflow whose step this job runs (its id), with ``step``: written by the
        /// workflow scripts, so the step's end moves its workflow.
        public static let workflow = "workflow"
        /// The workflow step this job runs.
        public static let step = "step"
        /// How urgent the job is: `high`, `normal`, `low` or 0 (most urgent) to 9. Ferry's
        /// publisher puts a job in its priority's lane (``JobPriority``).
        public static let priority = "priority"
        /// When the producer published it, in ms since the epoch: for latency metrics.
        public static let publishedAt = "published_at"
        /// W3C trace context, passed on to handlers.
        public static let traceparent = "traceparent"
        /// Overrides the worker's maximum delivery attempts.
        public static let maxAttempts = "max_attempts"
        /// Overrides the worker's job timeout, in ms.
        public static let timeoutMilliseconds = "timeout_ms"
        /// When the job is to run, in ms since the epoch (Redis's clock decides): a group that
        /// reads it earlier parks it until then, spending no attempt.
        public static let deliverAt = "deliver_at"
        /// The base of this job's retry backoff, in ms: replaces the worker's minimum backoff.
        public static let backoffMilliseconds = "backoff_ms"
        /// The format version; absent means 1.
        public static let version = "v"
        /// Set by a redrive: only this consumer group runs the job; others acknowledge it unrun.
        public static let redriveGroup = "redrive_group"
        /// Prefix of attribute fields: `attr.customer` carries attribute `customer`.
        public static let attributePrefix = "attr."

        /// Fields that may appear at most once; a second copy makes the entry malformed.
        public static let reserved: Set<String> = [
            type, data, dataReference, dataSHA256, dataSize, jobID, idempotencyKey, key, orderingKey, priority, workflow, step,
            maxAttempts, timeoutMilliseconds,
            deliverAt,
            backoffMilliseconds,
            version,
        ]
    }
}

/// Why a stream entry is not a valid job, naming the field. Such an entry is never run; the
/// worker moves it to the dead-letter stream at once with this message as the reason.
public struct WireFormatError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The offending field (`type`, `max_attempts`, …).
    public var field: String
    /// What is wrong with it, in words a producer can act on.
    public var problem: String

    /// `problem` should say what a producer must change.
    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String { "field \"\(field)\": \(problem)" }
}

extension Date {
    /// Milliseconds since the Unix epoch, rounded down: how the wire format and the status hash
    /// write times (`published_at`, `started_at`, `dead_letter.failed_at`, …). Rounded to the
    /// microsecond first, so a date made from a millisecond count gives that count back although
    /// a `Double` of seconds cannot hold it exactly (…123 ms is …122.9999997).
    public var millisecondsSince1970: Int64 {
        let microseconds = Int64((timeIntervalSince1970 * 1_000_000).rounded())
        return microseconds >= 0 ? microseconds / 1000 : (microseconds - 999) / 1000
    }

    /// RFC 3339 in UTC with milliseconds (`2023-11-14T22:13:20.500Z`): how every view, log line,
    /// push request and webhook writes a time.
    ///
    /// Written by hand: it runs per log line and per push request, where Foundation's ISO 8601
    /// style (a calendar computation each time) showed in profiles.
    public var rfc3339: String {
        let milliseconds = millisecondsSince1970
        let dayLength: Int64 = 86_400_000
        let days = milliseconds >= 0 ? milliseconds / dayLength : (milliseconds - dayLength + 1) / dayLength
        let (year, month, day) = Self.civilDate(daysSince1970: days)
        guard (0...9999).contains(year) else { return Self.rfc3339Style.format(self) }
        let ofDay = Int(milliseconds - days * dayLength)
        // Written straight into the string's storage: one allocation (a log line's time is this).
        return String(unsafeUninitializedCapacity: 24) { text in
            var at = 0
            func append(_ value: Int, digits: Int, then separator: UInt8) {
                var rest = value
                for place in stride(from: at + digits - 1, through: at, by: -1) {
                    text[place] = UInt8(ascii: "0") + UInt8(rest % 10)
                    rest /= 10
                }
                text[at + digits] = separator
                at += digits + 1
            }
            append(Int(year), digits: 4, then: UInt8(ascii: "-"))
            append(month, digits: 2, then: UInt8(ascii: "-"))
            append(day, digits: 2, then: UInt8(ascii: "T"))
            append(ofDay / 3_600_000, digits: 2, then: UInt8(ascii: ":"))
            append(ofDay / 60_000 % 60, digits: 2, then: UInt8(ascii: ":"))
            append(ofDay / 1000 % 60, digits: 2, then: UInt8(ascii: "."))
            append(ofDay % 1000, digits: 3, then: UInt8(ascii: "Z"))
            return at
        }
    }

    /// Year, month and day of the proleptic Gregorian calendar for a count of days since
    /// 1970-01-01 (Howard Hinnant's `civil_from_days`).
    static func civilDate(daysSince1970: Int64) -> (year: Int64, month: Int, day: Int) {
        let shifted = daysSince1970 + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * shiftedMonth + 2) / 5 + 1)
        let month = Int(shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9)
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// For years RFC 3339 cannot write in four digits, which no job carries.
    private static let rfc3339Style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// The time a wire-format or stream-entry-ID millisecond count stands for.
    public init(millisecondsSince1970 milliseconds: Int64) {
        self.init(timeIntervalSince1970: Double(milliseconds) / 1000)
    }
}
