import FerryRedis
import Foundation

/// A queue's activity over the last hour, for the dashboard's charts: samples of its running
/// totals (jobs published, finished by its groups, dead-lettered) taken every ``interval`` by
/// `ferry serve` into the capped stream `ferry:{Q}:history`, and read back as counts per minute.
///
/// The totals come from what Redis keeps anyway (`XINFO`: a stream's `entries-added`, a group's
/// `entries-read` less its pending), so the charts cost the jobs nothing; several `ferry serve`
/// processes take turns through a lock (`SET NX`), so a queue gets one sample per interval
/// whatever their number. The stream expires two hours after its last sample.
public struct QueueHistory: QueueStore {
    /// The queue, its keys and the connection every call uses.
    public let scope: QueueScope

    /// How often a queue is sampled.
    public static let interval: Duration = .seconds(10)
    /// Samples kept: a little over an hour's.
    static let kept = 400
    static let keep: Duration = .seconds(7200)

    /// A store of `scope.queue`; nothing is sent until a method is called.
    public init(_ scope: QueueScope) { self.scope = scope }

    var key: String { keys.prefix + ":history" }

    /// One sample of the running totals.
    public struct Sample: Sendable, Hashable {
        /// When.
        public var at: Date
        /// Jobs ever added to the job stream.
        public var published: Int
        /// Jobs its groups have read and acknowledged, summed over groups.
        public var finished: Int
        /// Jobs ever added to the dead-letter stream.
        public var dead: Int
    }

    /// Takes a sample unless another process took this interval's. Returns whether it did.
    @discardableResult
    public func sample() async throws(FerryError) -> Bool {
        do {
            let lock = try await connection.send(
                RedisCommand("SET", [.string(key + ":lock"), "1", "NX", "PX", .integer(Self.interval.milliseconds - 500)]))
            guard lock.string == "OK" else { return false }
            let replies = try await connection.pipeline([
                RedisCommand("XINFO", ["STREAM", .string(keys.jobs)]),
                RedisCommand("XINFO", ["STREAM", .string(keys.deadLetter)]),
                RedisCommand("XINFO", ["GROUPS", .string(keys.jobs)]),
            ])
            func added(_ reply: RedisReply) -> Int { Int(QueueInspector.fields(reply)["entries-added"]?.integer ?? 0) }
            let finished = (replies[2].array ?? []).reduce(0) { total, group in
                let fields = QueueInspector.fields(group)
                return total + Int((fields["entries-read"]?.integer ?? 0) - (fields["pending"]?.integer ?? 0))
            }
            _ = try await connection.pipeline([
                RedisCommand(
                    "XADD",
                    [
                        .string(key), "MAXLEN", "~", .integer(Int64(Self.kept)), "*", "published",
                        .integer(Int64(added(replies[0]))),
                        "finished", .integer(Int64(max(finished, 0))), "dead", .integer(Int64(added(replies[1]))),
                    ]),
                RedisCommand("PEXPIRE", [.string(key), .integer(Self.keep.milliseconds)]),
            ])
            return true
        } catch {
            throw FerryError(error)
        }
    }

    /// The samples of the last `window`, oldest first.
    public func samples(last window: Duration = .seconds(3600)) async throws(FerryError) -> [Sample] {
        let since = Date().millisecondsSince1970 - window.milliseconds
        do {
            let reply = try await connection.send(RedisCommand("XRANGE", [.string(key), .string("\(since)"), "+"]))
            return StreamEntry.entries(from: reply).map { entry in
                func number(_ field: String) -> Int {
                    entry.value(of: field).flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
                }
                return Sample(at: entry.time, published: number("published"), finished: number("finished"), dead: number("dead"))
            }
        } catch {
            throw FerryError(error)
        }
    }

    /// Per minute of the last `minutes` (oldest first): how much `total` grew in that minute;
    /// nil for a minute with no sample on both sides (nothing known). `value` picks the total.
    public static func perMinute(_ samples: [Sample], minutes: Int = 60, now: Date = Date(), _ value: (Sample) -> Int) -> [Int?] {
        let end = now.millisecondsSince1970
        // The last known total at or before each minute's end.
        func total(before time: Int64) -> Int? { samples.last { $0.at.millisecondsSince1970 <= time }.map(value) }
        return (0..<minutes).map { index in
            let to = end - Int64(minutes - 1 - index) * 60_000
            guard let after = total(before: to), let before = total(before: to - 60_000) else { return nil }
            return max(after - before, 0)
        }
    }
}
