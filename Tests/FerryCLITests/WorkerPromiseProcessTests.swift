import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// Whether `pid` is a live process (a zombie, dead but not yet reaped, counts as gone).
func isAlive(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return false }
    let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
    return state != "Z" && state != "X"
}

// Promises `ferry worker --exec` makes, each checked where it broke before (issue 11).
extension WorkerProcessTests {
    @Test("kill -9 of a worker kills its --exec handler and the handler's own children before another worker takes the job")
    func handlersDieWithTheirWorker() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("orphan"), scratch = try Scratch()
        // The first delivery starts a child and waits for it; the second records whether the
        // first one's processes were still alive when it started.
        let exec = """
            if [ "$FERRY_DELIVERY_ATTEMPT" = 1 ]; then echo $$ > '\(scratch.path("sh.pid"))'; \
            sleep 60 & echo $! > '\(scratch.path("child.pid"))'; wait; \
            else echo $FERRY_DELIVERY_ATTEMPT >> '\(scratch.path("second"))'; fi
            """
        let victim = try startWorker(
            queue, redisURL: url, exec: exec, scratch: scratch, name: "victim", options: ["--lease", "1s"])
        _ = try await Publisher(queue: try QueueName(queue), connection: redis).publish(
            JobMessage(type: "t", data: "", idempotencyKey: "one-at-a-time"))
        #expect(await eventually { scratch.lines("child.pid").count == 1 && scratch.lines("sh.pid").count == 1 })
        let shell = try #require(pid_t(scratch.lines("sh.pid").first ?? ""))
        let child = try #require(pid_t(scratch.lines("child.pid").first ?? ""))
        #expect(isAlive(shell) && isAlive(child), "the handler was running when its worker was killed")

        victim.signal(SIGKILL)
        await victim.waitForExit()
        #expect(await eventually(.seconds(5)) { !isAlive(shell) && !isAlive(child) }, "the handler outlived its worker")

        let survivor = try startWorker(
            queue, redisURL: url, exec: exec, scratch: scratch, name: "survivor", options: ["--lease", "1s"])
        #expect(await eventually(.seconds(20)) { try await pending(redis, queue) == 0 && scratch.lines("second").count == 1 })
        survivor.signal(SIGTERM)
        #expect(await survivor.waitForExit() == 0)
    }

    @Test(
        "--exec handlers get the job's FERRY_* variables, its TRACEPARENT and a clean environment: no FERRY_REDIS_URL, only what --pass-env names"
    )
    func handlerEnvironmentIsClean() async throws {
        let url = try await TestRedis.sharedURL()
        let redis = try await TestRedis.connection()
        let queue = uniqueName("env"), scratch = try Scratch()
        let worker = try ChildProcess(
            try ferryExecutable(), ["worker", queue, "--exec", "env > '\(scratch.path("env"))'", "--pass-env", "SHARED_SETTING"],
            environment: ProcessInfo.processInfo.environment.merging([
                "FERRY_REDIS_URL": url, "SHARED_SETTING": "visible", "WORKER_SECRET": "hidden",
            ]) { $1 },
            standardOutput: scratch.path("worker.log"), standardError: scratch.path("worker.err"))
        var message = JobMessage(type: "t", data: "")
        message.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        _ = try await Publisher(queue: try QueueName(queue), connection: redis).publish(message)
        #expect(
            await eventually {
                try await pending(redis, queue) == 0 && scratch.lines("env").contains { $0.hasPrefix("FERRY_JOB_ID=") }
            })
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
        let names = Set(scratch.lines("env").compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) })
        #expect(names.contains("SHARED_SETTING") && names.contains("PATH") && names.contains("FERRY_QUEUE"))
        #expect(!names.contains("FERRY_REDIS_URL"), "the Redis password reached the handler")
        #expect(!names.contains("WORKER_SECRET"))
        #expect(scratch.lines("env").contains("TRACEPARENT=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
    }
}
