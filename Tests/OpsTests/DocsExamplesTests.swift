import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@Suite("Examples in the docs")
struct DocsExamplesTests {
    /// The first ```python block of docs/wire-format.md, exactly as a reader would copy it.
    private func pythonExample() throws -> String {
        let markdown = try String(contentsOf: repositoryRoot.appending(path: "docs/wire-format.md"), encoding: .utf8)
        let afterFence = try #require(markdown.range(of: "```python\n"))
        let end = try #require(markdown.range(of: "\n```", range: afterFence.upperBound..<markdown.endIndex))
        return String(markdown[afterFence.upperBound..<end.lowerBound])
    }

    @Test(
        "the Python producer in docs/wire-format.md, run outside the repository, publishes jobs the Swift side reads, and dedups by key"
    )
    func pythonProducerExample() async throws {
        let queue = uniqueName("docs")
        // From an empty folder: the sample must need no file of the repository.
        let elsewhere = FileManager.default.temporaryDirectory.appending(path: uniqueName("elsewhere"))
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: elsewhere) }
        let result = try await runProcess(
            try executable(named: "sh"),
            ["-c", "cd \"$1\" && exec python3 -c \"$2\"", "sh", elsewhere.path(), try pythonExample()],
            environment: ["FERRY_REDIS_URL": try await TestRedis.sharedURL(), "FERRY_QUEUE": queue])
        #expect(result.status == 0, "\(result.standardError)")
        let lines = result.lines
        try #require(lines.count == 3)
        let first = lines[1].split(separator: " "), second = lines[2].split(separator: " ")
        #expect(first.first == "1" && second.first == "0")
        #expect(first.last == second.last, "the duplicate returns the first job id")

        let redis = try await TestRedis.connection()
        let keys = QueueKeys(queue: try QueueName(queue))
        let jobs = try StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(keys.jobs), "-", "+"])))
            .map { try $0.decodedJob() }
        #expect(jobs.map(\.type) == ["send-welcome", "send-receipt"])
        #expect(jobs[0].jobID == lines[0])
        #expect(jobs[0].attributes == ["tenant": "acme"])
        #expect(jobs[1].idempotencyKey == "order:42")
        let dedupKey = keys.publishDedup(idempotencyKey: "order:42")
        #expect(dedupKey.contains(":idem:pub:~"), "a key with a colon is hashed the same way in Python and Swift")
        #expect(try await redis.send(RedisCommand("EXISTS", [.string(dedupKey)])) == .integer(1))
    }

    /// The first fenced block in `language` after `marker` in docs/wire-format.md.
    private func example(after marker: String, language: String) throws -> String {
        let markdown = try String(contentsOf: repositoryRoot.appending(path: "docs/wire-format.md"), encoding: .utf8)
        let section = try #require(markdown.range(of: marker))
        let afterFence = try #require(markdown.range(of: "```\(language)\n", range: section.upperBound..<markdown.endIndex))
        let end = try #require(markdown.range(of: "\n```", range: afterFence.upperBound..<markdown.endIndex))
        return String(markdown[afterFence.upperBound..<end.lowerBound])
    }

    @Test("the redis-cli and Python deliver_at examples in docs/wire-format.md add jobs a worker parks until their time")
    func deliverAtExamples() async throws {
        let url = try await TestRedis.sharedURL()
        let queue = uniqueName("docs-at")
        let marker = "**From any language, a plain `XADD` with `deliver_at`**"
        // As written, on a queue of its own and the test's Redis.
        let shell = try example(after: marker, language: "sh")
            .replacingOccurrences(of: "{emails}", with: "{\(queue)}").replacingOccurrences(
                of: "redis-cli", with: "redis-cli -u \"$URL\"")
        let python = try example(after: marker, language: "python")
            .replacingOccurrences(of: "{emails}", with: "{\(queue)}")
            .replacingOccurrences(of: "redis.Redis()", with: "redis.Redis.from_url(__import__('os').environ['URL'])")
        let sh = try executable(named: "sh")
        let cli = try await runProcess(sh, ["-c", shell], environment: ["URL": url])
        #expect(cli.status == 0, "\(cli.standardError)")
        let py = try await runProcess(sh, ["-c", "exec python3 -c \"$1\"", "sh", python], environment: ["URL": url])
        #expect(py.status == 0, "\(py.standardError)")

        let redis = try await TestRedis.connection()
        let keys = QueueKeys(queue: try QueueName(queue))
        let now = Date().millisecondsSince1970
        let jobs = try StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(keys.jobs), "-", "+"])))
            .map { try $0.decodedJob() }
        try #require(jobs.count == 2)
        for job in jobs {
            let due = try #require(job.deliverAt?.millisecondsSince1970)
            #expect(abs(due - now - 600_000) < 60_000, "ten minutes ahead")
        }
        var configuration = Worker.Configuration()
        configuration.consumer = uniqueName("docs-worker")
        let worker = Worker(
            queue: try QueueName(queue), redis: try RedisConfiguration(url: url),
            handlers: ["send": JobHandlerClosure { _ in Issue.record("ran before its time") }], configuration: configuration)
        let task = Task { try await worker.run() }
        #expect(
            await eventually {
                try await redis.send(RedisCommand("ZCARD", [.string(keys.delayed(group: "workers").due)])).integer == 2
            })
        worker.stop()
        try await task.value
    }

    @Test("the publish script inlined in the Python sample is ops/lua/publish.lua, and that is the worker's own")
    func inlinedPublishScriptMatches() throws {
        func code(_ text: String) -> [String] {
            text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("--") && !$0.isEmpty }
        }
        let sample = try pythonExample()
        let start = try #require(sample.range(of: "PUBLISH_LUA = \"\"\"\n"))
        let end = try #require(sample.range(of: "\"\"\"", range: start.upperBound..<sample.endIndex))
        let shipped = try String(contentsOf: repositoryRoot.appending(path: "ops/lua/publish.lua"), encoding: .utf8)
        let own = try String(contentsOf: repositoryRoot.appending(path: "Sources/Ferry/Scripts/publish.lua"), encoding: .utf8)
        #expect(code(String(sample[start.upperBound..<end.lowerBound])) == code(shipped))
        #expect(code(shipped) == code(own))
    }
}

