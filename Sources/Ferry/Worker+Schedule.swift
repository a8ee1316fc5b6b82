import FerryRedis
import Foundation
import Logging

// Scheduled jobs: moving the due ones into the stream.

extension Worker {
    static let moveDueScript = RedisScript(name: "move_due", source: EmbeddedLuaScripts.move_due)

    /// How often the worker looks for due scheduled jobs: a job is delivered within about this
    /// of its due time while the workers keep up. An empty look is one cheap script call.
    static let dueCheckInterval: Duration = .milliseconds(250)

    /// Moves due scheduled jobs into the stream (`move_due.lua`, batches of 100, at once again
    /// while more are due) until the task is cancelled. Any worker of any group may move a job;
    /// the script moves each once. A failure is logged and tried again next time.
    func moveDueJobs(_ control: ControlChannel) async {
        while !Task.isCancelled && !isStopping {
            do {
                var more = true
                while more {
                    let reply = try await control.run(
                        Self.moveDueScript, keys: [.string(keys.jobs), .string(keys.scheduled)],
                        arguments: [.string(keys.scheduled + ":"), .string(keys.jobStatusPrefix), 100])
                    let parts = reply.array ?? []
                    let moved = parts.first?.integer ?? 0
                    if moved > 0 { logger.debug("scheduled_moved", metadata: ["ferry.count": "\(moved)"]) }
                    more = parts.last?.integer == 1
                }
            } catch {
                logger.info("moving due scheduled jobs failed; tried again shortly", metadata: redisFailure(error))
            }
            try? await Task.sleep(for: Self.dueCheckInterval)
        }
    }
}
