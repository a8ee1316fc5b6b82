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
/// too: the read loop waits while `limit` of them (with the read-ahead's, as many more) are
/// outstanding.
///
/// Read-ahead (``Worker/Configuration/readAhead``): the read loop may take more jobs than
/// `limit`, as many as this worker starts in ``readAheadHorizon`` at its recent rate, at most
/// `readAhead` more. A job taken beyond the limit waits in line here for a handler slot
/// (``start(entryID:jobID:ahead:_:)``) before anything of it is written, so a worker at a small
/// concurrency starts its next jobs while the read that replaces them is on its way
/// (docs/design.md, "Read-ahead: jobs in line for a handler slot").
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
        /// Taken ahead: how its wait for a handler slot ended, when that was decided before its
        /// task waited (nil: in line, or not taken ahead).
        var turn: Turn?
    }

    /// How a job taken ahead's wait for a handler slot ended.
    enum Turn: Sendable, Equatable {
        /// A handler slot is the job's: it runs.
        case run
        /// The worker stops or pauses: the job goes back to the group, unrun and unwritten.
        case handBack
        /// Someone asked to cancel the job (``cancelOnRequest(_:)``): it is settled as cancelled,
        /// without a handler slot.
        case cancelled
    }

    private struct State {
        /// Jobs taken: running, or waiting for a handler slot.
        var used = 0
        /// Jobs holding a handler slot.
        var handlers = 0
        /// Jobs taken ahead still in line for a handler slot, in the order they were read.
        var line: [String] = []
        /// The tasks of jobs in line that wait for their turn, by entry ID.
        var turnWaiters: [String: CheckedContinuation<Turn, Never>] = [:]
        /// How many jobs beyond the limit the read loop may take now.
        var readAhead = 0
        /// Whether the read loop may read ahead at all (``allowReadAhead(_:)``).
        var readsAhead = true
        /// Handler slots taken since `windowStart`: the rate read-ahead follows.
        var startsInWindow = 0
        var windowStart = ContinuousClock.now
        /// Jobs whose acknowledgement is on its way.
        var acknowledging = 0
        var slotWaiter: CheckedContinuation<Void, Never>?
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        /// Running and acknowledging jobs by entry ID; a record goes with its job, so a later
        /// delivery of the entry here starts with a fresh one.
        var running: [String: Running] = [:]

        func hasFreeSlot(limit: Int) -> Bool { used < limit + readAhead && acknowledging < limit + readAhead }

        /// How many more jobs may be taken, acknowledgements on their way aside.
        func room(limit: Int) -> Int { max(limit + readAhead - used, 0) }

        /// Takes a handler slot, counting it in the rate read-ahead follows.
        mutating func takeHandlerSlot() {
            handlers += 1
            startsInWindow += 1
        }

        /// Gives free handler slots to the jobs in line, first read first; returns the waiting
        /// tasks to resume (outside the lock).
        mutating func grantTurns(limit: Int) -> [CheckedContinuation<Turn, Never>] {
            var granted: [CheckedContinuation<Turn, Never>] = []
            while handlers < limit && !line.isEmpty {
                let next = line.removeFirst()
                takeHandlerSlot()
                if let waiter = decide(next, .run) { granted.append(waiter) }
            }
            return granted
        }

        /// Takes a job out of the line with `turn`; returns its task's waiter to resume, if it waits.
        mutating func leaveLine(_ entryID: String, _ turn: Turn) -> CheckedContinuation<Turn, Never>? {
            guard let at = line.firstIndex(of: entryID) else { return nil }
            line.remove(at: at)
            return decide(entryID, turn)
        }

        /// Ends the wait of a job taken out of the line: its waiter, or its record's `turn` for
        /// its task to find.
        mutating func decide(_ entryID: String, _ turn: Turn) -> CheckedContinuation<Turn, Never>? {
            if let waiter = turnWaiters.removeValue(forKey: entryID) { return waiter }
            running[entryID]?.turn = turn
            return nil
        }

        /// Sets the read-ahead from the handler slots taken in the last window: as many jobs
        /// as start in ``JobSlots/readAheadHorizon`` at that rate, at most `cap`. A window ends
        /// after ``JobSlots/readAheadWindow``; one that saw no start ends the read-ahead.
        mutating func followRate(cap: Int, now: ContinuousClock.Instant) {
            let elapsed = now - windowStart
            guard elapsed >= JobSlots.readAheadWindow else { return }
            let perHorizon = Double(startsInWindow) * (JobSlots.readAheadHorizon / elapsed)
            readAhead = readsAhead ? min(cap, Int(perHorizon)) : 0
            startsInWindow = 0
            windowStart = now
        }

        mutating func forget(_ entryID: String) {
            running.removeValue(forKey: entryID)
        }
    }

    /// Handlers that may run at once: the worker's concurrency.
    let limit: Int
    /// The most jobs the read loop may take beyond `limit`.
    let readAheadCap: Int
    /// How far ahead the read loop reads: the jobs this worker starts in this time at its
    /// recent rate. Short enough that a job taken ahead waits about as long as a read's round
    /// trip under load, so no other worker would have started it sooner.
    static let readAheadHorizon = Duration.milliseconds(50)
    /// How often the read-ahead follows the rate.
    static let readAheadWindow = Duration.milliseconds(100)
    private let state = Mutex(State())
    private let changed: (@Sendable () -> Void)?

    /// - Parameters:
    ///   - readAhead: the most jobs the read loop may take beyond `limit` (0: none).
    ///   - changed: runs (outside the lock) each time a job ends or an acknowledgement lands,
    ///     for a read waiting on a flush (``CarriedRead/slotsChanged()``).
    init(limit: Int, readAhead: Int = 0, changed: (@Sendable () -> Void)? = nil) {
        self.limit = limit
        self.readAheadCap = readAhead
        self.changed = changed
    }

    /// Jobs taken now: running, or waiting for a handler slot.
    var used: Int { state.withLock { $0.used } }

    /// Whether a job may be taken now, without waiting (``waitForFreeSlots()`` waits for it).
    var hasFreeSlot: Bool { state.withLock { $0.hasFreeSlot(limit: limit) } }

    /// How many jobs a read carried by a flush may take (0 when none): acknowledgements on
    /// their way do not count, as that flush lands them before its read. While `limit` jobs or
    /// more wait in line, none until half the read-ahead is free: reads ahead come in batches,
    /// not one for every flush's few ended jobs.
    var free: Int {
        state.withLock { state in
            state.followRate(cap: readAheadCap, now: .now)
            let room = state.room(limit: limit)
            return state.line.count >= limit && room < state.readAhead / 2 ? 0 : room
        }
    }

    /// Lets the read loop read ahead, or stops it at once: on a queue with priority lanes (an
    /// urgent job published next would wait behind the jobs read ahead), and for jobs under
    /// limits or ordering keys (admitted in one call for the batch they were read in, which a
    /// job read ahead, starting later, would make one call of its own).
    func allowReadAhead(_ allowed: Bool) {
        state.withLock { state in
            state.readsAhead = allowed
            if !allowed { state.readAhead = 0 }
        }
    }

    /// How many of the next jobs taken hold a handler slot from their start: the free handler
    /// slots, when no job waits for one (jobs get theirs in the order they were read).
    var freeHandlerSlots: Int { state.withLock { $0.line.isEmpty ? max(limit - $0.handlers, 0) : 0 } }

    /// What a job's task leaves behind when it ends.
    enum Exit: Sendable {
        /// Nothing: the job is done with.
        case done
        /// An acknowledgement on its way, whose callback calls ``finishAcknowledging(_:)``.
        case acknowledging
    }

    /// Takes a slot and starts `body` as the job's task, which gives the slot back when it ends.
    /// A job started `ahead` takes no handler slot: its task first waits in line for one, and
    /// `body` is told how that ended (``Turn``); other jobs' `body` is told ``Turn/run``.
    /// Returns false, starting nothing, when the entry is already running (or acknowledging)
    /// here: this worker reclaimed its own entry after a lease extension failed (a Redis
    /// hiccup), and running it twice at once would be worse than letting the first copy finish.
    @discardableResult
    func start(
        entryID: String, jobID: String, ahead: Bool = false, _ body: @escaping @Sendable (Turn) async -> Exit
    ) -> Bool {
        let granted = state.withLock { state -> [CheckedContinuation<Turn, Never>]? in
            if state.running[entryID] != nil { return nil }
            state.used += 1
            if !ahead { state.takeHandlerSlot() }
            // The task cannot finish before it is registered: its last step takes this lock.
            let task = Task {
                // Whether it holds a handler slot is the task's to know: its record may go
                // before it ends (an acknowledgement that lands first).
                let turn = ahead ? await self.waitForTurn(entryID) : .run
                let exit = await body(turn)
                self.update(entryID) { state in
                    state.used -= 1
                    if turn == .run { state.handlers -= 1 }
                    if exit == .acknowledging { state.acknowledging += 1 } else { state.forget(entryID) }
                }
            }
            state.running[entryID] = Running(jobID: jobID, task: task)
            guard ahead else { return [] }
            state.line.append(entryID)
            return state.grantTurns(limit: limit)
        }
        granted?.forEach { $0.resume(returning: .run) }
        return granted != nil
    }

    /// Waits until the job taken ahead (``start(entryID:jobID:ahead:_:)``) has a handler slot,
    /// after the jobs read before it, or leaves the line without one.
    private func waitForTurn(_ entryID: String) async -> Turn {
        await withCheckedContinuation { waiter in
            let decided = state.withLock { state -> Turn? in
                if let turn = state.running[entryID]?.turn { return turn }
                state.turnWaiters[entryID] = waiter
                return nil
            }
            if let decided { waiter.resume(returning: decided) }
        }
    }

    /// Hands every job in line for a handler slot back (``Turn/handBack``): the worker stops or
    /// pauses. Returns how many there were.
    @discardableResult
    func handBackWaiting() -> Int {
        let (count, waiters) = state.withLock { state in
            let line = state.line
            state.line = []
            return (line.count, line.compactMap { state.decide($0, .handBack) })
        }
        waiters.forEach { $0.resume(returning: .handBack) }
        return count
    }

    /// The acknowledgement of a job whose task ended with ``Exit/acknowledging`` was flushed.
    func finishAcknowledging(_ entryID: String) {
        update(entryID) { state in
            state.acknowledging -= 1
            state.forget(entryID)
        }
    }

    /// Cancels the entry's handler because someone asked, and remembers that it was asked (see
    /// ``wasCancelledOnRequest(_:)``); a job waiting for a handler slot stops waiting
    /// (``Turn/cancelled``). Nothing happens when the entry is no longer here.
    func cancelOnRequest(_ entryID: String) {
        let (task, waiting) = state.withLock { state -> (Task<Void, Never>?, CheckedContinuation<Turn, Never>?) in
            state.running[entryID]?.cancelledOnRequest = true
            return (state.running[entryID]?.task, state.leaveLine(entryID, .cancelled))
        }
        waiting?.resume(returning: .cancelled)
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
        let (slotWaiter, idleWaiters, turns) = state.withLock { state in
            change(&state)
            let turns = state.grantTurns(limit: limit)
            var slotWaiter: CheckedContinuation<Void, Never>?
            if state.hasFreeSlot(limit: limit) { swap(&slotWaiter, &state.slotWaiter) }
            var idleWaiters: [CheckedContinuation<Void, Never>] = []
            if state.running.isEmpty { swap(&idleWaiters, &state.idleWaiters) }
            return (slotWaiter, idleWaiters, turns)
        }
        turns.forEach { $0.resume(returning: .run) }
        slotWaiter?.resume()
        idleWaiters.forEach { $0.resume() }
        changed?()
    }

    /// Whether the entry is running (or acknowledging) here.
    func isRunning(_ entryID: String) -> Bool { state.withLock { $0.running[entryID] != nil } }

    /// The running and acknowledging jobs, by entry ID.
    var running: [String: Running] { state.withLock { $0.running } }

    /// Waits until a job may be taken, and returns how many may be taken now (at least one).
    ///
    /// Only the read loop starts jobs, but jobs that end while it reads raise the count of
    /// acknowledgements on their way; so the count is taken here, in one step with the wait,
    /// and never read again separately (an `XREADGROUP COUNT 0` would read the whole stream).
    func waitForFreeSlots() async -> Int {
        while true {
            let free = state.withLock { state in
                state.followRate(cap: readAheadCap, now: .now)
                return state.hasFreeSlot(limit: limit) ? state.room(limit: limit) : 0
            }
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

    /// Cancels every running job's task (the shutdown grace is over, or the worker's task was
    /// cancelled), and hands back those waiting for a handler slot.
    func cancelAll() {
        handBackWaiting()
        state.withLock { $0.running }.values.forEach { $0.task.cancel() }
    }
}
