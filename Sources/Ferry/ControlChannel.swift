import FerryRedis

/// The control side of one worker run: the connection for acknowledgements, claims, scripts and
/// status writes, with the group commit that batches acknowledgements and status writes on it.
///
/// Made once per ``Worker/run()`` so the batcher always uses that run's connection.
struct ControlChannel: Sendable {
    let connection: RedisConnection
    /// An entry to acknowledge, and the status to record with it, if any.
    struct Acknowledgement: Sendable {
        /// The job status an acknowledgement records. A class, as ``RunningRecord`` is: an
        /// acknowledgement is copied through the batcher and its flush, and a copy of a reference
        /// is one count where its strings were one each.
        final class Status: Sendable {
            let jobID: String
            /// `succeeded`, or `cancelled` for a job cancelled on request.
            let outcome: JobState

            init(jobID: String, outcome: JobState) {
                self.jobID = jobID
                self.outcome = outcome
            }
        }
        let entryID: String
        var status: Status?
        /// How long the handler ran, for the status's `processing_ms`.
        var processingMilliseconds: Int64 = 0
        /// The job's running record, when it had not been written yet: still held for the
        /// outcome (``HeldRunningRecords``), or waiting in the same flush (set by the flush).
        /// Written with the outcome instead.
        var start: RunningRecord?
    }

    /// A delivered job to record as `running` in its group (`start_batch.lua`). A class, never
    /// changed once made: a record is copied from its batch into the held records, the flush and
    /// its job's acknowledgement, and a copy of a reference is one count where its four strings
    /// were one each (docs/design.md, "Reference counting a job").
    final class RunningRecord: Sendable {
        let jobID: String
        let type: String
        let entryID: String
        let attempt: Int
        /// When its read batch started, in milliseconds since the epoch: its `started_at`.
        let startedAt: Int64
        /// Its flow-control key ("" for none), kept in its status so a listing by key (an API
        /// caller scoped to its key) finds a job whose status is first written when it starts.
        let key: String

        init(jobID: String, type: String, entryID: String, attempt: Int, startedAt: Int64, key: String = "") {
            self.jobID = jobID
            self.type = type
            self.entryID = entryID
            self.attempt = attempt
            self.startedAt = startedAt
            self.key = key
        }
    }

    /// The concurrency slots a finished job releases and the ordering key's turn it passes on
    /// (``Worker/release(_:_:control:)``).
    struct SlotRelease: Sendable {
        let slots: [Worker.LimitSlot]
        let turn: Worker.OrderingTurn?
    }

    /// A write that waits for the next flush.
    ///
    /// Every write of a job's state goes through this one batcher, so a job's writes land in
    /// the order they were made: its `running` record, then its progress, then the transition
    /// that ends the attempt (a retry, a dead letter, the idempotency guard's scripts, the
    /// acknowledgement that records `succeeded`). A `running` record landing after the outcome
    /// would contradict it and clear the hash's expiry. Each flush is one pipeline: status
    /// commands and transitions in the order they were submitted, then one `ack.lua` call for
    /// every acknowledgement in it, then one `release.lua` call for every job's limit slots (a
    /// job releases after its outcome, so a waiting job never starts while its slot's holder
    /// still shows running).
    enum Write: Sendable {
        /// Status commands; failures are logged and never change a job's outcome.
        case status([RedisCommand])
        /// A transition script whose reply its caller awaits.
        case transition(RedisCommand)
        /// Running records no outcome took while they were held (``HeldRunningRecords``):
        /// `start_batch.lua`, built at the flush. A record whose job's acknowledgement is in
        /// the same flush is still written with it instead, one status write and one index
        /// move where there were two each. The reply is `start_batch.lua`'s.
        case start([RunningRecord])
        case acknowledgement(Acknowledgement)
        /// A finished job's limit slots; the reply is `release.lua`'s.
        case release(SlotRelease)

        /// Whether it is ``start(_:)``.
        var isStart: Bool {
            if case .start = self { return true }
            return false
        }
    }

    /// What a flushed ``Write`` came to.
    enum Outcome: Sendable {
        /// Status commands were sent (their failures are only logged).
        case written
        /// An acknowledgement: true when acknowledged, false when another consumer owns the
        /// entry, nil when the call failed.
        case acknowledged(Bool?)
        /// A transition's reply, or the failure that kept it from running.
        case replied(Result<RedisReply, RedisError>)
    }

    /// Flushes ``Write``s, one ``Outcome`` each.
    let writes: GroupCommit<Write, Outcome>
    /// Running records waiting for their jobs' outcomes (``enqueueStart(_:)``).
    let heldRecords: HeldRunningRecords
    /// The read loop's read that the next flush of ``writes`` carries, if it waits for one.
    let carriedRead: CarriedRead

    /// - Parameters:
    ///   - carriedRead: the read that `writes`' flushes take (``CarriedRead/take()``).
    ///   - startReplies: hears `start_batch.lua`'s reply to each write of running records.
    init(
        connection: RedisConnection, writes: GroupCommit<Write, Outcome>, carriedRead: CarriedRead,
        startReplies: @escaping @Sendable (Result<RedisReply, RedisError>) -> Void
    ) {
        self.connection = connection
        self.writes = writes
        self.carriedRead = carriedRead
        heldRecords = HeldRunningRecords(hold: Self.runningRecordHold) { records in
            writes.enqueue(.start(records)) { outcome in
                guard case .replied(let result) = outcome else { return }
                startReplies(result)
            }
        }
    }

