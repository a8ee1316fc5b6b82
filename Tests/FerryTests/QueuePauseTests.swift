import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

extension WorkerTests {
    @Test("a paused queue starts nothing, also on a worker started while it is paused; resume runs every job once")
    func pauseSurvivesRestartAndResumes() async throws {
        let setup = try await Setup("pause")
        let seen = Deliveries()
        let pause = QueuePause(queue: setup.queue, connection: setup.redis)
        let firstLog = LogRecord()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }], logger: firstLog.logger())) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "before"))
            #expect(await eventually { seen.count == 1 })
            #expect(try await pause.pause())
            #expect(try await pause.pause() == false, "paused already")
            #expect(await eventually { firstLog.messages.contains { $0.hasPrefix("queue_paused") } })
            _ = try await setup.publisher.publish((0..<5).map { JobMessage(type: "t", data: "", jobID: "p-\($0)") })
            try await Task.sleep(for: .seconds(1))  // the pause took effect (logged): nothing may start
            #expect(seen.count == 1)
        }
        // A worker started while the pause lasts learns of it before it takes anything.
        let secondLog = LogRecord()
        try await running(setup.worker(["t": JobHandlerClosure { seen.record($0) }], logger: secondLog.logger())) {
            #expect(await eventually { secondLog.messages.contains { $0.hasPrefix("queue_paused") } })
            try await Task.sleep(for: .seconds(1))
            #expect(seen.count == 1)
            let report = try #require(try await QueueInspector(connection: setup.redis).report(setup.queue))
            #expect(report.paused == [QueuePause.allGroups])
            #expect(try await pause.resume())
            #expect(await eventually { seen.count == 6 })
            #expect(secondLog.messages.contains { $0.hasPrefix("queue_resumed") })
        }
        #expect(Set(seen.all.map(\.id)).count == 6)
        #expect(try await pause.paused().isEmpty)
    }

    @Test("pausing one group leaves the others running; resuming every group leaves a group paused on its own")
    func pauseOneGroup() async throws {
        let setup = try await Setup("pause-group")
        let a = Deliveries(), b = Deliveries()
        let pause = QueuePause(queue: setup.queue, connection: setup.redis)
        #expect(try await pause.pause(group: "a"))
        let log = LogRecord()
        try await running(
            setup.worker(["t": JobHandlerClosure { a.record($0) }], group: "a", logger: log.logger()),
            setup.worker(["t": JobHandlerClosure { b.record($0) }], group: "b")
        ) {
            #expect(await eventually { log.messages.contains { $0.hasPrefix("queue_paused") } })
            _ = try await setup.publisher.publish((0..<3).map { JobMessage(type: "t", data: "", jobID: "g-\($0)") })
            #expect(await eventually { b.count == 3 })
            #expect(a.count == 0)
            #expect(try await pause.resume() == false, "every group was not paused as a whole")
            #expect(try await pause.isPaused(group: "a"))
            #expect(try await pause.resume(group: "a"))
            #expect(await eventually { a.count == 3 })
        }
    }
}

