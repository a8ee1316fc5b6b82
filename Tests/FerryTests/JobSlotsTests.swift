import FerryTestSupport
import Synchronization
import Testing

@testable import Ferry

/// The worker's slots with read-ahead (``JobSlots``): jobs taken beyond the concurrency wait in
/// line for a handler slot, first read first, and leave the line at a stop, a pause or a
/// cancel request without one.
@Suite("Job slots")
struct JobSlotsTests {
    /// A gate a job's task waits at until the test opens it.
    final class Gate: Sendable {
        private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
        func wait() async {
            await withCheckedContinuation { waiter in
                let open = state.withLock { state in
                    if !state.open { state.waiters.append(waiter) }
                    return state.open
                }
                if open { waiter.resume() }
            }
        }
        func open() {
            state.withLock { state in
                state.open = true
                defer { state.waiters = [] }
                return state.waiters
            }.forEach { $0.resume() }
        }
    }

    /// What each job's wait for its turn ended with, in the order the turns came.
    final class Turns: Sendable {
        private let seen = Mutex<[(String, JobSlots.Turn)]>([])
        func record(_ entryID: String, _ turn: JobSlots.Turn) { seen.withLock { $0.append((entryID, turn)) } }
        var all: [(String, JobSlots.Turn)] { seen.withLock { $0 } }
    }

    /// Starts a job taken ahead whose task records its turn and, when it runs, waits at `gate`.
    func startAhead(_ slots: JobSlots, _ id: String, _ turns: Turns, gate: Gate? = nil) {
        slots.start(entryID: id, jobID: id, ahead: true) { turn in
            turns.record(id, turn)
            if case .run = turn { await gate?.wait() }
            return .done
        }
    }

    /// Slots for one handler with a read-ahead of 10, the handler slot taken by job "a" until
    /// the gate returned opens.
    func oneSlotTaken() -> (JobSlots, Gate) {
        let slots = JobSlots(limit: 1, readAhead: 10)
        let running = Gate()
        slots.start(entryID: "a", jobID: "a") { _ in
            await running.wait()
            return .done
        }
        return (slots, running)
    }

    @Test("jobs taken ahead run one handler slot at a time, in the order they were read; the slots never exceed the limit")
    func turnsInReadOrder() async throws {
        let (slots, running) = oneSlotTaken()
        let turns = Turns()
        #expect(slots.freeHandlerSlots == 0)
        let gates = (0..<3).map { _ in Gate() }
        for (index, id) in ["b", "c", "d"].enumerated() { startAhead(slots, id, turns, gate: gates[index]) }
        #expect(slots.used == 4)
        #expect(slots.freeHandlerSlots == 0, "jobs in line take the next free slots")
        running.open()
        #expect(await eventually { turns.all.count == 1 })
        #expect(turns.all.map(\.0) == ["b"], "one slot: one job at a time")
        gates[0].open()
        #expect(await eventually { turns.all.count == 2 })
        gates[1].open()
        gates[2].open()
        #expect(await eventually { turns.all.count == 3 && slots.used == 0 })
        #expect(turns.all.map(\.0) == ["b", "c", "d"])
        #expect(turns.all.allSatisfy { if case .run = $0.1 { true } else { false } })
        #expect(slots.freeHandlerSlots == 1)
    }

    @Test("at a stop or pause the jobs in line go back without a slot; a cancel request takes one job out of line")
    func leavingTheLine() async throws {
        let (slots, running) = oneSlotTaken()
        let turns = Turns()
        for id in ["b", "c", "d"] { startAhead(slots, id, turns) }
        slots.cancelOnRequest("c")
        #expect(await eventually { turns.all.count == 1 })
        #expect(turns.all.first?.0 == "c" && turns.all.first.map { if case .cancelled = $0.1 { true } else { false } } == true)
        slots.handBackWaiting()
        #expect(await eventually { turns.all.count == 3 })
        #expect(turns.all.dropFirst().map(\.0).sorted() == ["b", "d"])
        #expect(turns.all.dropFirst().allSatisfy { if case .handBack = $0.1 { true } else { false } })
        #expect(slots.freeHandlerSlots == 0, "the running job keeps its slot")
        running.open()
        #expect(await eventually { slots.used == 0 })
        #expect(slots.freeHandlerSlots == 1)
    }

    @Test(
        "an acknowledgement that lands before its job's task ends gives the handler slot back all the same: jobs in line still run"
    )
    func acknowledgedBeforeTheTaskEnds() async throws {
        let slots = JobSlots(limit: 1, readAhead: 10)
        let landed = Gate(), turns = Turns()
        slots.start(entryID: "a", jobID: "a") { _ in
            slots.finishAcknowledging("a")  // the flush's callback, before the task returns
            await landed.wait()
            return .acknowledging
        }
        startAhead(slots, "b", turns)
        landed.open()
        #expect(await eventually { turns.all.count == 1 }, "the job in line got the slot")
        #expect(await eventually { slots.used == 0 })
        #expect(slots.freeHandlerSlots == 1, "no handler slot is lost")
    }

    @Test("the read-ahead follows the rate jobs start at: up to its cap while jobs start quickly, none once they stop")
    func readAheadFollowsRate() async throws {
        let slots = JobSlots(limit: 2, readAhead: 10)
        #expect(slots.free == 2, "no rate yet: no read-ahead")
        // A thousand starts: more than the cap in 50 ms unless a window lasted over five seconds.
        for index in 0..<1000 { slots.start(entryID: "\(index)", jobID: "\(index)") { _ in .done } }
        #expect(await eventually { slots.used == 0 })
        #expect(await eventually { slots.free == 12 }, "the cap, once a window has seen the starts")
        #expect(await eventually(.seconds(10)) { slots.free == 2 }, "a window with no start ends the read-ahead")
        for index in 0..<1000 { slots.start(entryID: "again-\(index)", jobID: "") { _ in .done } }
        slots.allowReadAhead(false)
        #expect(await eventually { slots.used == 0 })
        #expect(slots.free == 2, "stopped at once when not allowed")
        try await Task.sleep(for: .milliseconds(150))
        #expect(slots.free == 2, "and it stays off")
    }
}
