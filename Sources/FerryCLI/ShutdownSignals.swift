import Ferry
import ServiceLifecycle
import Synchronization
import UnixSignals

/// SIGTERM and SIGINT for a worker process: the first shuts its `ServiceGroup` down gracefully
/// (the worker drains, then the admin endpoints stop), the second cancels the running jobs at
/// once, which stay pending for other workers.
///
/// `ServiceGroup` alone traps a signal once: a repeated graceful-shutdown signal is ignored, and
/// its cancellation signals must be other signals. So the command listens itself, from its
/// first line: a container stopped while the worker is still connecting must still exit 0, and
/// a signal that arrives before ``attach(_:worker:)`` is applied when the group is attached
/// (a `ServiceGroup` remembers a shutdown asked for before it runs).
final class ShutdownSignals: Sendable {
    private struct State {
        var received = 0
        var group: ServiceGroup?
        var worker: Worker?
    }

    private let state = Mutex(State())

    private init() {}

    /// Starts listening; call it before anything that can take long.
    static func listen() async -> ShutdownSignals {
        let signals = ShutdownSignals()
        let sequence = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        Task {
            for await _ in sequence { await signals.received() }
        }
        return signals
    }

    /// The group to shut down and the worker whose jobs a second signal cancels.
    func attach(_ group: ServiceGroup, worker: Worker) async {
        let received = state.withLock { state in
            state.group = group
            state.worker = worker
            return state.received
        }
        if received >= 1 { await group.triggerGracefulShutdown() }
        if received >= 2 { worker.cancelRunningJobs() }
    }

    private func received() async {
        let (count, group, worker) = state.withLock { state in
            state.received += 1
            return (state.received, state.group, state.worker)
        }
        if count == 1 {
            await group?.triggerGracefulShutdown()
        } else {
            worker?.cancelRunningJobs()
        }
    }
}
