import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// Ordering keys held by real `ferry worker` processes: publish order per key across workers,
/// retries and a `kill -9` (pushing to a real HTTP endpoint); `ferry ordering list|resume` for a
/// stopped key.
@Suite("ordering keys with worker processes")
struct OrderingProcessTests {
    typealias Scratch = WorkerProcessTests.Scratch

    @Test(
        "50 keys × 40 jobs, some failing once, pushed by 3 workers one of which is killed with -9: each key runs in publish order, keys side by side"
    )
    func publishOrderAcrossWorkersAndAKill() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let server = try await PushEndpointServer()
        let queue = uniqueName("ordered"), scratch = try Scratch()
        let name = try QueueName(queue)
        // Index-major, so every worker's reads mix keys; every seventh job's first push is
        // answered 503 (a retry). Pushed, not run as commands: 2,000 jobs stay light on the machine.
        let jobs = (0..<40).flatMap { index in
            (0..<50).map { key in
                JobMessage(
                    type: "t",
                    attributes: ["k": "k\(key)", "n": "\(index)", "respond": (index + key) % 7 == 3 ? "503;204" : "204"],
                    orderingKey: "k\(key)")
            }
        }
        _ = try await Publisher(queue: name, connection: redis).publish(jobs)
        let options = ["--concurrency", "16", "--lease", "3s", "--min-backoff", "100ms", "--max-backoff", "200ms"]
        func start(_ name: String) throws -> ChildProcess {
            try ChildProcess(
                try ferryExecutable(), ["worker", queue, "--push", server.url(), "--consumer", name] + options,
                environment: ProcessInfo.processInfo.environment.merging(["FERRY_REDIS_URL": url]) { $1 },
                standardOutput: scratch.path("\(name).log"), standardError: scratch.path("\(name).err"))
        }
        var workers = try (0..<3).map { try start("w\($0)") }
        defer { workers.forEach { $0.signal(SIGKILL) } }
        /// Each push in arrival order: its key, its index, and whether it was answered 2xx.
        func pushes() -> [(key: String, index: Int, ok: Bool)] {
            server.requests.compactMap { request in
                guard let attributes = request.message?["attributes"] as? [String: String], let key = attributes["k"],
                    let index = attributes["n"].flatMap({ Int($0) })
                else { return nil }
                return (key, index, request.status < 300)
            }
        }
        func done() -> Int { Set(pushes().filter(\.ok).map { "\($0.key) \($0.index)" }).count }
        #expect(await eventually(.seconds(120)) { done() >= 300 }, "the run got going")
        // A container crash mid-run.
        workers[0].signal(SIGKILL)
        await workers[0].waitForExit()
        workers[0] = try start("w3")
        #expect(await eventually(.seconds(240)) { done() == 2000 }, "\(done()) of 2000 done")
        let all = pushes()
        for key in 0..<50 {
            let order = all.filter { $0.key == "k\(key)" }.map(\.index)
            #expect(order == order.sorted(), "k\(key) ran in publish order (a retry or a rerun repeats its place): \(order)")
        }
        #expect(Set(all.prefix(100).map(\.key)).count >= 10, "keys ran side by side")
    }

    @Test("ferry ordering list shows a key a dead letter stopped, ferry inspect says so, and resume lets its next job run")
    func orderingCommands() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("ordercli"), scratch = try Scratch()
        for data in ["dead", "next"] {
            let published = try await runProcess(
                try ferryExecutable(),
                ["publish", queue, "--type", "t", "--data", data, "--ordering-key", "acct 7", "--redis", url])
            #expect(published.status == 0, "\(published.standardError)")
        }
        let worker = try WorkerProcessTests().startWorker(
            queue, redisURL: url, exec: "d=$(cat); [ \"$d\" = dead ] && exit 65; echo \"$d\" >> '\(scratch.path("done"))'",
            scratch: scratch, name: "w", options: ["--ordering-on-dead", "block"])
        defer { worker.signal(SIGKILL) }
        let ordering = QueueOrdering(queue: try QueueName(queue), connection: redis)
        #expect(await eventually { try await ordering.blockedCount() == 1 })
        let list = try await runProcess(try ferryExecutable(), ["ordering", "list", queue, "--redis", url])
        #expect(list.status == 0 && list.standardOutput.contains("acct 7"), "\(list.standardOutput)")
        let inspect = try await runProcess(try ferryExecutable(), ["inspect", queue, "--redis", url])
        #expect(inspect.standardOutput.contains("ORDERING BLOCKED (workers: acct 7)"), "\(inspect.standardOutput)")
        #expect(scratch.lines("done").isEmpty, "the key's next job waits")
        let resumed = try await runProcess(try ferryExecutable(), ["ordering", "resume", queue, "acct 7", "--redis", url])
        #expect(resumed.status == 0, "\(resumed.standardError)")
        #expect(await eventually { scratch.lines("done") == ["next"] })
        let again = try await runProcess(try ferryExecutable(), ["ordering", "resume", queue, "acct 7", "--redis", url])
        #expect(again.status == 1, "not blocked any more: \(again.standardError)")
    }
}
