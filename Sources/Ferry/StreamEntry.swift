import FerryRedis
import Foundation

/// One stream entry as Redis returned it: its ID and its fields in order, duplicates included.
///
/// Kept raw so that checking the wire format (``JobMessage/init(decoding:maxPayloadBytes:)``)
/// sees exactly what the producer wrote, and a dead-lettered entry keeps every byte.
public struct StreamEntry: Sendable, Hashable {
    /// The stream entry ID (`1700000000000-0`).
    public var id: String
    /// Its fields in the order the producer wrote them.
    public var fields: [JobField]

    /// An entry as read, or as a test builds it.
    public init(id: String, fields: [JobField]) {
        self.id = id
        self.fields = fields
    }

    /// Parses one `[id, [field, value, ...]]` element of an `XRANGE` or `XREADGROUP` reply.
    /// Returns nil for an entry whose fields are nil (XAUTOCLAIM and XREADGROUP report an entry
    /// deleted while pending that way).
    public init?(reply: RedisReply) {
        guard case .array(let parts) = reply, parts.count == 2, let id = parts[0].string,
            case .array(let flat) = parts[1]
        else { return nil }
        var fields: [JobField] = []
        fields.reserveCapacity(flat.count / 2)
        var index = 0
        while index + 1 < flat.count {
            fields.append(JobField(name: flat[index].bytes ?? [], value: flat[index + 1].bytes ?? []))
            index += 2
        }
        self.init(id: id, fields: fields)
    }

    /// The first value of a field, as bytes.
    public func value(of name: String) -> [UInt8]? {
        let name = Array(name.utf8)
        return fields.first { $0.name == name }?.value
    }

    /// The job id read from the raw `job_id` field as the decoder reads it, else the entry ID:
    /// known before (and even without) decoding, for cancellation checks and bookkeeping.
    public var jobID: String {
        value(of: WireFormat.Field.jobID).flatMap { String(validating: $0, as: UTF8.self) }.flatMap { $0.isEmpty ? nil : $0 }
            ?? id
    }

    /// The first value of a field as text, when it is valid UTF-8.
    public func text(of name: String) -> String? {
        value(of: name).flatMap { String(validating: $0, as: UTF8.self) }
    }

    /// When Redis added the entry: the milliseconds its ID starts with.
    public var time: Date { Date(millisecondsSince1970: Self.milliseconds(ofID: id) ?? 0) }

    /// The milliseconds since the epoch an entry ID (`1700000000000-0`) starts with: when Redis
    /// added it. Nil for text that is not an entry ID.
    public static func milliseconds(ofID id: String) -> Int64? {
        Int64(id.prefix { $0 != "-" })
    }

    /// Whether entry ID `id` sorts at or before `other` (both `<ms>-<seq>`), as Redis orders them.
    public static func isID(_ id: String, atOrBefore other: String) -> Bool {
        order(of: id) <= order(of: other)
    }

    /// An entry ID `<ms>-<seq>` as a pair that compares as Redis orders the IDs (0 for a part
    /// that is not a number). Read from the UTF-8 bytes: the worker compares a flush's IDs to
    /// find their range, and splitting strings showed in its profile.
    public static func order(of id: String) -> EntryOrder {
        var parts: (UInt64, UInt64) = (0, 0)
        var second = false
        for byte in id.utf8 {
            if byte == UInt8(ascii: "-") && !second {
                second = true
            } else if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                let digit = UInt64(byte - UInt8(ascii: "0"))
                if second {
                    parts.1 = parts.1 &* 10 &+ digit
                } else {
                    parts.0 = parts.0 &* 10 &+ digit
                }
            } else {
                return EntryOrder(milliseconds: 0, sequence: 0)
            }
        }
        return EntryOrder(milliseconds: parts.0, sequence: parts.1)
    }

    /// Decodes the entry as a job; the job id falls back to the entry ID.
    public func decodedJob(maxPayloadBytes: Int = WireFormat.defaultMaxPayloadBytes) throws(WireFormatError) -> JobMessage {
        var job = try JobMessage(decoding: fields, maxPayloadBytes: maxPayloadBytes)
        if job.jobID == nil { job.jobID = id }
        return job
    }
}

extension StreamEntry {
    /// Parses an `XRANGE` / `XREVRANGE` reply.
    public static func entries(from reply: RedisReply) -> [StreamEntry] {
        (reply.array ?? []).compactMap(StreamEntry.init(reply:))
    }
}

/// Where an entry ID sorts in its stream: by milliseconds, then by sequence.
public struct EntryOrder: Comparable, Sendable {
    /// The ID's first part: the entry's time in milliseconds since the epoch.
    public let milliseconds: UInt64
    /// The ID's second part: its place among the entries of the same millisecond.
    public let sequence: UInt64

    /// Redis's order: by time, then by sequence.
    public static func < (left: Self, right: Self) -> Bool {
        (left.milliseconds, left.sequence) < (right.milliseconds, right.sequence)
    }
}
