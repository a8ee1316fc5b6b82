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
            let locks = state.withLock { $0.locks }
            if running.isEmpty { continue }
            do {
                let lost = try await control.run(
                    Self.leaseScript, keys: [.string(keys.jobs)],
                    arguments: [.string(configuration.group), .string(configuration.consumer), 0] + running.map { .string($0) })
                for id in lost.array?.compactMap(\.string) ?? [] {
                    logger.info("lease_lost", metadata: ["ferry.entry_id": "\(id)"])
                }
                if !locks.isEmpty {
                    let held = Array(locks.values)
                    let sentAt = ContinuousClock.now
                    let renewed = try await control.run(
                        Self.extendLockScript, keys: held.map { .string($0.key) },
                        arguments: [.integer(configuration.idempotencyLockTTL.milliseconds)] + held.map { .string($0.token) })
                    let renewedTokens = Set(renewed.array?.compactMap(\.string) ?? [])
                    for lock in held {
                        if renewedTokens.contains(lock.token) { lock.renewed(sentAt: sentAt) } else { lock.lost() }
                    }
                }
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
            }
        }
    }

    /// Removes this consumer from the group when it holds nothing, so finished containers do not
    /// pile up in `XINFO CONSUMERS`. A consumer that still holds entries is kept.
    func releaseConsumer(_ control: ControlChannel) async {
        _ = try? await control.run(
            Self.releaseConsumerScript, keys: [.string(keys.jobs)],
            arguments: [.string(configuration.group), .string(configuration.consumer)])
    }
}
