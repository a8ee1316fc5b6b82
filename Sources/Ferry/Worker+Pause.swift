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

    /// Hands entries a read took in the moment the queue was paused back to the group
    /// (`delay.lua`, due at once, no attempt spent, status untouched): they run on resume, on
    /// whichever worker takes them first.
    func putBack(_ entries: [StreamEntry], control: ControlChannel) async {
        for entry in entries {
            _ = await park(
                entry.id, jobID: entry.jobID, type: entry.text(of: WireFormat.Field.type) ?? "", attempt: 1, until: .after(.zero),
                why: .putBack, control: control, logger: logger)
        }
        logger.info("paused_read_put_back", metadata: ["ferry.count": "\(entries.count)"])
    }
}
