import FerryRedis
import Foundation

/// Where a consumer group (a subscription) reads from: the start, the end, after an entry ID, or
/// from a time on, as `ferry group create` and `ferry group seek` take it (Pub/Sub's seek).
///
/// Redis reports a group's lag (`XINFO GROUPS`: entries not yet delivered to it) from a count of
/// the entries it has read, which `XGROUP CREATE` and `XGROUP SETID` work out on their own only at
/// the start or the end of the stream. A group placed in the middle (a replay from an hour ago)
/// has no lag until it has read to the end, just when an autoscaler needs it. So
/// ``xgroupArguments(stream:connection:mkstream:)`` counts the entries after the position and
/// passes `ENTRIESREAD`.
public struct GroupPosition: Sendable, Hashable, CustomStringConvertible {
    /// The ID given to `XGROUP`: the group delivers the entries after it. `0` or `$` for the
    /// start or the end.
    public let id: String
    /// The time the position was given as, if it was: people read it better than the ID.
    public let time: Date?

    /// Every entry in the stream.
    public static let start = GroupPosition(id: "0")
    /// Only entries added from now on.
    public static let end = GroupPosition(id: "$")

    private init(id: String, time: Date? = nil) {
        self.id = id
        self.time = time
    }

    /// Reads `start`, `end`, an entry ID (`1700000000000-0`) or an RFC 3339 time
    /// (`2026-11-23T09:00:00Z`: every entry added at or after it); nil for anything else.
    public init?(_ text: String) {
        switch text {
        case "start", "0": self = .start
        case "end", "now", "$": self = .end
        default:
            if text.wholeMatch(of: /[0-9]{1,20}-[0-9]{1,20}/) != nil {
                self.init(id: text)
            } else if let date = try? Date(text, strategy: .iso8601) {
                // Just before the time's millisecond: the entries added in it are delivered.
                self.init(id: "\(max(date.millisecondsSince1970 - 1, 0))-18446744073709551615", time: date)
            } else {
                return nil
            }
        }
    }

    public var description: String { id }

    /// What the group delivers from here, for people: `every entry added at or after
    /// 2026-11-23T09:00:00.000Z`, `the entries after 1700000000000-0`, `every entry`, `only new entries`.
    public var readableDescription: String {
        if let time { return "every entry added at or after \(time.rfc3339)" }
        switch id {
        case "0": return "every entry"
        case "$": return "only entries added from now on"
        default: return "the entries after \(id)"
        }
    }

    /// The arguments of `XGROUP CREATE` or `XGROUP SETID` after the group's name: the ID, then
    /// `ENTRIESREAD` when the position is mid-stream and its count is known.
    ///
    /// The count is a nicety: if it fails (an ACL user without `FCALL` or `EVALSHA`, say), the arguments
    /// leave it out and the group is placed all the same, its lag left to Redis.
    ///
    /// - Parameter mkstream: adds `MKSTREAM` (for `XGROUP CREATE`), before `ENTRIESREAD` as
    ///   Redis expects.
    public func xgroupArguments(stream: String, connection: RedisConnection, mkstream: Bool = false) async -> [RedisArgument] {
        var arguments: [RedisArgument] = [.string(id)]
        if mkstream { arguments.append("MKSTREAM") }
        if let read = (try? await entriesRead(stream: stream, connection: connection)) ?? nil {
            arguments += ["ENTRIESREAD", .integer(Int64(read))]
        }
        return arguments
    }

    /// How many entries a group placed here has read, as Redis counts them (every entry ever
    /// added up to the position, trimmed ones included); nil at the start or the end, which
    /// Redis works out itself, past the last entry (entries added later with smaller IDs would
    /// never be delivered, yet count as lag), for a stream that does not exist, and when more
    /// than `limit` entries follow the position (the group's lag then stays unknown until it
    /// reads to the end, as without Ferry).
    ///
    /// Counts, in Redis (`count_entries.lua`), `chunk` entries per call, between the position
    /// and the last entry when it started: entries added meanwhile are not read by the group
    /// either way.
    public func entriesRead(
        stream: String, connection: RedisConnection, limit: Int = 1_000_000, chunk: Int = 1_000
    ) async throws(RedisError) -> Int? {
        if self == .start || self == .end { return nil }
        let info = try await connection.pipeline([RedisCommand("XINFO", ["STREAM", .string(stream)])])[0]
        guard info.errorMessage == nil else { return nil }  // no such stream
        let fields = QueueInspector.fields(info)
        guard let added = fields["entries-added"]?.integer, let last = fields["last-generated-id"]?.string,
            let position = Self.parts(of: id), let end = Self.parts(of: last), position <= end
        else { return nil }
        var after = 0
        var from = id
        while true {
            let reply = try await connection.run(
                Self.countScript, keys: [.string(stream)],
                arguments: [.string("(" + from), .string(last), .integer(Int64(chunk))])
            let counted = reply.array ?? []
            let n = Int(counted.first?.integer ?? 0)
            after += n
            if after > limit { return nil }
            guard n == chunk, let lastCounted = counted.last?.string, !lastCounted.isEmpty else { break }
            from = lastCounted
        }
        return max(Int(added) - after, 0)
    }

    static let countScript = FerryScripts.script("count_entries", EmbeddedLuaScripts.count_entries)

    /// An entry ID's milliseconds and sequence number, in the order Redis sorts IDs.
    private static func parts(of id: String) -> (UInt64, UInt64)? {
        let halves = id.split(separator: "-", omittingEmptySubsequences: false)
        guard halves.count == 2, let milliseconds = UInt64(halves[0]), let sequence = UInt64(halves[1]) else { return nil }
        return (milliseconds, sequence)
    }
}
