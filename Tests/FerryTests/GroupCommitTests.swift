import FerryTestSupport
import Synchronization
import Testing

@testable import Ferry

/// The worker's write batcher: items in order, one flush for those that came together, and a
/// held item's batch waiting (briefly) for the items that may make it unnecessary.
@Suite("Group commit")
struct GroupCommitTests {
    /// Records each flushed batch.
    final class Flushes: Sendable {
        let batches = Mutex<[[Int]]>([])
        var all: [[Int]] { batches.withLock { $0 } }

        /// A batcher whose flushes are recorded here, each item its own outcome.
        func commit() -> GroupCommit<Int, Int> {
            GroupCommit { items in
                self.batches.withLock { $0.append(items) }
                return items
            }
        }
    }

    @Test("a held item's batch waits for the items that come within the hold, and goes when it ends")
    func heldItemWaitsForLaterItems() async throws {
        let flushes = Flushes()
        let commit = flushes.commit()
        let clock = ContinuousClock()
        let start = clock.now
        commit.enqueue(1, hold: .seconds(2))
        commit.enqueue(2)
        #expect(await commit.submit(3) == 3)
        #expect(flushes.all == [[1, 2, 3]], "one flush, in order")
        #expect(clock.now - start >= .seconds(2), "not before the hold ended")

        // Without a hold, the first item goes at once.
        #expect(await commit.submit(4) == 4)
        #expect(flushes.all.last == [4])
    }

    @Test("items that keep coming cannot hold a batch past the first held item's hold")
    func holdDoesNotStretch() async throws {
        let flushes = Flushes()
        let commit = flushes.commit()
        let clock = ContinuousClock()
        let start = clock.now
        commit.enqueue(1, hold: .seconds(1))
        commit.enqueue(2, hold: .seconds(20))
        #expect(await eventually { !flushes.all.isEmpty })
        #expect(flushes.all.first == [1, 2])
        #expect(clock.now - start < .seconds(10), "went at the first item's hold (1 s), not the later one's (20 s)")
    }

    @Test("endHold sends a held batch at once, whether or not its flush is already waiting")
    func endHoldSendsAtOnce() async throws {
        let flushes = Flushes()
        let commit = flushes.commit()
        let clock = ContinuousClock()
        let start = clock.now
        commit.enqueue(1, hold: .seconds(60))
        commit.endHold()
        #expect(await commit.submit(2) == 2)
        commit.enqueue(3, hold: .seconds(60))
        try await Task.sleep(for: .milliseconds(200))  // the flush is waiting for the hold, or about to
        commit.endHold()
        #expect(await commit.submit(4) == 4)
        #expect(flushes.all.flatMap { $0 } == [1, 2, 3, 4])
        #expect(clock.now - start < .seconds(30), "neither batch waited for its 60 s hold")
    }
}
