import FerryRedis
import Synchronization

/// Acknowledges entries in batches by group commit: the first acknowledgement starts a flush at
/// once; those that arrive while it is in flight go together in the next one (`ack.lua` takes
/// any number of IDs). A lone job waits for no timer, and a busy worker sends one round trip for
/// many jobs instead of one each.
final class AckBatcher: Sendable {
    private let state = Mutex<(waiting: [(id: String, done: CheckedContinuation<Bool?, Never>)], flushing: Bool)>(([], false))
    private let flushBody: @Sendable ([String]) async -> Set<String>?

    /// - Parameter flush: acknowledges the IDs and returns those this consumer no longer owned,
    ///   or nil when the call failed (nothing is known to be acknowledged then).
    init(flush: @escaping @Sendable ([String]) async -> Set<String>?) {
        self.flushBody = flush
    }

    /// Waits until the entry's batch is flushed. Returns true when acknowledged, false when
    /// another consumer owns the entry now, nil when the flush failed.
    func acknowledge(_ id: String) async -> Bool? {
        await withCheckedContinuation { done in
            let startsFlush = state.withLock { state -> Bool in
                state.waiting.append((id, done))
                if state.flushing { return false }
                state.flushing = true
                return true
            }
            if startsFlush {
                Task { await self.flushUntilEmpty() }
            }
        }
    }

    private func flushUntilEmpty() async {
        while true {
            let batch = state.withLock { state -> [(id: String, done: CheckedContinuation<Bool?, Never>)] in
                let batch = state.waiting
                state.waiting.removeAll()
                if batch.isEmpty { state.flushing = false }
                return batch
            }
            if batch.isEmpty { return }
            let lost = await flushBody(batch.map(\.id))
            for (id, done) in batch {
                done.resume(returning: lost.map { !$0.contains(id) })
            }
        }
    }
}
