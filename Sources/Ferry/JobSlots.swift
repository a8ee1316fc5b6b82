import Synchronization

/// The worker's running jobs: one record each (its task, its idempotency lock, whether someone
/// asked to cancel it, whether its entry was deleted while it ran), counted against the
/// concurrency limit; the read loop waits here for a free slot, shutdown and `ferry job cancel`
/// cancel a job's task through its record, and the worker waits for every record to go.
///
/// Each job runs as a task of its own, owned by its record: Swift can cancel a task group's
/// children only all at once, and `ferry job cancel` cancels one job (docs/design.md).
///
/// A job whose handler has returned but whose acknowledgement is still on its way gives its
/// slot back at once, so the next read overlaps the acknowledgement's round trip; it stays in
/// ``running`` (its lease extended) until ``finishAcknowledging(_:)``. Such jobs are bounded
/// too: the read loop waits while `limit` of them are outstanding.
///
/// A lock rather than an actor: it is touched twice per job on the hot path, and an actor hop
/// there cost a thread wake-up each time (measured with `ferry bench worker` under `perf`).
final class JobSlots: Sendable {
    /// One running (or acknowledging) job.
    struct Running {
        let jobID: String
        let task: Task<Void, Never>
        /// The idempotency lock its delivery holds, renewed with the lease.
        var lock: IdempotencyLock?
        /// Its handler was cancelled because someone asked (`ferry job cancel`), not by
        /// shutdown: it is settled as cancelled, not left for another worker.
        var cancelledOnRequest = false
        /// Its entry was deleted from the stream (`XDEL`, `XTRIM`) while it ran: its end finds
        /// nothing to acknowledge, which is no lost lease.
        var entryDeleted = false
        /// The concurrency slots of limits it holds, extended with its lease.
        var limitSlots: [Worker.LimitSlot] = []
    }

    private struct State {
        /// Handlers running.
        var used = 0
        /// Jobs whose acknowledgement is on its way.
        var acknowledging = 0
        var slotWaiter: CheckedContinuation<Void, Never>?
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        /// Running and acknowledging jobs by entry ID; a record goes with its job, so a later
        /// delivery of the entry here starts with a fresh one.
        var running: [String: Running] = [:]

        func hasFreeSlot(limit: Int) -> Bool { used < limit && acknowledging < limit }

        mutating func forget(_ entryID: String) {
            running.removeValue(forKey: entryID)
        }
    }

    let limit: Int
    private let state = Mutex(State())
    private let changed: (@Sendable () -> Void)?

    /// - Parameter changed: runs (outside the lock) each time a job ends or an acknowledgement
    ///   lands, for a read waiting on a flush (``CarriedRead/slotsChanged()``).
    init(limit: Int, changed: (@Sendable () -> Void)? = nil) {
        self.limit = limit
        self.changed = changed
    }

    /// Handlers running now.
    var used: Int { state.withLock { $0.used } }

    /// Whether a job may start now, without waiting (``waitForFreeSlots()`` waits for it).
    var hasFreeSlot: Bool { state.withLock { $0.hasFreeSlot(limit: limit) } }

    /// What a job's task leaves behind when it ends.
    enum Exit: Sendable {
        /// Nothing: the job is done with.
        case done
        /// An acknowledgement on its way, whose callback calls ``finishAcknowledging(_:)``.
        case acknowledging
    }

    /// Takes a slot and starts `body` as the job's task, which gives the slot back when it ends.
    /// Returns false, starting nothing, when the entry is already running (or acknowledging)
    /// here: this worker reclaimed its own entry after a lease extension failed (a Redis
    /// hiccup), and running it twice at once would be worse than letting the first copy finish.
    @discardableResult
    func start(entryID: String, jobID: String, _ body: @escaping @Sendable () async -> Exit) -> Bool {
        state.withLock { state in
            if state.running[entryID] != nil { return false }
            state.used += 1
            // The task cannot finish before it is registered: its last step takes this lock.
            let task = Task {
                let exit = await body()
                self.update(entryID) { state in
                    state.used -= 1
                    if exit == .acknowledging { state.acknowledging += 1 } else { state.forget(entryID) }
                }
            }
            state.running[entryID] = Running(jobID: jobID, task: task)
            return true
        }
    }

    /// The acknowledgement of a job whose task ended with ``Exit/acknowledging`` was flushed.
    func finishAcknowledging(_ entryID: String) {
        update(entryID) { state in
            state.acknowledging -= 1
            state.forget(entryID)
        }
    }

