import FerryRedis
import Foundation

/// A queue's event stream, `ferry:{Q}:events`: every change of a job's state in any group (and
/// each publish, as `queued` with no group, or `refused` when a bounded queue turned it away),
/// appended by the same script that makes the change,
/// so an event is never missing for a change that happened nor present for one that did not.
/// What the HTTP API's server-sent events and the dashboard's live updates read.
///
/// Off by default: on, every transition costs Redis one more `XADD`. `ferry queue events on`
/// creates the (empty) stream, and the scripts write to it while it exists; it is capped at about
/// ``capacity`` entries, so it is bounded without expiring. Readable with `redis-cli XRANGE`.
public struct QueueEvents: QueueStore {
    /// The queue, its keys and the connection every call uses.
    public let scope: QueueScope

    /// About how many events are kept (the scripts trim with `MAXLEN ~`).
    public static let capacity = 10_000

    /// A store of `scope.queue`; nothing is sent until a method is called.
    public init(_ scope: QueueScope) { self.scope = scope }

    /// One change of a job's state.
    public struct Event: Sendable, Hashable {
        /// Its entry ID in the event stream: the position to resume after (`Last-Event-ID`).
        public var id: String
        /// The job.
        public var jobID: String
        /// The consumer group whose state changed; nil for a publish.
        public var group: String?
        /// The state it moved to; nil for a refused publish (``refusal``), or a state this
        /// version does not know.
        public var state: JobState?
        /// The state it left; nil when it had none in the group.
        public var from: JobState?
        /// When, by the clock of the process that made the change.
        public var at: Date
        /// Why the queue refused a publish (`queue_full`, `key_quota`: it was at its maximum
        /// depth or the job's key at its quota), for a `refused` event; nil for a change of state.
        public var refusal: String?
    }

    /// Turns events on (creates the empty stream). Returns false when they were on.
    @discardableResult
    public func enable() async throws(FerryError) -> Bool {
        do {
            if try await connection.send(RedisCommand("EXISTS", [.string(keys.events)])).integer == 1 { return false }
            // A stream exists while it has an entry or had one: add a first entry and delete it.
            let first = try await connection.send(RedisCommand("XADD", [.string(keys.events), "*", "created", "1"]))
            if let id = first.string { try await connection.send(RedisCommand("XDEL", [.string(keys.events), .string(id)])) }
            return true
        } catch {
            throw FerryError(error)
        }
    }

    /// Turns events off and deletes those kept. Returns false when they were off.
    @discardableResult
    public func disable() async throws(FerryError) -> Bool {
        do {
            return try await connection.send(RedisCommand("DEL", [.string(keys.events)])).integer == 1
        } catch {
            throw FerryError(error)
        }
    }

    /// Whether events are on.
    public func isEnabled() async throws(FerryError) -> Bool {
        do {
            return try await connection.send(RedisCommand("EXISTS", [.string(keys.events)])).integer == 1
        } catch {
            throw FerryError(error)
        }
    }

    /// Events after `id` (an event's ID; `0-0` for the oldest kept), oldest first, at most `count`.
    public func read(after id: String, count: Int = 500) async throws(FerryError) -> [Event] {
        do {
            let reply = try await connection.send(
                RedisCommand("XRANGE", [.string(keys.events), .string("(" + id), "+", "COUNT", .integer(Int64(count))]))
            return StreamEntry.entries(from: reply).map(Self.event)
        } catch {
            throw FerryError(error)
        }
    }

    /// The newest event's ID and the oldest kept one's; nil for either when there are none.
    public func bounds() async throws(FerryError) -> (oldest: String?, newest: String?) {
        do {
            let replies = try await connection.pipeline([
                RedisCommand("XRANGE", [.string(keys.events), "-", "+", "COUNT", "1"]),
                RedisCommand("XREVRANGE", [.string(keys.events), "+", "-", "COUNT", "1"]),
            ])
            return (StreamEntry.entries(from: replies[0]).first?.id, StreamEntry.entries(from: replies[1]).first?.id)
        } catch {
            throw FerryError(error)
        }
    }

    static func event(_ entry: StreamEntry) -> Event {
        func text(_ field: String) -> String? { entry.text(of: field).flatMap { $0.isEmpty ? nil : $0 } }
        return Event(
            id: entry.id, jobID: text("job_id") ?? "", group: text("group"),
            state: text("state").flatMap(JobState.init(rawValue:)),
            from: text("from").flatMap(JobState.init(rawValue:)),
            at: Date(millisecondsSince1970: text("at").flatMap { Int64($0) } ?? 0),
            refusal: text("state") == "refused" ? text("reason") ?? "" : nil)
    }
}
