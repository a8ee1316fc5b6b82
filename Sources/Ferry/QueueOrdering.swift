import FerryRedis
import Foundation

/// A queue's ordering keys that a dead-lettered job stopped (`--ordering-on-dead block`): what
/// `ferry ordering list|resume`, `ferry inspect` and `ferry_ordering_keys_blocked` show, so a
/// stopped key is never silent.
public struct QueueOrdering: QueueStore {
    /// The queue, its keys and the connection every call uses.
    public let scope: QueueScope

    /// A store of `scope.queue`; nothing is sent until a method is called.
    public init(_ scope: QueueScope) { self.scope = scope }

    /// One stopped key.
    public struct BlockedKey: Sendable, Hashable {
        /// The consumer group it is stopped in.
        public var group: String
        /// The ordering key, as given.
        public var key: String
        /// The entry ID of the dead-lettered job that stopped it (`ferry dlq show` finds it).
        public var deadEntryID: String?
        /// When it stopped.
        public var since: Date?
        /// Its jobs waiting their turn.
        public var waiting: Int
    }

    /// Every stopped key, by group and key.
    public func blocked() async throws(FerryError) -> [BlockedKey] {
        do {
            let registry = QueueInspector.fields(
                try await connection.send(RedisCommand("HGETALL", [.string(keys.orderingBlocked)])))
            let stopped: [(group: String, key: String)] = registry.compactMap { field, value in
                guard let space = field.lastIndex(of: " "), let key = value.string else { return nil }
                return (String(field[..<space]), key)
            }
            if stopped.isEmpty { return [] }
            // One round trip for every stopped key's turn and waiting count.
            let replies = try await connection.pipeline(
                stopped.flatMap { stopped -> [RedisCommand] in
                    let turn = keys.orderingTurn(group: stopped.group, key: stopped.key)
                    return [
                        RedisCommand("HMGET", [.string(turn.turn), "blocked", "blocked_at"]),
                        RedisCommand("ZCARD", [.string(turn.waiting)]),
                    ]
                })
            let found = stopped.enumerated().map { index, stopped in
                let fields = replies[index * 2].array ?? []
                return BlockedKey(
                    group: stopped.group, key: stopped.key, deadEntryID: fields.first?.string,
                    since: fields.dropFirst().first?.string.flatMap { Int64($0) }.map(Date.init(millisecondsSince1970:)),
                    waiting: Int(replies[index * 2 + 1].integer ?? 0))
            }
            return found.sorted { ($0.group, $0.key) < ($1.group, $1.key) }
        } catch {
            throw FerryError(error)
        }
    }

    /// How many keys are stopped (`HLEN`): what the queue sampler reports.
    public func blockedCount() async throws(FerryError) -> Int {
        do {
            return Int(try await connection.send(RedisCommand("HLEN", [.string(keys.orderingBlocked)])).integer ?? 0)
        } catch {
            throw FerryError(error)
        }
    }

    /// Lets a stopped key go on with its next job in `group` (`order_resume.lua`). Returns the
    /// entry ID of the dead letter that had stopped it, or nil when the key was not stopped.
    @discardableResult
    public func resume(key: String, group: String) async throws(FerryError) -> String? {
        let turn = keys.orderingTurn(group: group, key: key)
        do {
            let reply = try await connection.run(
                Self.resumeScript, keys: [.string(turn.turn), .string(turn.waiting), .string(keys.orderingBlocked)],
                arguments: [
                    .string(keys.delayed(group: group).due),
                    .string(QueueKeys.orderingBlockedField(group: group, key: key)),
                ])
            return reply.string
        } catch {
            throw FerryError(error)
        }
    }

    static let resumeScript = FerryScripts.script("order_resume", EmbeddedLuaScripts.order_resume)
}
