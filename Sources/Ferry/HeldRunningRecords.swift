import Synchronization

/// The running records (``ControlChannel/RunningRecord``) of a worker's jobs, held back for a
/// short while in case the job's outcome comes first: an acknowledgement then takes its job's
/// record (``take(_:)``) and `ack.lua` writes both in one step (one status write, and a quick
/// success packed: data format 3), where writing the record first costs Redis a status hash
/// and an index move more. A record still here at its deadline goes to the write batcher
/// (`release`), so a `running` status shows at most ``ControlChannel/runningRecordHold`` late.
///
/// Holding records here rather than holding the batcher's flush back means no other write
/// waits for them: acknowledgements, whose round trip frees the worker's slots, go at once.
///
/// A job's writes must land in the order it made them (``ControlChannel/Write``): its record
/// before its progress, a retry or a dead letter. So any write other than an outcome that
/// takes its record goes behind the records of the jobs it is about (``releasing(_:then:)``):
/// those are released and the write enqueued in one step under this lock, which the
/// deadline's release takes too.
final class HeldRunningRecords: Sendable {
    private struct State {
        /// By entry ID.
        var records: [String: ControlChannel.RunningRecord] = [:]
        /// When each record held goes, in the order they came (their deadlines in order too, as
        /// the hold is one length); those already taken are skipped. From `start` on.
        var deadlines: [(entryID: String, at: ContinuousClock.Instant)] = []
        var start = 0
        /// A task waits for the next deadline.
        var timerRunning = false

        /// Takes the records whose deadline is `now` or past (all with nil), in the order they came.
        mutating func takeDue(at now: ContinuousClock.Instant?) -> [ControlChannel.RunningRecord] {
            var due: [ControlChannel.RunningRecord] = []
            while start < deadlines.count, now.map({ deadlines[start].at <= $0 }) ?? true {
                if let record = records.removeValue(forKey: deadlines[start].entryID) { due.append(record) }
                start += 1
            }
            if start == deadlines.count || start > 1024 {
                deadlines.removeFirst(start)
                start = 0
            }
            return due
        }

        /// The next deadline of a record still held; nil (and the timer ends) when none is.
        mutating func nextDeadline() -> ContinuousClock.Instant? {
            while start < deadlines.count, records[deadlines[start].entryID] == nil { start += 1 }
            guard start < deadlines.count else {
                deadlines.removeAll(keepingCapacity: true)
                start = 0
                timerRunning = false
                return nil
            }
            return deadlines[start].at
        }
    }

    private let state = Mutex(State())
    private let hold: Duration
    /// Sends records to the write batcher; called under this object's lock, so it must only
    /// enqueue (never call back here).
    private let release: @Sendable ([ControlChannel.RunningRecord]) -> Void

    /// - Parameters:
    ///   - hold: how long a record waits for its job's outcome at most.
    ///   - release: enqueues records in the write batcher (a `start_batch.lua` call).
    init(hold: Duration, release: @escaping @Sendable ([ControlChannel.RunningRecord]) -> Void) {
        self.hold = hold
        self.release = release
    }

    /// Holds a read batch's records until their jobs' outcomes take them or ``hold`` passes.
    func add(_ records: [ControlChannel.RunningRecord]) {
        guard !records.isEmpty else { return }
        let deadline = ContinuousClock.now + hold
        let startsTimer = state.withLock { state -> Bool in
            for record in records {
                state.records[record.entryID] = record
                state.deadlines.append((record.entryID, deadline))
            }
            if state.timerRunning { return false }
            state.timerRunning = true
            return true
        }
        if startsTimer {
            Task { await self.releaseAtDeadlines() }
        }
    }

    /// The held record of the entry's job, no longer held: its outcome writes it.
    func take(_ entryID: String) -> ControlChannel.RunningRecord? {
        state.withLock { $0.records.removeValue(forKey: entryID) }
    }

    /// Releases the held records of the entries in `entryIDs` (every held record for nil) to the
    /// batcher, then runs `enqueue` (a write about those entries' jobs, which must land behind
    /// their records), in one step. Other jobs' records stay held: a write orders only its own
    /// job's writes.
    func releasing<T>(_ entryIDs: [String]?, then enqueue: () -> T) -> T {
        state.withLock { state in
            let records = entryIDs.map { $0.compactMap { state.records.removeValue(forKey: $0) } } ?? state.takeDue(at: nil)
            if !records.isEmpty { release(records) }
            return enqueue()
        }
    }

    /// Held records, for tests.
    var count: Int { state.withLock { $0.records.count } }

    private func releaseAtDeadlines() async {
        while let deadline = state.withLock({ $0.nextDeadline() }) {
            try? await Task.sleep(until: deadline, tolerance: .milliseconds(1))
            state.withLock { state in
                let records = state.takeDue(at: .now)
                if !records.isEmpty { release(records) }
            }
        }
    }
}