extension WorkerTests {
    @Test(
        "ferry queue pause --wait returns once every live worker confirmed, one of them with every slot busy; a job published right after never starts"
    )
    func pauseWaitsForConfirmation() async throws {
        let setup = try await Setup("pause-wait")
        let seen = Deliveries()
        let release = Mutex(false)
        let busy = setup.worker(
            [
                "t": JobHandlerClosure { job in
                    seen.record(job)
                    while !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
                }
            ]
        ) {
            $0.concurrency = 1
            $0.consumer = "busy"
        }
        let idleLog = LogRecord()
        let idle = setup.worker(["t": JobHandlerClosure { seen.record($0) }], logger: idleLog.logger()) {
            $0.concurrency = 1
            $0.consumer = "idle"
        }
        try await running(busy) {
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "long"))
            #expect(await eventually { seen.count == 1 }, "the busy worker's only slot is taken")
            try await running(idle) {
                // The other worker reads (it has a free slot) before the pause.
                #expect(
                    await eventually {
                        let consumers = try await setup.redis.send(
                            RedisCommand("XINFO", ["CONSUMERS", .string(setup.keys.jobs), "workers"]))
                        return consumers.array?.count == 2
                    }, "\(idleLog.messages)")
                let paused = try await setup.ferry("queue", "pause", setup.name, "--wait", "--wait-timeout", "20s")
                #expect(paused.status == 0, "\(paused.standardError)")
                #expect(paused.lines.contains { $0.contains("2 live worker(s) confirmed") }, "\(paused.lines)")
                _ = try await setup.publisher.publish((0..<5).map { JobMessage(type: "t", data: "", jobID: "after-\($0)") })
                release.withLock { $0 = true }
                try await Task.sleep(for: .seconds(1))  // confirmed: nothing new may start, whatever the timing
                #expect(seen.count == 1, "\(seen.all.map(\.id))")
                #expect(try await QueuePause(queue: setup.queue, connection: setup.redis).resume())
                #expect(await eventually { seen.count == 6 })
            }
        }
    }

    @Test(
        "a pause hands back the jobs a worker read ahead: a job published after the pause is confirmed never starts, and resume runs every job once at attempt 1"
    )
    func pauseHandsBackReadAhead() async throws {
        let setup = try await Setup("pause-ahead")
        var published = 0
        while published < 3000 {
            published += try await setup.publisher.publish((0..<500).map { JobMessage(type: "t", data: "\($0)") }).count
        }
        let seen = Deliveries()
        // Slowed once under way, so that jobs wait in line when the pause comes.
        let slow = Mutex(false)
        let worker = setup.worker(
            [
                "t": JobHandlerClosure { job in
                    seen.record(job)
                    if slow.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
                }
            ]
        ) {
            $0.concurrency = 2
            $0.readAhead = 200
        }
        try await running(worker) {
            #expect(await eventually { seen.count >= 300 }, "the worker is well under way")
            slow.withLock { $0 = true }
            let paused = try await setup.ferry("queue", "pause", setup.name, "--wait", "--wait-timeout", "20s")
            #expect(paused.status == 0, "\(paused.standardError)")
            let ranBeforePause = seen.count
            let due = setup.keys.delayed(group: "workers").due
            // Each job in line parks itself back, as its task ends after the confirmation.
            #expect(
                await eventually(.seconds(10)) {
                    try await setup.redis.send(RedisCommand("ZCARD", [.string(due)])).integer ?? 0 > 0
                }, "jobs read ahead were handed back")
            _ = try await setup.publisher.publish(JobMessage(type: "t", data: "", jobID: "after-pause"))
            try await Task.sleep(for: .seconds(1))  // confirmed: nothing new may start, whatever the timing
            #expect(!seen.all.contains { $0.id == "after-pause" })
            // At most the two given a handler slot before the pause start after it: none of the line.
            #expect(seen.count <= ranBeforePause + 2, "\(seen.count - ranBeforePause) started after the pause was confirmed")
            #expect(seen.count < 3000, "paused part-way: \(seen.count) ran")
            slow.withLock { $0 = false }
            #expect(try await QueuePause(queue: setup.queue, connection: setup.redis).resume())
            #expect(await eventually { seen.count >= 3001 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(seen.count == 3001 && Set(seen.all.map(\.id)).count == 3001, "each ran once")
        #expect(seen.all.allSatisfy { $0.attempt == 1 }, "no attempt was spent on a job handed back")
    }
}

extension WorkerTests {
    @Test("a pause's confirmation waits for live workers only: a consumer idle past the live window is not waited for")
    func pauseConfirmationSkipsDeadConsumers() async throws {
        let setup = try await Setup("pause-dead")
        try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create("workers")
        _ = try await setup.redis.send(RedisCommand("XGROUP", ["CREATECONSUMER", .string(setup.keys.jobs), "workers", "gone"]))
        let pause = QueuePause(queue: setup.queue, connection: setup.redis)
        try await pause.pause()
        // A live window of ten minutes: a loaded machine's stall between making the consumer and
        // asking (the suite's start once took 30 s) must not make it look gone.
        let waited = try await pause.waitUntilConfirmed(group: nil, timeout: .milliseconds(300), liveWithin: .seconds(600))
        #expect(waited.unconfirmed == ["workers/gone"] && waited.confirmed.isEmpty, "live within the window: waited for, in vain")
        #expect(
            await eventually {
                try await pause.waitUntilConfirmed(group: "workers", timeout: .zero, liveWithin: .milliseconds(100)).unconfirmed
                    .isEmpty
            }, "idle past the window: not waited for")
    }

    @Test("a pause of a group, or of a queue, no worker has read yet waits for no one and is not an error")
    func pauseConfirmationOfUnknownGroup() async throws {
        let setup = try await Setup("pause-unknown")
        let pause = QueuePause(queue: setup.queue, connection: setup.redis)
        try await pause.pause(group: "later")
        #expect(try await pause.waitUntilConfirmed(group: "later", timeout: .seconds(5)) == .init(), "no stream yet")
        try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create("workers")
        #expect(try await pause.waitUntilConfirmed(group: "later", timeout: .seconds(5)) == .init(), "no such group yet")
    }
}
