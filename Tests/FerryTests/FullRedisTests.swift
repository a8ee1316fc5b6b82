import FerryRedis
import FerryTestSupport
import Synchronization
import Testing

@testable import Ferry

extension WorkerTests {
    @Test(
        "a full Redis (maxmemory reached, noeviction) still lets a worker finish the jobs it holds, statuses written; a new publish is refused whole with OOM"
    )
    func fullRedisDrains() async throws {
        let server = try await RedisServerProcess(extraArguments: ["--maxmemory-policy", "noeviction"])
        let setup = try await Setup("full", url: server.url)
        let released = Mutex(false)
        let started = Deliveries()
        let handler = JobHandlerClosure { job in
            started.record(job)
            while !released.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
        }
        let receipts = try await setup.publisher.publish((0..<5).map { JobMessage(type: "t", jobID: "full-\($0)") })
        try await running(setup.worker(["t": handler])) {
            #expect(await eventually { started.count == 5 })
            try await setup.redis.send(RedisCommand("SET", ["filler", .bytes([UInt8](repeating: 1, count: 2 << 20))]))
            try await setup.redis.send(RedisCommand("CONFIG SET", ["maxmemory", "1mb"]))
            let refused = await #expect(throws: FerryError.self) {
                _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "one-more"))
            }
            #expect(refused?.description.contains("OOM") == true, "\(String(describing: refused))")
            released.withLock { $0 = true }
            #expect(await eventually { try await setup.pendingCount() == 0 }, "every held job acknowledged")
        }
        for receipt in receipts {
            let status = try await JobStatus.load(jobID: receipt.jobID, queue: setup.queue, connection: setup.redis)
            #expect(status?.state == .succeeded, "\(receipt.jobID): \(String(describing: status))")
        }
        #expect(try await setup.length(setup.keys.jobs) == 5, "the refused publish wrote nothing")
    }
}
