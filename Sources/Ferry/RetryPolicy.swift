/// When a failed job is tried again, and when it is given up: Pub/Sub's retry policy.
///
/// The delay before delivery `n + 1` grows exponentially from ``minimumBackoff``, is capped at
/// ``maximumBackoff``, and is jittered between half and all of that so that jobs failing
/// together (a downstream outage) do not come back in step.
public struct RetryPolicy: Sendable, Hashable {
    /// Deliveries before a failing job is dead-lettered (Pub/Sub's default: 5).
    public var maxAttempts: Int
    public var minimumBackoff: Duration
    public var maximumBackoff: Duration

    public init(maxAttempts: Int = 5, minimumBackoff: Duration = .seconds(1), maximumBackoff: Duration = .seconds(60)) {
        self.maxAttempts = maxAttempts
        self.minimumBackoff = minimumBackoff
        self.maximumBackoff = maximumBackoff
    }

    /// The delay before the delivery that follows failed delivery `attempt` (1-based).
    public func backoff(afterAttempt attempt: Int) -> Duration {
        let exponential = minimumBackoff * (1 << min(max(attempt - 1, 0), 30))
        let capped = min(exponential, maximumBackoff)
        let jittered = capped * Double.random(in: 0.5...1.0)
        return max(jittered, minimumBackoff)
    }
}