    /// Cancels the entry's handler because someone asked, and remembers that it was asked (see
    /// ``wasCancelledOnRequest(_:)``). Nothing happens when the entry is no longer here.
    func cancelOnRequest(_ entryID: String) {
        let task = state.withLock { state -> Task<Void, Never>? in
            state.running[entryID]?.cancelledOnRequest = true
            return state.running[entryID]?.task
        }
        task?.cancel()
    }

    /// Whether the entry's handler was cancelled on request rather than by shutdown: a cancelled
    /// job is settled as cancelled, an interrupted one is left for another worker.
    func wasCancelledOnRequest(_ entryID: String) -> Bool {
        state.withLock { $0.running[entryID]?.cancelledOnRequest ?? false }
    }

    /// Keeps the idempotency lock the entry's delivery took, for lease renewal.
    func hold(_ lock: IdempotencyLock, for entryID: String) {
        state.withLock { $0.running[entryID]?.lock = lock }
    }

    /// Keeps the limit slots the entry's delivery took, for extension with its lease.
    func hold(_ limitSlots: [Worker.LimitSlot], for entryID: String) {
        state.withLock { $0.running[entryID]?.limitSlots = limitSlots }
    }

    /// The limit slots running jobs hold.
    var limitSlots: [Worker.LimitSlot] { state.withLock { $0.running.values.flatMap(\.limitSlots) } }

    /// The idempotency locks running jobs hold.
    var locks: [IdempotencyLock] { state.withLock { $0.running.values.compactMap(\.lock) } }

    /// Marks running entries as deleted from the stream (see ``Running/entryDeleted``).
    func markDeleted(_ entryIDs: [String]) {
        state.withLock { state in
            for id in entryIDs { state.running[id]?.entryDeleted = true }
        }
    }

    /// Whether the entry was deleted from the stream while its job ran here.
    func wasDeleted(_ entryID: String) -> Bool {
        state.withLock { $0.running[entryID]?.entryDeleted ?? false }
    }

    private func update(_ entryID: String, _ change: (inout State) -> Void) {
        let (slotWaiter, idleWaiters) = state.withLock { state in
            change(&state)
            var slotWaiter: CheckedContinuation<Void, Never>?
            if state.hasFreeSlot(limit: limit) { swap(&slotWaiter, &state.slotWaiter) }
            var idleWaiters: [CheckedContinuation<Void, Never>] = []
            if state.running.isEmpty { swap(&idleWaiters, &state.idleWaiters) }
            return (slotWaiter, idleWaiters)
        }
        slotWaiter?.resume()
        idleWaiters.forEach { $0.resume() }
        changed?()
    }

    /// Whether the entry is running (or acknowledging) here.
    func isRunning(_ entryID: String) -> Bool { state.withLock { $0.running[entryID] != nil } }

    /// The running and acknowledging jobs, by entry ID.
    var running: [String: Running] { state.withLock { $0.running } }

    /// Waits until a job may start, and returns how many may start now (at least one).
    ///
    /// Only the read loop starts jobs, but jobs that end while it reads raise the count of
    /// acknowledgements on their way; so the count is taken here, in one step with the wait,
    /// and never read again separately (an `XREADGROUP COUNT 0` would read the whole stream).
    func waitForFreeSlots() async -> Int {
        while true {
            let free = state.withLock { $0.hasFreeSlot(limit: limit) ? limit - $0.used : 0 }
            if free > 0 { return free }
            await withCheckedContinuation { waiter in
                let free = state.withLock { state in
                    if state.hasFreeSlot(limit: limit) { return true }
                    state.slotWaiter = waiter
                    return false
                }
                if free { waiter.resume() }
            }
        }
    }

    /// Waits until no job is running or acknowledging.
    func waitUntilIdle() async {
        if state.withLock({ $0.running.isEmpty }) { return }
        await withCheckedContinuation { waiter in
            let idle = state.withLock { state in
                if state.running.isEmpty { return true }
                state.idleWaiters.append(waiter)
                return false
            }
            if idle { waiter.resume() }
        }
    }

    /// Cancels every running job's task (the shutdown grace is over, or the worker's task was cancelled).
    func cancelAll() {
        state.withLock { $0.running }.values.forEach { $0.task.cancel() }
    }
}
