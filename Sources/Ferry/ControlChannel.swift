import FerryRedis

/// The control side of one worker run: the connection for acknowledgements, claims, scripts and
/// status writes, with the group commit that batches acknowledgements and status writes on it.
///
/// Made once per ``Worker/run()`` so the batcher always uses that run's connection.
struct ControlChannel: Sendable {
    let connection: RedisConnection
    /// An entry to acknowledge, and the status to record with it, if any.
    struct Acknowledgement: Sendable {
        /// The job status an acknowledgement records.
        struct Status: Sendable {
            let key: String
            let jobID: String
            /// `succeeded`, or `cancelled` for a job cancelled on request.
            let outcome: JobState
        }
        let entryID: String
        var status: Status?
        /// How long the handler ran, for the status's `processing_ms`.
        var processingMilliseconds: Int64 = 0
    }

    /// A write that waits for the next flush.
    ///
    /// Status writes and acknowledgements share one batcher so that a job's writes land in the
    /// order they were made: its `running` record, then its progress, then the acknowledgement
    /// that records `succeeded` and sets the hash's expiry. (A `running` record landing after the
    /// success would clear that expiry and leave the hash forever.) Each flush is one pipeline:
    /// the status commands in order, then one `ack.lua` call for every acknowledgement in it.
    enum Write: Sendable {
        /// Status-hash commands; failures are logged and never change a job's outcome.
        case status([RedisCommand])
        case acknowledgement(Acknowledgement)
    }

    /// Flushes ``Write``s; the outcome of an acknowledgement is true when acknowledged, false
    /// when another consumer owns the entry, nil when the call failed (and nil for status writes).
    let writes: GroupCommit<Write, Bool?>

    /// Adds status commands to the next flush without waiting for it.
    func enqueueStatus(_ commands: [RedisCommand]) {
        writes.enqueue(.status(commands))
    }

    /// Returns once the commands, and every write enqueued before them, are flushed.
    func writeStatus(_ commands: [RedisCommand]) async {
        _ = await writes.submit(.status(commands))
    }

    /// Acknowledges in the next flush and waits for the outcome (see ``writes``).
    func acknowledge(_ acknowledgement: Acknowledgement) async -> Bool? {
        await writes.submit(.acknowledgement(acknowledgement))
    }

    /// Acknowledges in the next flush without waiting; `then` gets the outcome (see ``writes``).
    func enqueueAcknowledgement(_ acknowledgement: Acknowledgement, then: @escaping @Sendable (Bool?) -> Void) {
        writes.enqueue(.acknowledgement(acknowledgement), then: then)
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
