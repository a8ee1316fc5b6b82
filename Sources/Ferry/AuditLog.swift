import FerryRedis
import Foundation

/// Who changed what, and when: the record of every action taken through `ferry serve` (the
/// dashboard's buttons and the API's admin operations), in the stream `ferry:audit`, readable
/// with `redis-cli XREVRANGE ferry:audit + - COUNT 20`. Capped at about ``capacity`` entries,
/// so it is bounded without expiring.
public struct AuditLog: Sendable {
    /// The stream.
    public static let key = "ferry:audit"
    /// About how many entries are kept.
    public static let capacity = 100_000
    private let connection: RedisConnection

    /// Reads and writes through `connection`.
    public init(connection: RedisConnection) { self.connection = connection }

    /// One recorded action.
    public struct Entry: Sendable, Hashable {
        /// Its entry ID (its time).
        public var id: String
        /// Who: `API key NAME`, `token subject SUB`, or `anonymous`.
        public var actor: String
        /// What: `redrive`, `purge`, `cancel`, `retry`, `pause`, an API operation's id, ...
        public var action: String
        /// The queue it acted on; empty for none.
        public var queue: String
        /// What in the queue: a job id, an error class, a schedule's name; empty for the queue.
        public var target: String
        /// How it ended, in a few words (`3 redriven`, `refused: read-only`).
        public var outcome: String
        /// When (the entry ID's time).
        public var at: Date { Date(millisecondsSince1970: StreamEntry.milliseconds(ofID: id) ?? 0) }
    }

    /// Records one action.
    public func record(
        actor: String, action: String, queue: String = "", target: String = "", outcome: String
    ) async throws(FerryError) {
        do {
            try await connection.send(
                RedisCommand(
                    "XADD",
                    [
                        .string(Self.key), "MAXLEN", "~", .integer(Int64(Self.capacity)), "*", "actor", .string(actor), "action",
                        .string(action), "queue", .string(queue), "target", .string(target), "outcome", .string(outcome),
                    ]))
        } catch {
            throw FerryError(error)
        }
    }

    /// The newest actions first, at most `limit`.
    public func recent(limit: Int = 100) async throws(FerryError) -> [Entry] {
        do {
            let reply = try await connection.send(
                RedisCommand("XREVRANGE", [.string(Self.key), "+", "-", "COUNT", .integer(Int64(limit))]))
            return StreamEntry.entries(from: reply).map { entry in
                func text(_ field: String) -> String { entry.text(of: field) ?? "" }
                return Entry(
                    id: entry.id, actor: text("actor"), action: text("action"), queue: text("queue"), target: text("target"),
                    outcome: text("outcome"))
            }
        } catch {
            throw FerryError(error)
        }
    }
}
