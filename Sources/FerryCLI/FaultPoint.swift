import Ferry
import Foundation

/// A fault point the tests arm with `FERRY_FAULT_KILL_AFTER=succeeded|dead|cancelled`: the
/// worker kills itself (`SIGKILL`, as `kill -9` would) the moment a job reaches that outcome,
/// before it writes anything more. How a real process proves that an outcome and its status land
/// in one step (docs/design.md, the job store); production leaves it unset.
struct KillAfterOutcome: JobEventObserver {
    /// The outcome that kills the worker.
    let outcome: JobEvent.State
    /// The observer the worker would have had otherwise.
    let next: (any JobEventObserver)?

    /// The observer `ferry worker` runs with: `next`, behind the fault point when the
    /// environment arms it.
    static func wrapping(_ next: (any JobEventObserver)?) -> (any JobEventObserver)? {
        guard let armed = ProcessInfo.processInfo.environment["FERRY_FAULT_KILL_AFTER"],
            let outcome = JobEvent.State(rawValue: armed)
        else { return next }
        return KillAfterOutcome(outcome: outcome, next: next)
    }

    func jobFinished(_ event: JobEvent) {
        if event.state == outcome { kill(getpid(), SIGKILL) }
        next?.jobFinished(event)
    }
}
