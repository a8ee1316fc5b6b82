import Synchronization

/// The in-flight lock of one running job with an idempotency key, as this worker holds it.
///
/// The lock in Redis (`ferry:{Q}:idem:lock:<key>`) lives its time to live past its last renewal
/// (two leases and 2 s), and belongs to one delivery (its token, from `begin.lua`). A worker that cannot renew it (its
/// connection to Redis froze, Redis stalled) must stop the job's handler before the lock can
/// expire, or the delivery that reclaims the entry would run beside it: the *fence*. The fence
/// deadline is one time to live after the renewal was *sent* (Redis set the expiry later than
/// that), less a margin for the handler to die.
final class IdempotencyLock: Sendable {
    /// `ferry:{Q}:idem:lock:<key>`.
    let key: String
    /// This delivery's token, which renewals and `complete.lua` check.
    let token: String
    private let ttl: Duration
    private let deadline: Mutex<ContinuousClock.Instant>

    /// How long before the lock could expire the handler is stopped: a fifth of its time to
    /// live, at most 2 s (plenty for a SIGKILL to land; a Swift handler must honour cancellation
    /// soon).
    static func margin(ttl: Duration) -> Duration { min(ttl / 5, .seconds(2)) }

    /// A lock taken with time to live `ttl` by a request sent at `sentAt`.
    init(key: String, token: String, ttl: Duration, sentAt: ContinuousClock.Instant) {
        self.key = key
        self.token = token
        self.ttl = ttl
        deadline = Mutex(sentAt + ttl - Self.margin(ttl: ttl))
    }

    /// When the handler must have stopped unless the lock is renewed first.
    var fenceDeadline: ContinuousClock.Instant { deadline.withLock { $0 } }

    /// Redis renewed the lock with a request sent at `sentAt`.
    func renewed(sentAt: ContinuousClock.Instant) {
        deadline.withLock { $0 = max($0, sentAt + ttl - Self.margin(ttl: ttl)) }
    }

    /// The lock is no longer this delivery's (it expired and another took it): stop at once.
    func lost() {
        deadline.withLock { $0 = .now }
    }

    /// Returns when the fence deadline has passed, renewals included; throws when cancelled.
    func waitForFence() async throws {
        while true {
            let deadline = fenceDeadline
            if ContinuousClock.now >= deadline { return }
            try await Task.sleep(until: deadline)
        }
    }
}

/// Thrown into a guarded job when its idempotency lock could not be renewed in time: the handler
/// was stopped so that no other delivery of the key runs beside it.
struct IdempotencyLockLost: Error, CustomStringConvertible {
    var description: String {
        "the idempotency lock could not be renewed before it would expire; the handler was stopped so no other delivery runs beside it"
    }
}
