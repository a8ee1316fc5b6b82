/// Where a job is in one consumer group, as its status hash (`state`) and `ferry job status`
/// say it: the documented set of strings on the wire (docs/wire-format.md).
///
/// Every change of state is one transition script (docs/design.md, the job store); the scripts'
/// shared `set_status` refuses a move this table does not allow for the same entry (a test keeps
/// its copy of the table equal to ``successors``).
public enum JobState: String, Sendable, Hashable, CaseIterable, Codable {
    /// To be delivered later (`deliver_at`): in the queue's due index, not yet in the stream, or
    /// an entry its group read early, parked in the group's later deliveries until then.
    case scheduled
    /// Published, waiting for a worker of the group.
    case queued
    /// A worker's handler runs it.
    case running
    /// Over a rate or concurrency limit (`waiting_for` names it): parked in its group's later
    /// deliveries until it could pass (`next_attempt_at`), spending no attempt.
    case waiting
    /// An attempt failed; it comes back after `next_attempt_at`.
    case retrying
    /// An attempt ended without an outcome (its worker shut down mid-job); it runs again after
    /// the lease.
    case failed
    /// Its handler succeeded and the entry was acknowledged, or its idempotency key had already
    /// completed.
    case succeeded
    /// In the dead-letter stream, with its reason.
    case dead
    /// Cancelled on request (`ferry job cancel`) before or while it ran.
    case cancelled
    /// Its entry was deleted from the stream (`XDEL`, `XTRIM`) before it finished.
    case deleted

    /// Whether the job is done with in its group: its status then expires.
    public var isTerminal: Bool {
        switch self {
        case .succeeded, .dead, .cancelled, .deleted: true
        case .scheduled, .queued, .waiting, .running, .retrying, .failed: false
        }
    }

    /// The states a job may move to from this one. A terminal job moves nowhere, except a dead
    /// one that is redriven and a cancelled one that is retried (`queued` again); a running job may be reported running again (a
    /// redelivery after a lost worker); a scheduled one becomes `queued` when it is due, and a
    /// queued one `scheduled` when its group reads it before its `deliver_at`; a job over a
    /// limit waits (`waiting`) whenever it would otherwise start, again while still over it.
    public var successors: Set<JobState> {
        switch self {
        case .scheduled: [.queued, .waiting, .running, .succeeded, .dead, .cancelled, .deleted]
        case .queued: [.scheduled, .waiting, .running, .succeeded, .dead, .cancelled, .deleted]
        case .waiting: [.waiting, .running, .succeeded, .dead, .cancelled, .deleted]
        case .retrying, .failed: [.waiting, .running, .succeeded, .dead, .cancelled, .deleted]
        case .running: [.running, .waiting, .retrying, .failed, .succeeded, .dead, .cancelled, .deleted]
        case .dead, .cancelled: [.queued]
        case .succeeded, .deleted: []
        }
    }

    /// Whether moving from this state to `next` is allowed.
    public func mayMove(to next: JobState) -> Bool { successors.contains(next) }
}
