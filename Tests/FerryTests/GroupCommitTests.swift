import FerryRedis
import FerryTestSupport
import Synchronization
import Testing

@testable import Ferry

/// The worker's write batcher, and the running records held back for their jobs' outcomes.
@Suite("Group commit")
struct GroupCommitTests {
    /// Records each flushed batch.
    final class Flushes: Sendable {
        let batches = Mutex<[[Int]]>([])
        /// Lets the first flush end (it waits until the test says so).
        let firstMayEnd = Mutex<CheckedContinuation<Void, Never>?>(nil)
        var all: [[Int]] { batches.withLock { $0 } }

        /// A batcher whose flushes are recorded here, each item its own outcome; with
        /// `holdFirst`, the first flush waits for ``endFirst()``.
        func commit(holdFirst: Bool = false) -> GroupCommit<Int, Int> {
            GroupCommit { items in
                let first = self.batches.withLock { batches in
                    batches.append(items)
                    return batches.count == 1
                }
                if first && holdFirst { await withCheckedContinuation { done in self.firstMayEnd.withLock { $0 = done } } }
                return items
            }
        }

        func endFirst() {
            firstMayEnd.withLock { $0 }?.resume()
        }
    }

    @Test("a lone item goes at once; items that come while a flush is in flight go together in the next one, in order")
    func groupsWhatComesDuringAFlush() async throws {
        let flushes = Flushes()
        let commit = flushes.commit(holdFirst: true)
        commit.enqueue(1)
        #expect(await eventually { flushes.firstMayEnd.withLock { $0 != nil } }, "the first item went alone, at once")
        commit.enqueue(2)
        commit.enqueue(3)
        flushes.endFirst()
        #expect(await commit.submit(4) == 4)
        #expect(flushes.all.flatMap { $0 } == [1, 2, 3, 4])
        #expect(flushes.all.first == [1] && flushes.all.dropFirst().first?.starts(with: [2, 3]) == true)
    }

    private static func record(_ entryID: String) -> ControlChannel.RunningRecord {
        ControlChannel.RunningRecord(jobID: entryID, type: "t", entryID: entryID, attempt: 1, startedAt: 0)
    }

    @Test("a held running record goes to its job's outcome, or to the batcher at its deadline, never both")
    func heldRecordsTakenOrReleased() async throws {
        let released = Mutex<[String]>([])
        let held = HeldRunningRecords(hold: .milliseconds(300)) { records in
            released.withLock { $0 += records.map(\.entryID) }
        }
        held.add(["1-0", "1-1", "1-2"].map(Self.record))
        #expect(held.take("1-1")?.jobID == "1-1")
        #expect(held.take("1-1") == nil, "taken once")
        #expect(await eventually { released.withLock { $0 } == ["1-0", "1-2"] }, "the others at the deadline, in order")
        #expect(held.count == 0 && held.take("1-0") == nil)
        held.add([Self.record("2-0")])
        #expect(await eventually { released.withLock { $0.last } == "2-0" }, "a record held after the timer ended gets one")
    }

    @Test(
        "a write about some jobs releases their held records first, in one step, and leaves the others held; a write about any job releases them all"
    )
    func writeBehindHeldRecords() async throws {
        let log = Mutex<[String]>([])
        let held = HeldRunningRecords(hold: .seconds(60)) { records in
            log.withLock { $0 += records.map { "record \($0.entryID)" } }
        }
        held.add(["1-0", "1-1", "1-2", "1-3"].map(Self.record))
        _ = held.take("1-0")
        held.releasing(["1-1", "1-0"]) { log.withLock { $0.append("progress of 1-1") } }
        #expect(log.withLock { $0 } == ["record 1-1", "progress of 1-1"], "1-0 was taken by its outcome")
        #expect(held.count == 2, "the other jobs' records stay held")
        held.releasing(nil) { log.withLock { $0.append("a write about any job") } }
        #expect(log.withLock { $0 }.suffix(3) == ["record 1-2", "record 1-3", "a write about any job"])
        held.releasing(nil) { log.withLock { $0.append("another write") } }
        #expect(log.withLock { $0 }.last == "another write" && held.count == 0, "nothing held, nothing released")
    }
}
