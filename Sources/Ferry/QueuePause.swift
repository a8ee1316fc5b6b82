import FerryRedis
import Foundation

/// Whether a queue's workers start jobs: `ferry queue pause|resume`. Stored in Redis
/// (`ferry:{Q}:paused`, a hash of `*` for every group, or a group's name, to when it was paused),
/// so it holds across worker restarts and every worker sees it within a quarter second.
/// Publishing goes on while paused; running jobs finish.
public struct QueuePause: QueueStore {
    /// The queue, its keys and the connection every call uses.
    public let scope: QueueScope

    /// The field that pauses every group.
    public static let allGroups = "*"

    /// A store of `scope.queue`; nothing is sent until a method is called.
    public init(_ scope: QueueScope) { self.scope = scope }

    /// Pauses `group`, or every group when nil. Returns false when it was paused already.
    @discardableResult
    public func pause(group: String? = nil) async throws(FerryError) -> Bool {
        try await send(
            RedisCommand(
                "HSETNX", [.string(keys.paused), .string(group ?? Self.allGroups), .integer(Date().millisecondsSince1970)])
        ).integer == 1
    }

    /// Resumes `group`, or lifts the pause of every group when nil (a group paused on its own
    /// stays paused). Returns false when it was not paused.
    @discardableResult
    public func resume(group: String? = nil) async throws(FerryError) -> Bool {
        try await send(RedisCommand("HDEL", [.string(keys.paused), .string(group ?? Self.allGroups)])).integer == 1
    }

    /// What is paused: `*` for every group and each group paused on its own, to when.
    public func paused() async throws(FerryError) -> [String: Date] {
        QueueInspector.fields(try await send(RedisCommand("HGETALL", [.string(keys.paused)]))).mapValues {
            Date(millisecondsSince1970: $0.integer ?? 0)
        }
    }

    /// Whether `group`'s workers are to start nothing: paused on its own or with every group.
    public func isPaused(group: String) async throws(FerryError) -> Bool {
        let reply = try await send(RedisCommand("HMGET", [.string(keys.paused), .string(Self.allGroups), .string(group)]))
        return (reply.array ?? []).contains { $0 != .null }
    }

    /// Which workers confirmed a pause (``waitUntilConfirmed(group:timeout:liveWithin:)``), as
    /// `<group>/<consumer>`.
    public struct Confirmation: Sendable, Hashable {
        /// Workers that start nothing new from now on.
        public var confirmed: [String] = []
        /// Live workers that did not say so in time: one may still start a job.
        public var unconfirmed: [String] = []
    }

    /// Waits until every live worker of `group` (every group when nil) confirms that it starts
    /// nothing while the queue is paused, so a caller can go on knowing no new job starts
    /// (`ferry queue pause --wait`; running jobs go on). A worker confirms from the point where
    /// no job of its can start without checking the pause first (``Worker``, within a quarter
    /// second of the pause, and again every second while it lasts); earlier confirmations are
    /// cleared first, so only fresh ones count. A worker is live when it read or claimed within
    /// `liveWithin` (`XINFO CONSUMERS` idle time): a crashed worker's consumer is not waited for.
    /// Call it after ``pause(group:)``.
    public func waitUntilConfirmed(
        group: String?, timeout: Duration, liveWithin: Duration = .seconds(10)
    ) async throws(FerryError) -> Confirmation {
        var groups = [group].compactMap { $0 }
        if group == nil { groups = try await ConsumerGroups(queue: queue, connection: connection).names() }
        guard !groups.isEmpty else { return Confirmation() }
        var live: [(group: String, consumers: [String])] = []
        try await send(RedisCommand("DEL", groups.map { .string(keys.pauseSeen(group: $0)) }))
        for name in groups {
            let reply: RedisReply
            do {
                reply = try await send(RedisCommand("XINFO", ["CONSUMERS", .string(keys.jobs), .string(name)]))
            } catch  where error.redisError?.prefix == .noGroup || error.redisError?.message.contains("no such key") == true {
                // A group (or queue) no worker has read yet may be paused ahead; it has no workers to wait for.
                continue
            }
            let consumers = (reply.array ?? []).map(QueueInspector.fields).filter {
                ($0["idle"]?.integer ?? .max) < liveWithin.milliseconds
            }
            live.append((name, consumers.compactMap { $0["name"]?.string }))
        }
        let deadline = ContinuousClock.now + timeout
        while true {
            var confirmation = Confirmation()
            for (name, consumers) in live {
                let seen = QueueInspector.fields(try await send(RedisCommand("HGETALL", [.string(keys.pauseSeen(group: name))])))
                for consumer in consumers {
                    if seen[consumer] != nil {
                        confirmation.confirmed.append("\(name)/\(consumer)")
                    } else {
                        confirmation.unconfirmed.append("\(name)/\(consumer)")
                    }
                }
            }
            if confirmation.unconfirmed.isEmpty || ContinuousClock.now >= deadline { return confirmation }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}
