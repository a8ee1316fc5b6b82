import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

extension WorkerTests {
    /// The fault a loaded CI machine once caused (issue 14's note): every lease lapses at once,
    /// entries are reclaimed at the next delivery, and commands in flight time out. Slots are
    /// counted per worker (docs/design.md, "Rate and concurrency limits"), so a count left behind
    /// by a lost release or a late acquisition would show here as a held total that never
    /// returns to 0, or as jobs that wait for ever.
    @Test(
        "Redis frozen past the lease (and past the command timeout) while jobs hold concurrency slots: the limit holds, every job ends acknowledged, every slot comes back"
    )
    func limitSlotsSurviveFrozenRedis() async throws {
        let server = try await RedisServerProcess()
        defer { Task { await server.stop() } }
        let setup = try await Setup("limit-stall", url: server.url)
        try await setLimits(setup, QueueLimit(name: "three", kind: .concurrency(3)))
        let counter = RunningCounter(), seen = Deliveries()
        let handler = counter.handler(recording: seen, taking: .milliseconds(30))
        // Few enough that the jobs waiting on the limit (each parked and back about every lease)
        // do not load a machine the rest of the suite shares.
        let ids = (0..<60).map { "s-\($0)" }
        _ = try await setup.publisher.publish(ids.map { JobMessage(type: "t", data: "", jobID: $0) })
        let configure: (inout Worker.Configuration) -> Void = {
            $0.concurrency = 8; $0.lease = .seconds(2)
        }
        try await running(setup.worker(["t": handler], configure: configure), setup.worker(["t": handler], configure: configure))
        {
            // 3 s: past the lease; 6 s: past the 5 s command timeout too.
            for pause in [3000, 6000] {
                let before = seen.count
                #expect(await eventually { seen.count > before + 5 && counter.running("all") > 0 }, "jobs were running")
                server.pause()
                try await Task.sleep(for: .milliseconds(pause))
                server.resume()
            }
            #expect(await eventually(.seconds(60)) { Set(seen.all.map(\.id)).count == ids.count })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(counter.most("all") <= 3)
        for id in ids {
            let status = try await JobStatus.load(jobID: id, queue: setup.queue, connection: setup.redis)
            #expect(status?.state == .succeeded, "\(id)")
        }
        let usage = try await QueueLimits(queue: setup.queue, connection: setup.redis)
            .usage(of: QueueLimit(name: "three", kind: .concurrency(3)))
        #expect(usage.holding == 0 && usage.waiting == 0, "\(usage)")
    }
}
