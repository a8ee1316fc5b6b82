import FerryExec
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@testable import Ferry

@Suite("--exec handlers")
struct CommandJobHandlerTests {
    private func job(data: String = "", attributes: [String: String] = [:], attempt: Int = 1) -> Job {
        Job(
            id: "job-1", entryID: "1-0", queue: "q", group: "workers", deliveryAttempt: attempt,
            message: JobMessage(type: "convert", data: Array(data.utf8), attributes: attributes))
    }

    @Test("data arrives on stdin and metadata in the environment")
    func inputAndEnvironment() async throws {
        let out = FileManager.default.temporaryDirectory.appending(path: uniqueName("exec"))
        defer { try? FileManager.default.removeItem(at: out) }
        let handler = CommandJobHandler(
            command: """
                { cat; echo; echo "$FERRY_JOB_ID $FERRY_JOB_TYPE $FERRY_QUEUE $FERRY_GROUP $FERRY_DELIVERY_ATTEMPT"; \
                echo "$FERRY_ATTR_TENANT_ID $FERRY_ATTRIBUTES"; } > '\(out.path())'
                """)
        try await handler.handle(job(data: #"{"doc":1}"#, attributes: ["tenant-id": "acme"], attempt: 2))
        let written = try String(contentsOf: out, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(written == [#"{"doc":1}"#, "job-1 convert q workers 2", #"acme {"tenant-id":"acme"}"#])
    }

    @Test(
        "a handler inherits no descriptor of its worker (a listener, a Redis connection), also through ferry-exec-guard",
        arguments: [false, true])
    func noInheritedDescriptors(guarded: Bool) async throws {
        let out = FileManager.default.temporaryDirectory.appending(path: uniqueName("fds"))
        defer { try? FileManager.default.removeItem(at: out) }
        // Open while the handler starts: a connection to Redis and a bound socket.
        let redis = try await TestRedis.connection()
        _ = try await redis.send(RedisCommand("PING"))
        let held = try SaturatedListener()
        let handler = CommandJobHandler(
            command: "ls -l /proc/$$/fd > '\(out.path())'; true",
            guardExecutable: guarded ? try execGuardExecutable().path() : nil)
        try await handler.handle(job())
        let listing = try String(contentsOf: out, encoding: .utf8)
        #expect(listing.contains(" 0 -> "), "the listing is of the handler's shell: \(listing)")
        #expect(!listing.contains("socket:"), "the handler's shell held sockets: \(listing)")
        // The tests' own child processes (servers they start) inherit none either.
        let child = try ChildProcess(
            URL(filePath: "/bin/sh"), ["-c", "ls -l /proc/$$/fd > '\(out.path())'; true"])
        _ = await child.waitForExit()
        #expect(try !String(contentsOf: out, encoding: .utf8).contains("socket:"))
        withExtendedLifetime(held) {}
        await redis.close()
    }

    @Test("exit 75 with a last stderr line 'snooze: 2s' snoozes; 'retry-after: 30s' retries no earlier; others are text")
    func snoozeAndRetryAfterLines() async throws {
        await #expect {
            try await CommandJobHandler(command: "echo 'waiting for the upload' >&2; echo 'snooze: 2s' >&2; exit 75").handle(
                job())
        } throws: { error in
            guard let snooze = error as? JobSnooze else { return false }
            return snooze.delay == .seconds(2) && snooze.reason == "waiting for the upload"
        }
        await #expect {
            try await CommandJobHandler(command: "echo 'rate limited' >&2; echo 'Retry-After: 30s' >&2; exit 75").handle(job())
        } throws: { error in
            guard let failure = error as? CommandFailure else { return false }
            return failure.retryAfter == .seconds(30) && failure.standardError == "rate limited"
                && failure.errorClass == "exit_75"
        }
        // Not the last line, not a duration, or not exit 75: the text is only the reason.
        for command in [
            "echo 'snooze: 2s' >&2; echo 'more' >&2; exit 75", "echo 'snooze: soon' >&2; exit 75",
            "echo 'snooze: 2s' >&2; exit 1",
        ] {
            await #expect {
                try await CommandJobHandler(command: command).handle(job())
            } throws: { error in
                (error as? CommandFailure)?.retryAfter == nil && !(error is JobSnooze)
            }
        }
    }

    @Test("exit 0 acknowledges, 75 and other codes retry, 65 dead-letters, with the stderr tail as the reason")
    func exitCodes() async throws {
        try await CommandJobHandler(command: "exit 0").handle(job())
        await #expect {
            try await CommandJobHandler(command: "echo 'busy, try later' >&2; exit 75").handle(job())
        } throws: { error in
            (error as? CommandFailure)?.description == "the command exited with 75: busy, try later"
        }
        await #expect {
            try await CommandJobHandler(command: "echo 'bad input' >&2; exit 65").handle(job())
        } throws: { error in
            (error as? PermanentJobError)?.message == "bad input"
        }
        await #expect {
            try await CommandJobHandler(command: "exit 3").handle(job())
        } throws: { error in
            (error as? CommandFailure)?.status == "exited with 3"
        }
    }

    @Test(
        "a failed command's error class says how it ended (exit_<status>, signal_<name>), also through ferry-exec-guard",
        arguments: [false, true])
    func errorClasses(guarded: Bool) async throws {
        let guardPath = guarded ? try execGuardExecutable().path() : nil
        func run(_ command: String) async throws {
            try await CommandJobHandler(command: command, guardExecutable: guardPath).handle(job())
        }
        try await run("exit 0")
        await #expect {
            try await run("echo reason >&2; exit 3")
        } throws: { error in
            (error as? any RetryableJobError)?.errorClass == "exit_3" && "\(error)" == "the command exited with 3: reason"
        }
        await #expect {
            try await run("kill -9 $$")
        } throws: { error in
            (error as? any RetryableJobError)?.errorClass == "signal_SIGKILL"
        }
        await #expect {
            try await run("kill -TERM $$")
        } throws: { error in
            (error as? CommandFailure)?.status == "was killed by signal 15 (SIGTERM)"
        }
    }

    @Test("a command that never reads its 1 MiB standard input still succeeds")
    func unreadInput() async throws {
        let large = String(repeating: "x", count: 1 << 20)
        for _ in 0..<20 { try await CommandJobHandler(command: "exit 0").handle(job(data: large)) }
    }

    @Test("only the last 4 KiB of a long stderr is kept")
    func stderrTail() async throws {
        await #expect {
            try await CommandJobHandler(command: "head -c 100000 /dev/zero | tr '\\\\0' x >&2; echo END >&2; exit 1").handle(
                job())
        } throws: { error in
            guard let failure = error as? CommandFailure else { return false }
            return failure.standardError.hasSuffix("END") && failure.standardError.utf8.count <= 4096
        }
    }

    @Test("a job timeout kills the whole process group, children included")
    func timeoutKillsProcessGroup() async throws {
        let pidFile = FileManager.default.temporaryDirectory.appending(path: uniqueName("grandchild"))
        defer { try? FileManager.default.removeItem(at: pidFile) }
        // The grandchild writes its pid, then would run for 30 s were it not killed.
        let handler = CommandJobHandler(command: "(sh -c 'echo $$ > \"$1\"; exec sleep 30' sh '\(pidFile.path())') & sleep 30")
        // A timeout long enough that the grandchild has started however loaded the machine (the
        // test checks it did; a fresh CI machine took over 8 s to start it), short enough not to
        // wait for the sleeps.
        let run = Task { try await Worker.runHandler(handler, job(), timeout: .seconds(20)) }
        #expect(await eventually(.seconds(20)) { FileManager.default.fileExists(atPath: pidFile.path()) })
        await #expect(throws: JobTimeoutError.self) { try await run.value }
        let pid = try #require(
            Int32(try String(contentsOf: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(await eventually(.seconds(10)) { !Self.isRunning(pid) }, "the grandchild \(pid) was killed with its group")
    }

    /// Whether process `pid` exists and is not a zombie waiting to be reaped.
    static func isRunning(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        // `pid (comm) state ...`: the state follows the last parenthesis.
        guard let close = stat.lastIndex(of: ")") else { return false }
        return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }
}
