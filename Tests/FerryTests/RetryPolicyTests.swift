import Ferry
import Testing

@Suite("Retry policy: backoff strategies and jitter")
struct RetryPolicyTests {
    @Test("exponential without jitter: base × factor^(n−1), capped (3 s, 6 s as a partner's 2^n·3 s asks)")
    func exponentialWithoutJitter() {
        let policy = RetryPolicy(
            maxAttempts: 3, minimumBackoff: .seconds(3), maximumBackoff: .seconds(60), strategy: .exponential(factor: 2),
            jitter: .none)
        #expect(policy.backoff(afterAttempt: 1) == .seconds(3))
        #expect(policy.backoff(afterAttempt: 2) == .seconds(6))
        #expect(policy.backoff(afterAttempt: 5) == .seconds(48))
        #expect(policy.backoff(afterAttempt: 6) == .seconds(60), "capped at the maximum")
        #expect(policy.backoff(afterAttempt: 10_000) == .seconds(60), "no overflow however many attempts")
        let tripled = RetryPolicy(
            minimumBackoff: .seconds(1), maximumBackoff: .seconds(600), strategy: .exponential(factor: 3), jitter: .none)
        #expect(tripled.backoff(afterAttempt: 3) == .seconds(9))
    }

    @Test("fixed: the base every time; a job's own backoff_ms replaces the base and lifts a lower cap")
    func fixedAndPerJobBase() {
        let fixed = RetryPolicy(minimumBackoff: .seconds(2), maximumBackoff: .seconds(60), strategy: .fixed, jitter: .none)
        #expect((1...8).map { fixed.backoff(afterAttempt: $0) } == Array(repeating: .seconds(2), count: 8))
        #expect(fixed.backoff(afterAttempt: 4, base: .milliseconds(750)) == .milliseconds(750))
        let exponential = RetryPolicy(minimumBackoff: .seconds(1), maximumBackoff: .seconds(10), jitter: .none)
        #expect(exponential.backoff(afterAttempt: 2, base: .milliseconds(100)) == .milliseconds(200))
        #expect(exponential.backoff(afterAttempt: 1, base: .seconds(30)) == .seconds(30), "a base above the cap is kept")
    }

    @Test("equal jitter lands between half and all of the delay; full between zero and all; both spread")
    func jitterBounds() {
        let equal = RetryPolicy(minimumBackoff: .seconds(1), maximumBackoff: .seconds(60), jitter: .equal)
        #expect(equal.backoff(afterAttempt: 3, unit: 0) == .seconds(2))
        #expect(equal.backoff(afterAttempt: 3, unit: 1) == .seconds(4))
        let full = RetryPolicy(minimumBackoff: .seconds(1), maximumBackoff: .seconds(60), jitter: .full)
        #expect(full.backoff(afterAttempt: 3, unit: 0) == .zero)
        #expect(full.backoff(afterAttempt: 3, unit: 1) == .seconds(4))
        for policy in [equal, full] {
            let delays = (0..<200).map { _ in policy.backoff(afterAttempt: 4) }
            #expect(Set(delays).count > 150, "random jitter spreads jobs that failed together")
            #expect(delays.allSatisfy { $0 <= .seconds(8) && $0 >= (policy.jitter == .equal ? .seconds(4) : .zero) })
        }
    }
}
