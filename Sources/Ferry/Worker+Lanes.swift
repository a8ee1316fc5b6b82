import FerryRedis
import Foundation
import Logging
import Synchronization

// Priority lanes: a queue's jobs of a priority other than normal live in a stream of their own
// (docs/design.md, "Priorities"). The scripts that act on one delivered entry find its lane
// themselves (entry IDs are unique across lanes); the worker reads, reclaims and tends each lane.

extension Worker {
    static let readLanesScript = FerryScripts.script("read_lanes", EmbeddedLuaScripts.read_lanes)

    /// The queue's lanes as this worker last read them (``refreshLanes(_:)``): the normal lane's
    /// stream first, then the others most urgent first.
    var laneStreams: [String] {
        let streams = state.withLock { $0.laneStreams }
        return streams.isEmpty ? [keys.jobs] : streams
    }

    /// Reads which priority lanes the queue has (`ferry:{Q}:jobs:lanes`, every second, with the
    /// limits) and makes this group on each new one, at its start: a lane's jobs are the group's
    /// whenever they were published. A failure is logged and tried again next time.
    func refreshLanes(_ control: ControlChannel) async {
        do {
            let streams = keys.laneStreams(inLanes: try await control.send(RedisCommand("SMEMBERS", [.string(keys.lanes)])))
            let known = Set(state.withLock { $0.laneStreams })
            for lane in streams.dropFirst() where !known.contains(lane) {
                try await ensureGroup(control, on: lane)
                logger.info("priority_lane_found", metadata: ["ferry.stream": "\(lane)"])
            }
            state.withLock { $0.laneStreams = streams }
        } catch {
            logger.info("could not read the queue's priority lanes", metadata: redisFailure(error))
        }
    }

    /// The lanes in the order this read takes them: most urgent first (strict), or in a random
    /// order weighted by each priority's ``JobPriority/weight`` (weighted).
    func readOrder(_ streams: [String]) -> [String] {
        guard configuration.priorityMode == .weighted, streams.count > 1 else {
            return streams.sorted { priority(ofLane: $0) < priority(ofLane: $1) }
        }
        var remaining = streams.map { ($0, priority(ofLane: $0).weight) }
        var order: [String] = []
        while !remaining.isEmpty {
            var pick = Int.random(in: 0..<remaining.reduce(0) { $0 + $1.1 })
            let index = remaining.firstIndex { lane in
                pick -= lane.1
                return pick < 0
            }!
            order.append(remaining.remove(at: index).0)
        }
        return order
    }

    /// The priority of a lane's stream (``QueueKeys/lane(_:)``).
    func priority(ofLane stream: String) -> JobPriority {
        guard stream != keys.jobs, let level = stream.last?.wholeNumberValue, let priority = try? JobPriority(level: level)
        else { return .normal }
        return priority
    }

    /// The `read_lanes.lua` call that reads up to `count` new entries from the lanes in `order`
    /// (``readOrder(_:)``), without blocking.
    func readLanesCommand(_ order: [String], count: Int) -> RedisCommand {
        let levels = configuration.priorityMode == .weighted ? order.map { "\(priority(ofLane: $0).level)" } : []
        return Self.readLanesScript.command(
            keys: [.string(keys.jobs), .string(keys.cancelRequests), .string(keys.lanes)],
            arguments: [
                .string(configuration.group), .string(configuration.consumer), .integer(Int64(count)),
                .string(levels.joined(separator: ",")),
            ])
    }

    /// What a `read_lanes.lua` reply says.
    func lanesRead(_ reply: RedisReply) throws(RedisError) -> Read {
        if let failed = reply.errorMessage { throw RedisError.server(failed, command: "FCALL", endpoint: redis.redactedURL) }
        let parts = reply.array ?? []
        let taken = (parts.first?.array ?? []).flatMap { lane in StreamEntry.entries(from: lane.array?.last ?? .null) }
        return Read(
            entries: taken, cancelRequestsExist: parts.dropFirst().first != .integer(0), lanes: Int(parts.last?.integer ?? 0))
    }

    /// Reads up to `count` new entries from the lanes (`read_lanes.lua`, without blocking, in
    /// ``readOrder(_:)``; the script reads a lane this worker does not know yet too); when none
    /// has any, blocks on all of them at once. A blocked read that
    /// returns more than `count` (entries reached several lanes at once) keeps the `count` most
    /// urgent and hands the rest back to the group, due at once.
    func readLanes(
        _ reader: RedisConnection, _ streams: [String], count: Int, block: Duration, control: ControlChannel
    ) async throws(RedisError) -> Read {
        let order = readOrder(streams)
        let quick = try lanesRead(try await reader.send(readLanesCommand(order, count: count)))
        if !quick.entries.isEmpty { return quick }

        let read = RedisCommand(
            "XREADGROUP",
            [
                "GROUP", .string(configuration.group), .string(configuration.consumer), "COUNT", .integer(Int64(count)),
                "BLOCK", .integer(block.milliseconds), "STREAMS",
            ] + order.map { .string($0) } + order.map { _ in ">" })
        let replies = try await reader.pipeline(
            [read, RedisCommand("EXISTS", [.string(keys.cancelRequests)]), RedisCommand("SCARD", [.string(keys.lanes)])],
            timeout: block + redis.commandTimeout)
        if case .error(let message) = replies[0] {
            throw RedisError.server(message, command: read.name, endpoint: redis.redactedURL)
        }
        // [[stream, [[id, [field, value, ...]], ...]], ...], or nil when BLOCK timed out.
        let byLane = (replies[0].array ?? []).compactMap { lane -> (JobPriority, [StreamEntry])? in
            guard let parts = lane.array, parts.count == 2, let stream = parts[0].string else { return nil }
            return (priority(ofLane: stream), StreamEntry.entries(from: parts[1]))
        }
        let entries = byLane.sorted { $0.0 < $1.0 }.flatMap(\.1)
        if entries.count > count { await putBack(Array(entries.dropFirst(count)), control: control) }
        return Read(
            entries: Array(entries.prefix(count)), cancelRequestsExist: replies[1] != .integer(0),
            lanes: Int(replies[2].integer ?? 0))
    }
}
