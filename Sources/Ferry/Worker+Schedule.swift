import Foundation
import Logging

// Scheduled jobs and cron schedules: moving the due ones into the stream.

extension Worker {
    /// How often the worker looks for due scheduled jobs: a job is delivered within about this
    /// of its due time while the workers keep up. An empty look is one cheap script call.
    static let dueCheckInterval: Duration = .milliseconds(250)

    /// Reads whether the queue is paused every turn and its limits every fourth (each second);
    /// moves due scheduled jobs into the stream (`move_due.lua`, batches of 100, at once again
    /// while more are due) and enqueues the ticks of due cron schedules (``CronSchedules``)
    /// until the task is cancelled. Any worker of any group may do either; the scripts do each
    /// once. A failure is logged and tried again next time.
    func moveDueJobs(_ control: ControlChannel) async {
        let scheduled = ScheduledJobs(queue: queue, connection: control.connection)
        let schedules = CronSchedules(queue: queue, connection: control.connection)
        var turn = 0
        while !Task.isCancelled && !isStopping {
            await refreshPause(control)
            turn += 1
            if turn % 4 == 0 {
                await refreshLimits(control)
                await refreshLanes(control)
                await failOverdueWorkflows(control)
            }
            do {
                for jobID in try await schedules.fireDue(
                    statusKeep: configuration.recordsStatus ? Publisher.Configuration().statusTTL : nil)
                {
                    logger.info("cron_enqueued", metadata: ["ferry.job_id": "\(jobID)"])
                }
            } catch {
                logger.info(
                    "enqueueing due cron ticks failed; tried again shortly", metadata: error.redisError.map(redisFailure) ?? [:])
            }
            do {
                var more = true
                while more {
                    let (moved, due) = try await scheduled.moveDue()
                    if moved > 0 { logger.debug("scheduled_moved", metadata: ["ferry.count": "\(moved)"]) }
                    more = due
                }
            } catch {
                logger.info(
                    "moving due scheduled jobs failed; tried again shortly", metadata: error.redisError.map(redisFailure) ?? [:])
            }
            try? await Task.sleep(for: Self.dueCheckInterval)
        }
    }

    /// Fails the queue's workflows whose deadline has passed (``Workflows/expireOverdue(keepFailed:limit:)``).
    func failOverdueWorkflows(_ control: ControlChannel) async {
        do {
            for id in try await Workflows(queue: queue, connection: control.connection).expireOverdue(
                keepFailed: configuration.keepFailed)
            {
                logger.info("workflow_failed: its deadline passed", metadata: ["ferry.workflow_id": "\(id)"])
            }
        } catch {
            logger.info(
                "failing overdue workflows failed; tried again shortly", metadata: error.redisError.map(redisFailure) ?? [:])
        }
    }
}
