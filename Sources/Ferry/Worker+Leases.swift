import FerryRedis
import Foundation
import Logging
import Synchronization

// Lease extension for running jobs, and leaving the group at the end of a run.

extension Worker {
    /// Extends the lease of every running job at a quarter of the lease, so a slow job on a live
    /// worker is never reclaimed by another.
    func maintainLeases(_ control: ControlChannel, slots: JobSlots) async {
        defer { metrics.inFlight(0) }
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.maintenanceInterval)
            loopTurned()
            let runningJobs = slots.running
            let running = Array(runningJobs.keys)
            metrics.inFlight(running.count)
            let locks = slots.locks
            let limitSlots = slots.limitSlots
            if running.isEmpty { continue }
            do {
                let reply = try await control.run(
                    Self.leaseScript, keys: [.string(keys.jobs)],
                    arguments: [.string(configuration.group), .string(configuration.consumer), 0] + running.map { .string($0) })
                let parts = reply.array ?? []
                for id in parts.first?.array?.compactMap(\.string) ?? [] {
                    logger.info(
                        "lease_lost", metadata: ["ferry.entry_id": "\(id)", "ferry.job_id": "\(runningJobs[id]?.jobID ?? id)"])
                }
                let deleted = parts.dropFirst().first?.array?.compactMap(\.string) ?? []
                if !deleted.isEmpty {
                    slots.markDeleted(deleted)
                    await recordDeleted(deleted.map { ($0, runningJobs[$0]?.jobID) }, running: true, control: control)
                }
                if !locks.isEmpty {
                    let held = locks
                    let sentAt = ContinuousClock.now
                    let renewed = try await control.run(
                        Self.extendLockScript, keys: held.map { .string($0.key) },
                        arguments: [.integer(configuration.idempotencyLockTTL.milliseconds)] + held.map { .string($0.token) })
                    let renewedTokens = Set(renewed.array?.compactMap(\.string) ?? [])
                    for lock in held {
                        if renewedTokens.contains(lock.token) { lock.renewed(sentAt: sentAt) } else { lock.lost() }
                    }
                }
                try await extendSlots(limitSlots, control: control)
                metrics.leasesExtended(running.count)
                let shown = running.sorted().prefix(20)
                logger.info(
                    "lease_extended",
                    metadata: [
                        "ferry.count": "\(running.count)", "ferry.entry_ids": "\(Array(shown))",
                        "ferry.job_ids": "\(shown.compactMap { runningJobs[$0]?.jobID })",
                    ])
                try await cancelRequestedJobs(control, slots: slots)
            } catch {
                logger.info("lease extension failed", metadata: redisFailure(error))
                // Unextended, this worker's slots could lapse while their jobs run; a name
                // reused after that would have the jobs' releases count off new slots.
                if !limitSlots.isEmpty { renewSlotHolder(after: "an extension of concurrency slots") }
            }
        }
    }

    /// Records entries someone deleted from the stream (`XDEL`, `XTRIM`) before their jobs
    /// finished: a warning naming each, `ferry_entries_deleted_total`, and the job status
    /// `deleted` (`mark_deleted.lua`) where the job's id is known (a reclaimed entry's id is its
    /// job id only when the producer set none: the fields that named it are gone). Nothing is
    /// dead-lettered: there are no fields left to redrive. A workflow's step ends as dead for its
    /// workflow.
    func recordDeleted(_ entries: [(entryID: String, jobID: String?)], running: Bool, control: ControlChannel) async {
        metrics.entriesDeleted(entries.count)
        for entry in entries {
            logger.warning(
                running
                    ? "entry_deleted: the entry was deleted from the stream (XDEL or XTRIM) while its job ran; the job's outcome cannot be acknowledged"
                    : "entry_deleted: a pending entry was deleted from the stream (XDEL or XTRIM) before its job finished; it cannot run again",
                metadata: ["ferry.entry_id": "\(entry.entryID)", "ferry.job_id": "\(entry.jobID ?? entry.entryID)"])
        }
        do {
            _ = try await control.transition(
                Self.markDeletedScript, keys: entries.map { .string(keys.jobStatus(jobID: $0.jobID ?? $0.entryID)) },
                arguments: [
                    now(), .integer(configuration.keepFailed.milliseconds), .string(configuration.group),
                    .string(keys.statusIndexPrefix), .string(keys.jobs), configuration.recordsStatus ? "1" : "0",
                ] + entries.flatMap { [.string($0.entryID), .string($0.jobID ?? $0.entryID)] }, about: entries.map(\.entryID))
        } catch {
            logger.info("the deleted jobs' statuses were not recorded", metadata: redisFailure(error))
        }
    }

    /// Removes this consumer from the group when it holds nothing, so finished containers do not
    /// pile up in `XINFO CONSUMERS`. A consumer that still holds entries is kept.
    func releaseConsumer(_ control: ControlChannel) async {
        for stream in laneStreams {
            _ = try? await control.run(
                Self.releaseConsumerScript, keys: [.string(stream)],
                arguments: [.string(configuration.group), .string(configuration.consumer)])
        }
    }
}
