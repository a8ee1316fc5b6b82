import Synchronization

/// Sends work to Redis in batches by group commit: the first item submitted starts a flush at
/// once; items submitted while it is in flight go together in the next one. A lone item waits
/// for no timer, and a busy worker pays one round trip for many items instead of one each.
/// The worker uses it for acknowledgements and status writes: one pipeline for many jobs (see
/// ``ControlChannel/writes``).
final class GroupCommit<Item: Sendable, Outcome: Sendable>: Sendable {
    private typealias Waiting = (item: Item, then: (@Sendable (Outcome) -> Void)?)
    private struct State {
        var waiting: [Waiting] = []
        var flushing = false
        /// When the next flush may go, set by the first item enqueued with a hold.
        var holdUntil: ContinuousClock.Instant?
        /// The flush waiting for the hold to end.
        var holdWaiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())
    private let flush: @Sendable ([Item]) async -> [Outcome]

    /// - Parameter flush: does the work for a batch and returns one outcome per item, in order.
    init(flush: @escaping @Sendable ([Item]) async -> [Outcome]) {
        self.flush = flush
    }

    /// Waits until the item's batch is flushed and returns its outcome.
    func submit(_ item: Item) async -> Outcome {
        await withCheckedContinuation { done in add(item) { done.resume(returning: $0) } }
    }

    /// Adds the item to the next batch without waiting for it. Batches are flushed in order, so
    /// a later ``submit(_:)`` returns only after this item is flushed.
    ///
    /// - Parameter then: runs with the item's outcome once its batch is flushed (on the task
    ///   that flushed it, so it must be quick): a caller that need not wait learns the outcome
    ///   without a task of its own sleeping on it.
    /// - Parameter hold: how long the item's batch may wait for more items (at most; nil, the
    ///   default, for none): an item that later ones may make unnecessary, as a job's running
    ///   record is once the job's outcome joins it. The first held item of a batch sets when it
    ///   goes, so items that keep coming cannot hold a batch back for longer.
    func enqueue(_ item: Item, hold: Duration? = nil, then: (@Sendable (Outcome) -> Void)? = nil) {
        add(item, hold: hold, then: then)
    }

    /// Ends the hold of the next batch: it goes now. For when what it waits for cannot come
    /// (the worker runs no job whose outcome would join it).
    func endHold() {
        endHold(ifUntil: nil)
    }

    /// Ends the hold when it is the one until `deadline` (any hold for nil), waking the flush
    /// waiting for it.
    private func endHold(ifUntil deadline: ContinuousClock.Instant?) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let holdUntil = state.holdUntil, deadline == nil || deadline == holdUntil else { return nil }
            state.holdUntil = nil
            defer { state.holdWaiter = nil }
            return state.holdWaiter
        }
        waiter?.resume()
    }

    /// Waits until the hold ends: at `deadline`, or sooner by ``endHold()``.
    private func waitForHold(until deadline: ContinuousClock.Instant) async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let ended = state.withLock { state -> Bool in
                guard state.holdUntil == deadline else { return true }
                if deadline <= .now {
                    state.holdUntil = nil
                    return true
                }
                state.holdWaiter = waiter
                return false
            }
            if ended { return waiter.resume() }
            Task {
                try? await Task.sleep(until: deadline)
                self.endHold(ifUntil: deadline)
            }
        }
    }

    private func add(_ item: Item, hold: Duration? = nil, then: (@Sendable (Outcome) -> Void)?) {
        let startsFlush = state.withLock { state -> Bool in
            state.waiting.append((item, then))
            if let hold, state.holdUntil == nil { state.holdUntil = .now + hold }
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
            if let holdUntil = state.withLock({ $0.holdUntil }) { await waitForHold(until: holdUntil) }
            let batch = state.withLock { state -> [Waiting] in
                let batch = state.waiting
                state.waiting.removeAll()
                state.holdUntil = nil
                if batch.isEmpty { state.flushing = false }
                return batch
            }
            if batch.isEmpty { return }
            let outcomes = await flush(batch.map(\.item))
            for (waiting, outcome) in zip(batch, outcomes) {
                waiting.then?(outcome)
            }
        }
    }
}
