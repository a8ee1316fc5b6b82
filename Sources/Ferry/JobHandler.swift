import FerryRedis

/// Runs jobs of one or more types. Return to acknowledge the job; throw to have it delivered
/// again after a backoff; throw ``PermanentJobError`` to dead-letter it at once, or
/// ``JobSnooze`` to run it later without spending an attempt.
///
/// Handlers run concurrently (up to the worker's concurrency) and may see a job more than once:
/// delivery is at least once, so side effects should be idempotent or guarded.
public protocol JobHandler: Sendable {
    /// Runs one delivery. Cancellation means shutdown, a job timeout or `ferry job cancel`: stop soon.
    func handle(_ job: Job) async throws
}

/// A handler written as a closure: `worker.handlers["send"] = JobHandlerClosure { job in ... }`.
public struct JobHandlerClosure: JobHandler {
    private let body: @Sendable (Job) async throws -> Void

    /// Wraps `body`, which follows the ``JobHandler`` contract.
    public init(_ body: @escaping @Sendable (Job) async throws -> Void) {
        self.body = body
    }

    public func handle(_ job: Job) async throws {
        try await body(job)
    }
}

/// Thrown by a handler when retrying cannot help (a payload that can never be processed): the
/// job goes to the dead-letter stream at once with this message as its reason.
public struct PermanentJobError: Error, Sendable, CustomStringConvertible {
    /// Why the job can never succeed: the dead-letter reason.
    public var message: String
    /// The dead letter's `dead_letter.error_class`: `permanent_failure` unless the thrower names
    /// a class of its own (the worker's `payload_missing`, say), which dashboards can count.
    public var errorClass: String

    /// `message` becomes the dead-letter entry's `dead_letter.error`.
    public init(_ message: String, errorClass: String = "permanent_failure") {
        self.message = message
        self.errorClass = errorClass
    }

    public var description: String { message }
}

/// A failure that names its own class and may ask for a later retry: the worker reports
/// ``errorClass`` in logs and the job status instead of the Swift type name, and waits at least
/// ``retryAfter`` (an HTTP `Retry-After`) as well as the retry policy's backoff.
public protocol RetryableJobError: Error {
    /// Short and stable, for grouping failures: `http_503`, `curl_7`.
    var errorClass: String { get }
    /// The earliest time to try again, from now; nil leaves it to the backoff.
    var retryAfter: Duration? { get }
}

extension RetryableJobError {
    /// No earliest time: the retry policy's backoff decides.
    public var retryAfter: Duration? { nil }
}

/// Thrown by a handler (or middleware) to run the job again later without spending an attempt:
/// the job is not ready (a file still uploading, a partner's rate limit, an approval pending).
/// The worker parks it in its group's later deliveries for ``delay`` and acknowledges nothing;
/// its status says `retrying` with `error_class` `snoozed`. Snoozes are not counted against
/// `max_attempts`, so a handler that always snoozes keeps its job forever: give up on your own
/// terms (a deadline in the payload, then ``PermanentJobError``).
public struct JobSnooze: Error, Sendable, CustomStringConvertible {
    /// How long from now (Redis's clock) until the job runs again.
    public var delay: Duration
    /// Why, for the status (`last_error`) and logs.
    public var reason: String

    /// Snoozes for `delay`; `reason` shows in `ferry job status`.
    public init(for delay: Duration, reason: String = "snoozed by the handler") {
        self.delay = delay
        self.reason = reason
    }

    public var description: String { "snoozed for \(delay.milliseconds) ms: \(reason)" }
}

/// A handler ran longer than its job timeout; it was cancelled, and the job is retried.
public struct JobTimeoutError: Error, Sendable, CustomStringConvertible {
    /// The limit the job ran past (the job's `timeout_ms`, else the worker's).
    public var timeout: Duration

    /// Made by the worker when it cancels a handler at its timeout.
    public init(timeout: Duration) {
        self.timeout = timeout
    }

    public var description: String { "the job ran longer than its timeout of \(timeout.milliseconds) ms and was cancelled" }
}

/// A job as a handler receives it.
public struct Job: Sendable {
    /// The producer's `job_id`, or the stream entry ID.
    public let id: String
    /// The stream entry ID: what acknowledgements and `ferry pending` refer to.
    public let entryID: String
    /// The queue the job came from.
    public let queue: QueueName
    /// The consumer group (subscription) this delivery belongs to.
    public let group: String
    /// 1 on first delivery; grows with each redelivery (after a failure or an expired lease).
    public let deliveryAttempt: Int
    /// Everything the producer wrote, decoded; a payload by reference is fetched into `data`.
    public internal(set) var message: JobMessage
    /// Writes progress to the job's status hash; set by the worker.
    var progressReporter: @Sendable (Int, String?) async -> Void = { _, _ in }
    /// The workflow this job is a step of, with its dependencies' results; nil for a job of its own.
    public internal(set) var workflow: WorkflowContext? = nil

    /// Reports how far the job has come (0-100) and, optionally, what it is doing, in the job's
    /// status hash, where `ferry job status` shows it. Returns once written (batched with other
    /// jobs' writes): cheap enough for a few calls per job, not for one per item of a long loop.
    public func reportProgress(_ percent: Int, stage: String? = nil) async {
        await progressReporter(percent, stage)
    }

    /// The job's type, which chose this handler.
    public var type: String { message.type }
    /// The payload as published: any bytes, JSON by convention.
    public var data: [UInt8] { message.data }
    /// The producer's `attr.*` fields, like Pub/Sub message attributes.
    public var attributes: [String: String] { message.attributes }
}

/// Code that runs around every job's handler: logging, metrics, tracing, limits. A middleware
/// calls `next` to run the rest of the chain and the handler (or does not, to skip the job as
/// succeeded; or throws, which fails the delivery as the handler's error would), so behaviour
/// around a job plugs in here instead of being written into the worker's code path.
///
/// The first middleware given to a ``Worker`` is the outermost.
public protocol JobMiddleware: Sendable {
    /// Handles one delivery; `next` runs the rest of the chain and the handler.
    func handle(_ job: Job, next: @Sendable (Job) async throws -> Void) async throws
}

/// A handler wrapped in middleware, outermost first: what the worker runs when it has any.
struct MiddlewareChain: JobHandler {
    let handler: any JobHandler
    let middleware: [any JobMiddleware]

    func handle(_ job: Job) async throws {
        try await run(job, from: 0)
    }

    private func run(_ job: Job, from index: Int) async throws {
        guard index < middleware.count else { return try await handler.handle(job) }
        try await middleware[index].handle(job) { job in try await run(job, from: index + 1) }
    }
}
