import Foundation

/// A job reached a terminal state in a worker: what webhooks (`ferry worker --notify`) and
/// other observers hear about, once per terminal state.
public struct JobEvent: Sendable, Hashable {
    /// The terminal states an event reports.
    public enum State: String, Sendable, Hashable {
        case succeeded, dead, cancelled
    }

    public var jobID: String
    public var entryID: String
    public var queue: QueueName
    public var group: String
    public var state: State
    /// The delivery attempt that ended the job.
    public var attempts: Int
    public var type: String?
    public var errorClass: String?
    public var error: String?
    public var publishedAt: Date?
    public var finishedAt: Date

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
