import Foundation

/// A job reached a terminal state in a worker: what webhooks (`ferry worker --notify`) and
/// other observers hear about, once per terminal state.
public struct JobEvent: Sendable, Hashable {
    /// The terminal states an event reports.
    public enum State: String, Sendable, Hashable {
        case succeeded, dead, cancelled
    }

    /// The producer's `job_id`, or the entry ID: what webhook receivers correlate on.
    public var jobID: String
    /// The stream entry ID of the delivery that ended the job.
    public var entryID: String
    /// The queue the job was published to.
    public var queue: QueueName
    /// The consumer group (subscription) in which it ended; other groups have their own events.
    public var group: String
    /// How it ended.
    public var state: State
    /// The delivery attempt that ended the job.
    public var attempts: Int
    /// The job's type; nil for an entry too malformed to say.
    public var type: String?
    /// For `dead`: the failure's class, as in the dead-letter entry.
    public var errorClass: String?
    /// For `dead`: the last error, at most 4 KiB.
    public var error: String?
    /// When the producer published it, if it said (`published_at`): end-to-end latency.
    public var publishedAt: Date?
    /// When the worker settled it.
    public var finishedAt: Date

    /// Made by the worker; public so observers can be tested with events of their own.
    public init(
        jobID: String, entryID: String, queue: QueueName, group: String, state: State, attempts: Int, type: String? = nil,
        errorClass: String? = nil, error: String? = nil, publishedAt: Date? = nil, finishedAt: Date = Date()
    ) {
        self.jobID = jobID
        self.entryID = entryID
        self.queue = queue
        self.group = group
        self.state = state
        self.attempts = attempts
        self.type = type
        self.errorClass = errorClass
        self.error = error
        self.publishedAt = publishedAt
        self.finishedAt = finishedAt
    }
}

/// Hears about jobs that reached a terminal state. Called on the job's task after the outcome
/// is recorded in Redis: implementations must return at once and do slow work elsewhere, or
/// they hold a worker slot.
public protocol JobEventObserver: Sendable {
    func jobFinished(_ event: JobEvent)
}
