import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// Priorities held by real `ferry worker` processes, pushing to a real endpoint (light on the
/// machine, and its log is the order the jobs ran in).
@Suite("Priorities with worker processes")
struct PriorityProcessTests {
    typealias Scratch = WorkerProcessTests.Scratch

    /// A `ferry worker` pushing `queue`'s jobs to `endpoint`.
    func startWorker(_ queue: String, endpoint: String, scratch: Scratch, options: [String]) async throws -> ChildProcess {
        try ChildProcess(
            try ferryExecutable(), ["worker", queue, "--push", endpoint, "--consumer", "w0"] + options,
            environment: ProcessInfo.processInfo.environment.merging(["FERRY_REDIS_URL": try await TestRedis.sharedURL()]) {
                $1
            },
            standardOutput: scratch.path("w0.log"), standardError: scratch.path("w0.err"))
    }

    /// The data of each job the endpoint answered, in the order it answered them.
    func pushed(_ server: PushEndpointServer) -> [String] {
        server.requests.compactMap { request in
            (request.message?["data"] as? String).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
        }
    }

    @Test("strict: with a backlog of low jobs running in a worker process, a high job published meanwhile starts next")
    func highStartsNext() async throws {
        let redis = try await TestRedis.connection()
        let queue = uniqueName("pproc"), scratch = try Scratch()
        let publisher = Publisher(queue: try QueueName(queue), connection: redis)
        _ = try await publisher.publish((0..<60).map { JobMessage(type: "t", data: Array("low-\($0)".utf8), priority: .low) })
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        // One job at a time, each answered after 100 ms: the order the log shows is the order they started.
        let worker = try await startWorker(
            queue, endpoint: server.url("/respond/204,sleep=100"), scratch: scratch, options: ["--concurrency", "1"])
        defer { worker.signal(SIGKILL) }
        #expect(await eventually(.seconds(60)) { pushed(server).count >= 3 }, "the low backlog is running")
        _ = try await publisher.publish(JobMessage(type: "t", data: Array("high".utf8), priority: .high))
        let answered = pushed(server).count  // the high job is in Redis from here on
        #expect(await eventually(.seconds(60)) { pushed(server).contains("high") })
        let at = try #require(pushed(server).firstIndex(of: "high"))
        // Once it was in Redis, one low job was being answered (not logged yet) and the next
        // read may have been on its way: nothing else goes before it.
        #expect(at <= answered + 1, "\(at - answered) jobs went before it: \(pushed(server).suffix(6))")
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
    }

    @Test("weighted: with backlogs of high and low jobs, a worker process runs mostly high, and low still progresses")
    func weightedLowProgresses() async throws {
        let redis = try await TestRedis.connection()
        let queue = uniqueName("pweight"), scratch = try Scratch()
        _ = try await Publisher(queue: try QueueName(queue), connection: redis).publish(
            (0..<150).flatMap { index in
                [
                    JobMessage(type: "t", data: Array("high-\(index)".utf8), priority: .high),
                    JobMessage(type: "t", data: Array("low-\(index)".utf8), priority: .low),
                ]
            })
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        let worker = try await startWorker(
            queue, endpoint: server.url(), scratch: scratch, options: ["--concurrency", "1", "--priority-mode", "weighted"])
        defer { worker.signal(SIGKILL) }
        #expect(await eventually(.seconds(90)) { pushed(server).count >= 120 })
        let first = pushed(server).prefix(120)
        let lows = first.filter { $0.hasPrefix("low") }.count
        // Reads take high 10 : 1 low: no low in 120 reads would be a chance of about 1 in 100,000.
        #expect(lows >= 1 && 120 - lows > lows * 3, "\(lows) low of 120")
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
    }
}
