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
        do {
            let reply = try await connection.send(
                RedisCommand(
                    "HSETNX",
                    [.string(keys.paused), .string(group ?? Self.allGroups), .integer(Date().millisecondsSince1970)]))
            return reply.integer == 1
        } catch {
            throw FerryError(error)
        }
    }

    /// Resumes `group`, or lifts the pause of every group when nil (a group paused on its own
    /// stays paused). Returns false when it was not paused.
    @discardableResult
    public func resume(group: String? = nil) async throws(FerryError) -> Bool {
        do {
            let reply = try await connection.send(RedisCommand("HDEL", [.string(keys.paused), .string(group ?? Self.allGroups)]))
            return reply.integer == 1
        } catch {
            throw FerryError(error)
        }
    }

    /// What is paused: `*` for every group and each group paused on its own, to when.
    public func paused() async throws(FerryError) -> [String: Date] {
        let reply: RedisReply
        do {
            reply = try await connection.send(RedisCommand("HGETALL", [.string(keys.paused)]))
        } catch {
            throw FerryError(error)
        }
        return QueueInspector.fields(reply).mapValues { Date(millisecondsSince1970: $0.integer ?? 0) }
    }

    /// Whether `group`'s workers are to start nothing: paused on its own or with every group.
    public func isPaused(group: String) async throws(FerryError) -> Bool {
        let reply: RedisReply
        do {
            reply = try await connection.send(
                RedisCommand("HMGET", [.string(keys.paused), .string(Self.allGroups), .string(group)]))
        } catch {
            throw FerryError(error)
        }
        return (reply.array ?? []).contains { $0 != .null }
    }
}
