import Dispatch
import Ferry
import Foundation
import Synchronization

/// SIGTERM and SIGINT for a worker process: the first asks the worker to drain, the second
/// cancels its running jobs at once.
///
/// Installed when the command starts, before the worker exists: a container stopped while the
/// worker is still connecting must still exit 0, not die of the default signal action. A signal
/// that arrives before ``attach(_:running:)`` is applied when the worker is attached.
final class ShutdownSignals: @unchecked Sendable {
    // @unchecked: `sources` is written once in init and only cancelled afterwards.
    private struct State {
        var received = 0
        var worker: Worker?
        var running: Task<Void, any Error>?
    }

    private let state = Mutex(State())
    private var sources: [any DispatchSourceSignal] = []

    init() {
        sources = [SIGTERM, SIGINT].map { signalNumber in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { [weak self] in self?.received() }
            source.resume()
            return source
        }
    }

    deinit {
        sources.forEach { $0.cancel() }
    }

    /// Whether a signal arrived already: the command should not start the worker at all.
    var stopRequested: Bool { state.withLock { $0.received > 0 } }

    func attach(_ worker: Worker, running: Task<Void, any Error>) {
        let received = state.withLock { state in
            state.worker = worker
            state.running = running
            return state.received
        }
        if received >= 1 { worker.stop() }
        if received >= 2 { running.cancel() }
    }

    private func received() {
        let (count, worker, running) = state.withLock { state in
            state.received += 1
            return (state.received, state.worker, state.running)
        }
        if count == 1 { worker?.stop() } else { running?.cancel() }
    }
}
