import Synchronization

/// How many push requests may be in flight: slow start, as Pub/Sub push applies it.
///
/// The window starts at one request, grows by one with every success (doubling each round
/// trip) up to the worker's concurrency, and halves with every failure that says the endpoint
/// is struggling (a 429, a 5xx, a timeout, a refused connection). A struggling handler sees
/// fewer requests at once instead of the whole concurrency, and gets them back as it recovers.
public final class PushFlowControl: Sendable {
    private struct State {
        var window: Int
        var inFlight = 0
        var waiters: [(id: Int, continuation: CheckedContinuation<Void, any Error>)] = []
        var nextWaiterID = 0
    }

    /// The most requests ever in flight: the worker's concurrency.
    public let limit: Int
    private let state: Mutex<State>

    /// Starts small (`initialWindow`) and grows while the endpoint keeps up, as Pub/Sub push does.
    public init(limit: Int, initialWindow: Int = 1) {
        self.limit = max(limit, 1)
        self.state = Mutex(State(window: min(max(initialWindow, 1), max(limit, 1))))
    }

    /// Requests allowed in flight now.
    public var window: Int { state.withLock { $0.window } }
    /// Requests in flight now.
    public var inFlight: Int { state.withLock { $0.inFlight } }

    /// Waits for room in the window. Throws `CancellationError` if the task is cancelled first.
    public func acquire() async throws {
        let id = state.withLock { state -> Int? in
            if state.inFlight < state.window && state.waiters.isEmpty {
                state.inFlight += 1
                return nil
            }
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let admitted = state.withLock { state -> Bool in
                    if Task.isCancelled { return false }
                    state.waiters.append((id, continuation))
                    return true
                }
                if !admitted { continuation.resume(throwing: CancellationError()) }
                admitSome()
            }
        } onCancel: {
            let waiter = state.withLock { state in
                state.waiters.firstIndex { $0.id == id }.map { state.waiters.remove(at: $0) }
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Gives the slot back. `healthy` is false when the endpoint failed in a way that asks for less load.
    public func release(healthy: Bool) {
        state.withLock { state in
            state.inFlight -= 1
            state.window = healthy ? min(state.window + 1, limit) : max(state.window / 2, 1)
        }
        admitSome()
    }

    private func admitSome() {
        let admitted = state.withLock { state in
            var admitted: [CheckedContinuation<Void, any Error>] = []
            while state.inFlight < state.window, !state.waiters.isEmpty {
                state.inFlight += 1
                admitted.append(state.waiters.removeFirst().continuation)
            }
            return admitted
        }
        admitted.forEach { $0.resume() }
    }
}
