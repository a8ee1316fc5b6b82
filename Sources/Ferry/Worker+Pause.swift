import FerryRedis
import Foundation
import Logging
import Synchronization

// Pausing: `ferry queue pause` stops this group's workers starting jobs.

extension Worker {
    /// Whether the read loop is to start nothing: the queue or this group is paused.
    var isPaused: Bool { state.withLock { $0.paused } }

    /// Reads whether the queue or this group is paused (`ferry:{Q}:paused`), and says so in the
    /// log and `ferry_queue_paused` when it changes. A failed read keeps the last answer.
    func refreshPause(_ control: ControlChannel) async {
        do {
            let paused = try await QueuePause(queue: queue, connection: control.connection).isPaused(group: configuration.group)
            let changed = state.withLock { state in
                defer { state.paused = paused }
                return state.paused != paused
            }
            metrics.paused(paused)
            if !paused { state.withLock { $0.pauseConfirmed = nil } }
            // Jobs read ahead go back. Every slot busy: the read loop waits for one, and checks
            // the pause before it starts anything, so nothing new starts here from now on.
            if paused, let slots = state.withLock({ $0.slots }) {
                logHandedBack(slots.handBackWaiting())
                if !slots.hasFreeSlot { await confirmPause(control) }
            }
            if changed {
                logger.info(
                    paused
                        ? "queue_paused: no new jobs start until ferry queue resume; running ones finish"
                        : "queue_resumed: jobs start again")
            }
        } catch {
            logger.debug("could not read whether the queue is paused", metadata: error.redisError.map(redisFailure) ?? [:])
        }
    }

    /// Tells `ferry queue pause --wait` (``QueuePause/waitUntilConfirmed(group:timeout:liveWithin:)``)
    /// that this worker starts nothing while the pause lasts: a mark (the time, for people
    /// reading it) in `ferry:{Q}:paused:seen:<group>`, which expires an hour after the last. Called where no job
    /// can start after it without checking the pause first; at most once a second.
    func confirmPause(_ control: ControlChannel) async {
        let due = state.withLock { state -> Bool in
            guard state.pauseConfirmed.map({ ContinuousClock.now - $0 >= .seconds(1) }) ?? true else { return false }
            state.pauseConfirmed = .now
            return true
        }
        guard due else { return }
        let key = keys.pauseSeen(group: configuration.group)
        do {
            _ = try await control.connection.pipeline([
                RedisCommand("HSET", [.string(key), .string(configuration.consumer), .integer(Date().millisecondsSince1970)]),
                RedisCommand("PEXPIRE", [.string(key), .integer(3_600_000)]),
            ])
        } catch {
            state.withLock { $0.pauseConfirmed = nil }
            logger.debug("could not confirm the pause", metadata: redisFailure(error))
        }
    }

    /// Hands entries a read took in the moment the queue was paused back to the group
    /// (`delay.lua`, due at once, no attempt spent, status untouched): they run on resume, on
    /// whichever worker takes them first.
    func putBack(_ entries: [StreamEntry], control: ControlChannel) async {
        await putBack(entries.map { ($0, 1) }, control: control)
        logger.info("paused_read_put_back", metadata: ["ferry.count": "\(entries.count)"])
    }

    /// Says how many jobs read ahead went back to the group (``JobSlots/handBackWaiting()``), if any.
    func logHandedBack(_ count: Int) {
        if count > 0 { logger.info("read_ahead_handed_back", metadata: ["ferry.count": "\(count)"]) }
    }

    /// Hands deliveries back to the group unrun (`delay.lua`, due at once, the attempt not
    /// spent, status untouched), for whichever worker takes them first.
    func putBack(_ deliveries: [(StreamEntry, attempt: Int)], control: ControlChannel) async {
        for (entry, attempt) in deliveries {
            _ = await park(
                entry.id, jobID: entry.jobID, type: entry.text(of: WireFormat.Field.type) ?? "", attempt: attempt,
                until: .after(.zero), why: .putBack, control: control, logger: logger)
        }
    }
}