    /// Enqueues `write` behind the held running records of the entries in `entryIDs` (every
    /// held record for nil): a job's later writes never land before its record.
    private func enqueue(
        _ write: Write, about entryIDs: [String]?, then: (@Sendable (Outcome) -> Void)? = nil
    ) {
        heldRecords.releasing(entryIDs) { writes.enqueue(write, then: then) }
    }

    /// ``enqueue(_:about:then:)``, waiting for the write's outcome.
    private func submit(_ write: Write, about entryIDs: [String]?) async -> Outcome {
        await withCheckedContinuation { done in enqueue(write, about: entryIDs) { done.resume(returning: $0) } }
    }

    /// Adds status commands to the next flush without waiting for it. `entryIDs`: the entries
    /// whose jobs the commands are about (nil for any), whose running records go first.
    func enqueueStatus(_ commands: [RedisCommand], about entryIDs: [String]?) {
        enqueue(.status(commands), about: entryIDs)
    }

    /// Returns once the commands, and every write enqueued before them, are flushed.
    /// `entryIDs` as for ``enqueueStatus(_:about:)``.
    func writeStatus(_ commands: [RedisCommand], about entryIDs: [String]?) async {
        _ = await submit(.status(commands), about: entryIDs)
    }

    /// Runs a transition script in the next flush, after every write submitted before it, and
    /// returns its reply. `entryIDs`: the entries whose jobs it moves (nil for any), whose
    /// running records go first.
    func transition(
        _ script: RedisScript, keys: [RedisArgument], arguments: [RedisArgument], about entryIDs: [String]?
    ) async throws(RedisError) -> RedisReply {
        let write = Write.transition(script.command(keys: keys, arguments: arguments))
        guard case .replied(let result) = await submit(write, about: entryIDs) else {
            throw RedisError.server("ERR the write batcher gave no reply for a transition")
        }
        return try result.get()
    }

    /// How long a running record waits for its job's outcome (``HeldRunningRecords``): a job
    /// that ends sooner has its record written with its outcome, one status write instead of
    /// two (and a quick success packed), and a worker reading one or two jobs at a time sends
    /// one flush for both. Long enough for a read batch of hundreds of quick jobs to run on a
    /// loaded machine; no other write waits for it. A `running` status shows at most this late.
    static let runningRecordHold: Duration = .milliseconds(20)

    /// Records a read batch's jobs as running: held for their outcomes, then written
    /// (``HeldRunningRecords``, ``runningRecordHold``); `start_batch.lua`'s replies go to the
    /// channel's `startReplies`.
    func enqueueStart(_ records: [RunningRecord]) {
        heldRecords.add(records)
    }

    /// The acknowledgement with its job's held running record, which its outcome writes.
    private func withRecord(_ acknowledgement: Acknowledgement) -> Acknowledgement {
        guard acknowledgement.status != nil, acknowledgement.start == nil,
            let record = heldRecords.take(acknowledgement.entryID)
        else { return acknowledgement }
        var acknowledgement = acknowledgement
        acknowledgement.start = record
        return acknowledgement
    }

    /// Releases limit slots in the next flush without waiting; `then` gets `release.lua`'s reply.
    func enqueueRelease(_ release: SlotRelease, then: @escaping @Sendable (Result<RedisReply, RedisError>) -> Void) {
        writes.enqueue(.release(release)) { outcome in
            guard case .replied(let result) = outcome else { return }
            then(result)
        }
    }

    /// Acknowledges in the next flush and waits for the outcome (see ``writes``).
    func acknowledge(_ acknowledgement: Acknowledgement) async -> Bool? {
        guard case .acknowledged(let acknowledged) = await writes.submit(.acknowledgement(withRecord(acknowledgement)))
        else { return nil }
        return acknowledged
    }

    /// Acknowledges in the next flush without waiting; `then` gets the outcome (see ``writes``).
    func enqueueAcknowledgement(_ acknowledgement: Acknowledgement, then: @escaping @Sendable (Bool?) -> Void) {
        writes.enqueue(.acknowledgement(withRecord(acknowledgement))) { outcome in
            guard case .acknowledged(let acknowledged) = outcome else { return then(nil) }
            then(acknowledged)
        }
    }

    @discardableResult
    func send(_ command: RedisCommand, timeout: Duration? = nil) async throws(RedisError) -> RedisReply {
        try await connection.send(command, timeout: timeout)
    }

    @discardableResult
    func run(_ script: RedisScript, keys: [RedisArgument], arguments: [RedisArgument]) async throws(RedisError) -> RedisReply {
        try await connection.run(script, keys: keys, arguments: arguments)
    }

    func pipeline(_ commands: [RedisCommand]) async throws(RedisError) -> [RedisReply] {
        try await connection.pipeline(commands)
    }
}
