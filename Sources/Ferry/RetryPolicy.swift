import Foundation

/// When a failed job is tried again, and when it is given up: Pub/Sub's retry policy, with the
/// backoff strategies of Sidekiq, BullMQ and asynq.
///
/// The delay before delivery `n + 1` is ``strategy`` applied to ``minimumBackoff`` (or a job's
/// own `backoff_ms`), capped at ``maximumBackoff``, then jittered so that jobs failing together
/// (a downstream outage) do not come back in step. The worker parks the job until then
/// (docs/design.md, later deliveries); the due time is stored, so the jitter may be random.
public struct RetryPolicy: Sendable, Hashable {
    /// How the delay grows with the attempts that failed.
    public enum Backoff: Sendable, Hashable {
        /// `base × factor^(attempt − 1)`: 1 s, 2 s, 4 s, … with factor 2.
        case exponential(factor: Double)
        /// `base` every time.
        case fixed

        /// Exponential with factor 2: the default.
        public static let exponential = Backoff.exponential(factor: 2)
    }

    /// How much of the delay is random.
    public enum Jitter: String, Sendable, Hashable, CaseIterable {
        /// Anywhere from zero to the whole delay (spreads load most; may retry at once).
        case full
        /// Between half and all of the delay: the default.
        case equal
        /// Exactly the delay: predictable, and what a test or a partner's contract asks for.
        case none
    }

    /// Deliveries before a failing job is dead-lettered (Pub/Sub's default: 5).
    public var maxAttempts: Int
    /// The delay before the second delivery (before jitter): the strategy's base.
    public var minimumBackoff: Duration
    /// The cap on the delay, however many attempts failed.
    public var maximumBackoff: Duration
    /// How the delay grows.
    public var strategy: Backoff
    /// How much of it is random.
    public var jitter: Jitter

    /// Pub/Sub's defaults: 5 attempts, backoff from 1 s to 60 s, doubling, equal jitter.
    public init(
        maxAttempts: Int = 5, minimumBackoff: Duration = .seconds(1), maximumBackoff: Duration = .seconds(60),
        strategy: Backoff = .exponential, jitter: Jitter = .equal
    ) {
        self.maxAttempts = maxAttempts
        self.minimumBackoff = minimumBackoff
        self.maximumBackoff = maximumBackoff
        self.strategy = strategy
        self.jitter = jitter
    }

    /// The delay before the delivery that follows delivery `attempt` (1-based).
    ///
    /// - Parameters:
    ///   - base: the job's own `backoff_ms`, which replaces ``minimumBackoff`` as the base (and
    ///     lifts the cap to itself if the cap is lower); nil for the policy's.
    ///   - unit: a number in 0...1 that places the delay within its jitter range; random by default.
    public func backoff(afterAttempt attempt: Int, base: Duration? = nil, unit: Double = Double.random(in: 0...1)) -> Duration {
        let start = base ?? minimumBackoff
        let cap = max(maximumBackoff, start)
        let grown: Duration
        switch strategy {
        case .fixed:
            grown = start
        case .exponential(let factor):
            // Computed in seconds as a Double, then capped: factor^n overflows no integer.
            let seconds = Self.seconds(start) * Foundation.pow(max(factor, 1), Double(min(max(attempt - 1, 0), 1000)))
            grown = seconds >= Self.seconds(cap) ? cap : .nanoseconds(Int64(seconds * 1e9))
        }
        switch jitter {
        case .none: return grown
        case .full: return grown * min(max(unit, 0), 1)
        case .equal: return grown * (0.5 + 0.5 * min(max(unit, 0), 1))
        }
    }

    private static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
