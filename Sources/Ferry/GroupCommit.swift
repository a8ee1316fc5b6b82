import Synchronization

/// Sends work to Redis in batches by group commit: the first item submitted starts a flush at
/// once; items submitted while it is in flight go together in the next one. A lone item waits
/// for no timer, and a busy worker pays one round trip for many items instead of one each.
/// The worker uses it for acknowledgements and status writes: one pipeline for many jobs (see
/// ``ControlChannel/writes``); ``SharedPublisher`` for concurrent callers' jobs; the HTTP API for
/// the checks of its requests' idempotency keys.
public final class GroupCommit<Item: Sendable, Outcome: Sendable>: Sendable {
    private typealias Waiting = (item: Item, then: Waiter)
    /// Who learns an item's outcome: a task suspended in ``submit(_:)`` (resumed directly, with
    /// no closure made for it), or an ``enqueue(_:then:)`` caller's callback, if any.
    private enum Waiter {
        case task(CheckedContinuation<Outcome, Never>)
        case callback((@Sendable (Outcome) -> Void)?)

        func resume(returning outcome: Outcome) {
            switch self {
            case .task(let continuation): continuation.resume(returning: outcome)
            case .callback(let then): then?(outcome)
            }
        }
    }
    private struct State {
        var waiting: [Waiting] = []
        var flushing = false
    }
    private let state = Mutex(State())
    private let flush: @Sendable ([Item]) async -> [Outcome]
    private let whenIdle: (@Sendable () -> Void)?

    /// - Parameters:
    ///   - whenIdle: runs each time the last batch is flushed and nothing waits.
    ///   - flush: does the work for a batch and returns one outcome per item, in order.
    public init(whenIdle: (@Sendable () -> Void)? = nil, flush: @escaping @Sendable ([Item]) async -> [Outcome]) {
        self.flush = flush
        self.whenIdle = whenIdle
    }

    /// Whether a flush is under way or about to start: a batch will still be flushed.
    var isFlushing: Bool { state.withLock { $0.flushing } }

    /// Waits until the item's batch is flushed and returns its outcome.
    public func submit(_ item: Item) async -> Outcome {
        await withCheckedContinuation { done in add((item, .task(done))) }
    }

    /// Adds the item to the next batch without waiting for it. Batches are flushed in order, so
    /// a later ``submit(_:)`` returns only after this item is flushed.
    ///
    /// - Parameter then: runs with the item's outcome once its batch is flushed (on the task
    ///   that flushed it, so it must be quick): a caller that need not wait learns the outcome
    ///   without a task of its own sleeping on it.
    func enqueue(_ item: Item, then: (@Sendable (Outcome) -> Void)? = nil) {
        add((item, .callback(then)))
    }

    private func add(_ waiting: Waiting) {
        let startsFlush = state.withLock { state -> Bool in
            state.waiting.append(waiting)
            if state.flushing { return false }
            state.flushing = true
            return true
        }
        if startsFlush {
            Task { await self.flushUntilEmpty() }
        }
    }

    private func flushUntilEmpty() async {
        while true {
            let batch = state.withLock { state -> [Waiting] in
                let batch = state.waiting
                state.waiting.removeAll()
                if batch.isEmpty { state.flushing = false }
                return batch
            }
            if batch.isEmpty {
                whenIdle?()
                return
            }
            let outcomes = await flush(batch.map(\.item))
            for (waiting, outcome) in zip(batch, outcomes) {
                waiting.then.resume(returning: outcome)
            }
        }
    }
}
