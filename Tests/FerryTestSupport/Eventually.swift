/// Polls `condition` until it holds or `timeout` passes; a probe that throws counts as "not yet".
///
/// For tests that wait on real processes and a real Redis, where the only honest question is
/// "did it happen within a generous bound", never "how fast was it".
public func eventually(_ timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return (try? await condition()) == true
}
