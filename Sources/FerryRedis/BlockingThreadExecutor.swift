import CHiredis
import Foundation

/// A serial executor that runs every job on one dedicated OS thread, which may block.
///
/// hiredis's blocking API parks the calling thread in `read(2)` until Redis answers or the socket
/// timeout fires. Doing that on Swift's cooperative pool (one thread per core, two here) would stall
/// every other task in the process, so each ``RedisConnection`` pins its actor to one of these.
/// The thread lives until ``shutdown()``: it drains the jobs already queued, then exits.
final class BlockingThreadExecutor: SerialExecutor, @unchecked Sendable {
    // @unchecked: `pending` and `stopping` are only touched while `condition` is locked.
    private let condition = NSCondition()
    private var pending: [UnownedJob] = []
    private var stopping = false

    /// Starts the thread at once; `name` (15 bytes at most) shows in debuggers and `top -H`.
    init(name: String) {
        Thread { [self] in
            ferry_set_thread_name(name)
            self.runLoop()
        }.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        pending.append(job)
        condition.signal()
        condition.unlock()
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Lets the thread exit once the jobs queued so far have run. Safe from any thread, also
    /// from a job running on this executor.
    func shutdown() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func runLoop() {
        var batch: [UnownedJob] = []
        while true {
            condition.lock()
            while pending.isEmpty && !stopping {
                condition.wait()
            }
            if pending.isEmpty && stopping {
                condition.unlock()
                return
            }
            swap(&batch, &pending)
            condition.unlock()
            for job in batch {
                job.runSynchronously(on: asUnownedSerialExecutor())
            }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
