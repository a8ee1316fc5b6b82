import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

/// Reads carried by the flush that acknowledges the jobs in flight (``CarriedRead``).
extension WorkerTests {
    /// Runs a worker over a backlog of `count` quick jobs on a Redis of the test's own whose
    /// slowlog logs every command, and returns how many `XREADGROUP`s each of the worker's
    /// connections sent (by client name: `read` or `control`), once every job is acknowledged.
    private func readsByConnection(
        count: Int, priorities: [JobPriority?] = [nil], configure: @escaping (inout Worker.Configuration) -> Void
    ) async throws -> (reader: Int, control: Int, seen: Int) {
        let server = try await RedisServerProcess()
        defer { Task { await server.stop() } }
        let setup = try await Setup("carried", url: server.url)
        try await setup.redis.send(RedisCommand("CONFIG SET", ["slowlog-log-slower-than", "0", "slowlog-max-len", "100000"]))
        _ = try await setup.publisher.publish(
            (0..<count).map { JobMessage(type: "t", data: Array("\($0)".utf8), priority: priorities[$0 % priorities.count]) })
        let seen = Deliveries()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }], configure: configure)) {
            #expect(await eventually { seen.count == count ? try await setup.pendingCount() == 0 : false })
        }
        var reads = (reader: 0, control: 0, seen: seen.count)
        for entry in try await setup.redis.send(RedisCommand("SLOWLOG", ["GET", "-1"])).array ?? [] {
            // A read: an XREADGROUP, or the lanes' script (read_lanes.lua, a function of Ferry's library).
            let parts = entry.array ?? []
            let command = parts.count >= 6 ? parts[3].array?.compactMap(\.string) ?? [] : []
            let isRead =
                command.first?.uppercased() == "XREADGROUP"
                || (command.first?.uppercased() == "FCALL" && command.dropFirst().first?.hasPrefix("ferry_read_lanes") == true)
            guard isRead, let client = parts[5].string else { continue }
            if client.hasPrefix("ferry-worker-read-") { reads.reader += 1 }
            if client.hasPrefix("ferry-worker-control-") { reads.control += 1 }
        }
        return reads
    }

    @Test(
        "with a backlog, most reads ride on the flush that acknowledges the jobs in flight (the control connection), a queue with priority lanes' too, every job runs once; with carried reads off, none do"
    )
    func readsRideOnFlushes() async throws {
        let carried = try await readsByConnection(count: 2000) { $0.concurrency = 8 }
        #expect(carried.seen == 2000, "each job ran once")
        #expect(carried.control > carried.reader, "reads on the flush: \(carried.control), on the reader: \(carried.reader)")
        let own = try await readsByConnection(count: 500) {
            $0.concurrency = 8
            $0.carriesReads = false
        }
        #expect(own.seen == 500)
        #expect(own.control == 0 && own.reader > 0, "\(own)")
        // A queue with priority lanes: its lanes' script rides on the flush the same way.
        let lanes = try await readsByConnection(count: 2000, priorities: [.high, nil, .low]) { $0.concurrency = 8 }
        #expect(lanes.seen == 2000, "each job ran once")
        #expect(lanes.control > lanes.reader, "lane reads on the flush: \(lanes.control), on the reader: \(lanes.reader)")
    }

    @Test(
        "a slot freed with no flush under way is filled at once: quick jobs that end by a transition (an idempotency key) all run while a long one holds the other slot"
    )
    func freedSlotFilledBesideLongJob() async throws {
        let setup = try await Setup("carried-long")
        let release = Mutex(false)
        let seen = Deliveries()
        let handler = JobHandlerClosure { job in
            seen.record(job)
            if job.id == "long" {
                while !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
            }
        }
        _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "long"))
        _ = try await setup.publisher.publish(
            (0..<6).map { JobMessage(type: "t", data: "", jobID: "q-\($0)", idempotencyKey: "k-\($0)") })
        try await running(setup.worker(["t": handler]) { $0.concurrency = 2 }) {
            #expect(await eventually { seen.count == 7 }, "the quick jobs ran beside the long one: \(seen.all.map(\.id))")
            #expect(await eventually { try await setup.pendingCount() == 1 }, "only the long job is in flight")
            release.withLock { $0 = true }
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen.count == 7, "each ran once")
    }

    @Test(
        "a read waiting on a flush is called off when nothing would carry it and a slot would sit idle, and carried with as many entries as slots are free"
    )
    func carriedReadWaits() async throws {
        // Slots free and no flush under way: called off at once.
        let idle = CarriedRead()
        guard case .notCarried = await idle.next(count: { 4 }, idle: { true }, flushing: { false }) else {
            Issue.record("a read nothing would carry waited")
            return
        }
        // A flush under way takes it, asking for the free slots, and hands the reply back.
        let busy = CarriedRead()
        let flushing = Mutex(true)
        let waiting = Task { await busy.next(count: { 3 }, idle: { true }, flushing: { flushing.withLock { $0 } }) }
        #expect(await eventually { busy.isWaiting })
        let taken = busy.take()
        #expect(taken?.count == 3)
        taken?.deliver(.read(Worker.Read(entries: [], cancelRequestsExist: false, lanes: 0), asked: 3))
        guard case .read(_, let asked) = await waiting.value else {
            Issue.record("the carried read's reply did not reach the loop")
            return
        }
        #expect(asked == 3)
        // No free slot: left for a later flush, and waiting while the flushes end with every
        // slot taken (a job's end comes next); once a slot frees with no flush under way (a
        // job that ended without a write), called off.
        let full = CarriedRead()
        let free = Mutex(0)
        let underWay = Mutex(true)
        let left = Task {
            await full.next(
                count: { free.withLock { $0 } }, idle: { free.withLock { $0 } > 0 }, flushing: { underWay.withLock { $0 } })
        }
        #expect(await eventually { full.isWaiting })
        #expect(full.take() == nil, "no slot free: not taken")
        underWay.withLock { $0 = false }
        full.flushesEnded()
        #expect(full.isWaiting, "every slot taken: it waits for a job's end")
        free.withLock { $0 = 1 }
        full.slotsChanged()
        guard case .notCarried = await left.value else {
            Issue.record("a read no flush would carry waited on")
            return
        }
        // Room to read ahead but every handler slot busy, no flush under way: it waits for a
        // job's end, whose flush carries it with the room it has then.
        let ahead = CarriedRead()
        let room = Task { await ahead.next(count: { 5 }, idle: { false }, flushing: { false }) }
        #expect(await eventually { ahead.isWaiting })
        ahead.slotsChanged()
        ahead.flushesEnded()
        #expect(ahead.isWaiting, "called off with no slot idle")
        let readAhead = ahead.take()
        #expect(readAhead?.count == 5)
        readAhead?.deliver(.read(Worker.Read(entries: [], cancelRequestsExist: false, lanes: 0), asked: 5))
        guard case .read(_, asked: 5) = await room.value else {
            Issue.record("the read ahead's reply did not reach the loop")
            return
        }
        // Paused or stopping (the count is nil): called off instead of carried.
        let paused = CarriedRead()
        let stopped = Task { await paused.next(count: { nil }, idle: { true }, flushing: { true }) }
        #expect(await eventually { if case .notCarried = await stopped.value { true } else { false } })
        #expect(paused.take() == nil)
    }
}
