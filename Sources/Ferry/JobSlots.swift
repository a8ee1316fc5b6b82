/// Counts running jobs against the concurrency limit and lets the read loop wait for a free slot.
actor JobSlots {
    let limit: Int
    private(set) var used = 0
    private var slotWaiter: CheckedContinuation<Void, Never>?
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) { self.limit = limit }

    var free: Int { limit - used }

    func take() { used += 1 }

    func release() {
        used -= 1
        slotWaiter?.resume()
        slotWaiter = nil
        if used == 0 {
            idleWaiters.forEach { $0.resume() }
            idleWaiters.removeAll()
        }
    }

    func waitForFreeSlot() async {
        if used < limit { return }
        await withCheckedContinuation { slotWaiter = $0 }
    }

    func waitUntilIdle() async {
        if used == 0 { return }
        await withCheckedContinuation { idleWaiters.append($0) }
    }

    /// Called when the shutdown grace is over: nothing to do here but let waiters through,
    /// since the task group's cancellation reaches the running handlers.
    func cancelAfterGrace() {
        idleWaiters.forEach { $0.resume() }
        idleWaiters.removeAll()
    }
}
