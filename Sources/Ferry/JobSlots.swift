import Synchronization

/// Counts running jobs against the concurrency limit, lets the read loop wait for a free slot,
/// and keeps each running job's task so that shutdown and `ferry job cancel` can cancel it.
///
/// A lock rather than an actor: it is touched twice per job on the hot path, and an actor hop
/// there cost a thread wake-up each time (measured with `ferry bench worker` under `perf`).
final class JobSlots: Sendable {
    struct Running {
        let jobID: String
        let task: Task<Void, Never>
    }

    private struct State {
        var used = 0
        var slotWaiter: CheckedContinuation<Void, Never>?
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        /// Running jobs by entry ID.
        var running: [String: Running] = [:]
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) { self.limit = limit }

    var used: Int { state.withLock { $0.used } }
    var free: Int { limit - used }

    /// Takes a slot and starts `body` as the job's task, which gives the slot back when it ends.
    /// Returns false, starting nothing, when the entry is already running here: this worker
    /// reclaimed its own entry after a lease extension failed (a Redis hiccup), and running it
    /// twice at once would be worse than letting the running copy finish.
    @discardableResult
    func start(entryID: String, jobID: String, _ body: @escaping @Sendable () async -> Void) -> Bool {
        state.withLock { state in
            if state.running[entryID] != nil { return false }
            state.used += 1
            // The task cannot finish before it is registered: its last step takes this lock.
            let task = Task {
                await body()
                self.finish(entryID)
            }
            state.running[entryID] = Running(jobID: jobID, task: task)
            return true
        }
    }

    private func finish(_ entryID: String) {
        let (slotWaiter, idleWaiters) = state.withLock { state in
            state.used -= 1
            state.running.removeValue(forKey: entryID)
            let slotWaiter = state.slotWaiter
            state.slotWaiter = nil
            var idleWaiters: [CheckedContinuation<Void, Never>] = []
            if state.used == 0 { swap(&idleWaiters, &state.idleWaiters) }
            return (slotWaiter, idleWaiters)
        }
        slotWaiter?.resume()
        idleWaiters.forEach { $0.resume() }
    }

    /// The running jobs, by entry ID.
    var running: [String: Running] { state.withLock { $0.running } }

    func waitForFreeSlot() async {
        if state.withLock({ $0.used < limit }) { return }
        await withCheckedContinuation { waiter in
            let free = state.withLock { state in
                if state.used < limit { return true }
                state.slotWaiter = waiter
                return false
            }
            if free { waiter.resume() }
        }
    }

    func waitUntilIdle() async {
        if state.withLock({ $0.used == 0 }) { return }
        await withCheckedContinuation { waiter in
            let idle = state.withLock { state in
                if state.used == 0 { return true }
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
