/// When a failed job is tried again, and when it is given up: Pub/Sub's retry policy.
///
/// The delay before delivery `n + 1` grows exponentially from ``minimumBackoff``, is capped at
/// ``maximumBackoff``, and is jittered between half and all of that so that jobs failing
/// together (a downstream outage) do not come back in step.
///
/// The jitter is derived from the entry ID and the attempt rather than drawn at random: every
/// worker of a group computes the same delay for the same delivery, which is what lets any of
/// them decide when an idle entry is due (see `Worker`'s reclaim) without storing retry times.
public struct RetryPolicy: Sendable, Hashable {
    /// Deliveries before a failing job is dead-lettered (Pub/Sub's default: 5).
    public var maxAttempts: Int
    /// The delay before the second delivery (before jitter).
    public var minimumBackoff: Duration
    /// The cap on the delay, however many attempts failed.
    public var maximumBackoff: Duration

    /// Pub/Sub's defaults: 5 attempts, backoff from 1 s to 60 s.
    public init(maxAttempts: Int = 5, minimumBackoff: Duration = .seconds(1), maximumBackoff: Duration = .seconds(60)) {
        self.maxAttempts = maxAttempts
        self.minimumBackoff = minimumBackoff
        self.maximumBackoff = maximumBackoff
    }

    /// The delay before the delivery that follows delivery `attempt` (1-based) of entry `entryID`.
    public func backoff(afterAttempt attempt: Int, entryID: String) -> Duration {
        let exponential = minimumBackoff * (1 << min(max(attempt - 1, 0), 30))
        let capped = min(exponential, maximumBackoff)
        let jittered = capped * (0.5 + 0.5 * Self.unitJitter(entryID, attempt))
        return max(jittered, minimumBackoff)
    }

    /// A number in 0...1 that is the same in every process for the same delivery (FNV-1a:
    /// Swift's `Hasher` is seeded per process).
    static func unitJitter(_ entryID: String, _ attempt: Int) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(entryID)#\(attempt)".utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        hash = (hash ^ (hash >> 33)) &* 0xff51_afd7_ed55_8ccd  // spreads the last bytes into the high bits
        hash ^= hash >> 33
        return Double(hash >> 11) / Double(1 << 53)
    }
}