/// Every `ferry` command a reader can copy from the README, the RUNBOOK and docs/, run as written
/// (placeholders filled in, example files and handlers stubbed in a scratch folder) against a
/// Redis of its own: none may be refused as bad usage (exit 2) or fail on Redis (exit 3).
@Suite("Commands in the docs")
struct DocsCommandsTests {
    /// The `ferry` command lines of fenced `sh` blocks (continuations joined, comments cut) and,
    /// for the RUNBOOK, of inline code, whose placeholders are filled in.
    static func documentedCommands() throws -> [String] {
        let documents =
            ["README.md", "ops/RUNBOOK.md"]
            + (try FileManager.default.contentsOfDirectory(atPath: repositoryRoot.appending(path: "docs").path())
                .filter { $0.hasSuffix(".md") }.sorted().map { "docs/" + $0 })
        var commands: [String] = []
        for document in documents {
            let text = try String(contentsOf: repositoryRoot.appending(path: document), encoding: .utf8)
            var inShell = false
            var pending = ""
            for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
                if line.hasPrefix("```") {
                    inShell = !inShell && ["```sh", "```bash"].contains(line)
                    continue
                }
                guard inShell else { continue }
                var code = line
                if let comment = code.range(of: #"\s{2,}# .*$"#, options: .regularExpression) { code.removeSubrange(comment) }
                if code.hasSuffix("\\") {
                    pending += code.dropLast() + " "
                    continue
                }
                code = pending + code
                pending = ""
                if code.range(of: #"(^|[\s|])ferry "#, options: .regularExpression) != nil { commands.append(code) }
            }
            if document == "ops/RUNBOOK.md" {
                // Its commands are templates (QUEUE, ID…); a bare `ferry job cancel` is a mention.
                for match in text.matches(of: /`(ferry [^`]+)`/) where match.1.contains("QUEUE") {
                    commands.append(
                        String(match.1).replacingOccurrences(of: "ID…", with: "ID").replacingOccurrences(
                            of: "QUEUE", with: "emails"
                        )
                        .replacingOccurrences(of: "JOB_ID", with: "invoice-2024-001")
                        .replacingOccurrences(of: "ID", with: "$DEAD_ID"))
                }
            }
        }
        return commands
    }

    @Test("the README, RUNBOOK and docs have ferry commands to run")
    func commandsFound() throws {
        let commands = try Self.documentedCommands()
        #expect(commands.count >= 20, "\(commands)")
        #expect(commands.contains { $0.contains("dlq purge emails --older-than 7d") })
    }

    @Test("every ferry command in the README, RUNBOOK and docs runs as written (exit 0 or 1, never 2 or 3)")
    func documentedCommandsRun() async throws {
        let server = try await RedisServerProcess()
        defer { Task { await server.stop() } }
        let scratch = FileManager.default.temporaryDirectory.appending(path: uniqueName("docs-run"))
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        func write(_ name: String, _ text: String, executable: Bool = false) throws {
            let path = scratch.appending(path: name).path()
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            if executable { chmod(path, 0o755) }
        }
        // What the examples name: a payload file, handlers, the push secrets.
        try write("receipt.json", #"{"order":42}"#)
        try write(
            "ingest.json",
            #"{"name": "ingest", "steps": [{"name": "parse", "type": "parse-doc"}, {"name": "chunk", "type": "chunk"}]}"#)
        try write("send-email.py", "#!/bin/sh\ncat > /dev/null\n", executable: true)
        try write("handle", "#!/bin/sh\ncat > /dev/null\n", executable: true)
        try write("push", "example secret\n")
        try write("ferry-push", "example secret\n")
        try FileManager.default.createSymbolicLink(
            atPath: scratch.appending(path: "ferry").path(), withDestinationPath: try ferryExecutable().path())
        // A dead-lettered job for the RUNBOOK's dlq and job retry commands.
        let redis = RedisConnection(configuration: try RedisConfiguration(url: server.url))
        let dead = QueueKeys(queue: "emails").deadLetter
        let deadID = try #require(
            try await redis.send(
                RedisCommand(
                    "XADD",
                    [
                        .string(dead), "*", "type", "send-welcome", "data", "{}", "job_id", "invoice-2024-001", "v", "1",
                        "dead_letter.source_group", "workers", "dead_letter.source_id", "1-0", "dead_letter.error_class", "x",
                        "dead_letter.error", "example",
                    ])
            ).string)
        let adminPort = try freeLoopbackPort()
        let environment = ProcessInfo.processInfo.environment.merging([
            "FERRY_REDIS_URL": server.url, "PATH": scratch.path() + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? ""),
            "DEAD_ID": deadID, "SCRATCH": scratch.path(),
        ]) { $1 }
        for command in try Self.documentedCommands() {
            let line = command.replacingOccurrences(of: "/run/secrets/", with: "")
                .replacingOccurrences(of: "--admin-port 9090", with: "--admin-port \(adminPort)")
            // The producer is a (bash) function: a script written just now can be "busy" (ETXTBSY)
            // while another test's fork still holds it open.
            let script = #"cd "$SCRATCH" && "# + line
            // Long-running commands: started, seen ready, stopped with SIGTERM, which must end them cleanly.
            let longRunning = [("ferry worker", "worker_started"), ("ferry serve", "listening on")].first {
                line.contains($0.0)
            }
            if let (command, ready) = longRunning {
                let log = scratch.appending(path: "long-running.log").path()
                // exec: SIGTERM reaches the command itself (assignments before exec still apply).
                let process = try ChildProcess(
                    try executable(named: "sh"),
                    [
                        "-c",
                        script.replacingOccurrences(of: command, with: "exec " + command).replacingOccurrences(
                            of: "--port 8080", with: "--port \(try freeLoopbackPort())"),
                    ],
                    environment: environment, standardOutput: log, standardError: log + ".err")
                let started = await eventually {
                    ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains(ready)
                }
                process.signal(SIGTERM)
                let status = await process.waitForExit(killAfter: .seconds(60))
                let errors = (try? String(contentsOfFile: log + ".err", encoding: .utf8)) ?? ""
                #expect(started && status == 0, "\(line): exit \(status) \(errors)")
            } else {
                let result = try await runProcess(
                    try executable(named: "bash"), ["-c", #"generate-report() { echo '{"report":1}'; }; "# + script],
                    environment: environment, timeout: .seconds(120))
                #expect([0, 1].contains(result.status), "\(line): exit \(result.status) \(result.standardError)")
            }
        }
    }
}
