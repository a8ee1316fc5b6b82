import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// What the `ferry` command says and exits with when given something odd: each case was a defect
/// a new user met (issue 11), checked through the built binary.
@Suite("ferry command line: clear errors, one exit-code rule")
struct CommandLineContractTests {
    private func ferry(_ arguments: String...) async throws -> ProcessResult {
        try await runProcess(
            try ferryExecutable(), arguments, environment: ["FERRY_REDIS_URL": try await TestRedis.sharedURL()])
    }

    @Test("ferry --version prints the version and the wire format")
    func version() async throws {
        let result = try await ferry("--version")
        #expect(result.status == 0)
        #expect(result.standardOutput.hasPrefix("ferry ") && result.standardOutput.contains("wire format v1"))
    }

    @Test("help prints each default once")
    func helpDefaults() async throws {
        let help = try await ferry("pending", "--help")
        let text = help.standardOutput.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(text.components(separatedBy: "(default: workers)").count - 1 == 1, "\(text)")
        #expect(!text.contains("default workers"))
    }

    @Test(
        "negative numbers and durations say what is wrong, with exit 2",
        arguments: [
            (["publish", "q", "--type", "t", "--count", "-1"], "--count must be at least 1 (got -1)"),
            (["pending", "q", "--min-idle", "-5s"], "a duration cannot be negative"),
            (["peek", "q", "--count", "-3"], "--count must be at least 1 (got -3)"),
            (["worker", "q", "--exec", "true", "--lease", "-1s"], "a duration cannot be negative"),
            (["worker", "q", "--exec", "true", "--concurrency", "-4"], "concurrency must be 1 to 1000 (got -4)"),
            (
                ["worker", "q", "--exec", "true", "--jitter", "some"],
                "invalid value \"some\" for --jitter: use full, equal, none"
            ),
            (["worker", "q", "--exec", "true", "--backoff", "linear"], "for --backoff: use exponential, fixed"),
            (["worker", "q", "--exec", "true", "--backoff-factor", "0.5"], "write a number from 1 to 100"),
            (
                ["worker", "q", "--exec", "true", "--backoff", "fixed", "--backoff-factor", "3"],
                "--backoff-factor applies to --backoff exponential, not fixed"
            ),
        ])
    func negativeNumbers(arguments: [String], message: String) async throws {
        let result = try await runProcess(
            try ferryExecutable(), arguments, environment: ["FERRY_REDIS_URL": try await TestRedis.sharedURL()])
        #expect(result.status == 2)
        #expect(result.standardError.contains(message), "\(result.standardError)")
        #expect(!result.standardError.contains("Missing value"))
    }

    @Test("a full queue refuses ferry publish with exit 4, naming the depth and how to raise it; --max-depth none lifts it")
    func fullQueueExitsFour() async throws {
        let queue = uniqueName("full")
        #expect(try await ferry("queue", "set", queue, "--max-depth", "2").status == 0)
        #expect(try await ferry("publish", queue, "--type", "t", "--data", "x", "--count", "2").status == 0)
        let refused = try await ferry("publish", queue, "--type", "t", "--data", "x")
        #expect(refused.status == 4)
        #expect(refused.standardError.contains("queue \(queue) is full: 2 jobs not yet finished"), "\(refused.standardError)")
        #expect(refused.standardError.contains("ferry queue set \(queue) --max-depth N"))
        #expect(try await ferry("queue", "set", queue, "--max-depth", "none").status == 0)
        #expect(try await ferry("publish", queue, "--type", "t", "--data", "x").status == 0)
    }

    @Test("a key at its quota refuses ferry publish --key with exit 4, naming the key; other keys publish; none lifts it")
    func keyQuotaExitsFour() async throws {
        let queue = uniqueName("quota")
        #expect(try await ferry("queue", "set", queue, "--max-pending-per-key", "1").status == 0)
        #expect(try await ferry("publish", queue, "--type", "t", "--key", "user-7").status == 0)
        let refused = try await ferry("publish", queue, "--type", "t", "--key", "user-7")
        #expect(refused.status == 4)
        #expect(
            refused.standardError.contains("key \"user-7\" of queue \(queue) has 1 jobs not yet finished"),
            "\(refused.standardError)")
        #expect(refused.standardError.contains("--max-pending-per-key N"))
        #expect(try await ferry("publish", queue, "--type", "t", "--key", "user-8").status == 0)
        #expect(try await ferry("queue", "set", queue, "--max-pending-per-key", "none").status == 0)
        #expect(try await ferry("publish", queue, "--type", "t", "--key", "user-7").status == 0)
        #expect(try await ferry("queue", "set", queue).status == 2, "nothing to set")
    }

    @Test("durations take days: the RUNBOOK's dlq purge --older-than 7d runs")
    func daysInDurations() async throws {
        let queue = uniqueName("days")
        #expect(try await ferry("publish", queue, "--type", "t", "--data", "x").status == 0)
        let purge = try await ferry("dlq", "purge", queue, "--older-than", "7d")
        #expect(purge.status == 0, "\(purge.standardError)")
        #expect(purge.standardOutput.contains("0 jobs purged"))
    }

    @Test("dlq show of a malformed ID exits 2 with a clear message, not 3 with Redis's error")
    func malformedDeadLetterID() async throws {
        let queue = uniqueName("dlqid")
        #expect(try await ferry("publish", queue, "--type", "t", "--data", "x").status == 0)
        let result = try await ferry("dlq", "show", queue, "notanid")
        #expect(result.status == 2)
        #expect(result.standardError.contains("\"notanid\" is not a dead-letter entry ID"), "\(result.standardError)")
    }

    @Test("an unknown queue exits 1 from inspect, peek and dlq list alike", arguments: [["inspect"], ["peek"], ["dlq", "list"]])
    func unknownQueue(command: [String]) async throws {
        let result = try await runProcess(
            try ferryExecutable(), command + [uniqueName("nosuch")],
            environment: ["FERRY_REDIS_URL": try await TestRedis.sharedURL()])
        #expect(result.status == 1, "\(result.standardError)")
        #expect(result.standardError.contains("does not exist"))
    }

    @Test("job cancel of an unknown job exits 1 and records nothing; --force records the request")
    func cancelUnknownJob() async throws {
        let queue = uniqueName("cancel")
        let unknown = try await ferry("job", "cancel", queue, "does-not-exist")
        #expect(unknown.status == 1)
        #expect(unknown.standardError.contains("is unknown") && unknown.standardError.contains("--force"))
        let redis = try await TestRedis.connection()
        let keys = QueueKeys(queue: try QueueName(queue))
        #expect(try await redis.send(RedisCommand("EXISTS", [.string(keys.cancelRequests)])) == .integer(0))
        let forced = try await ferry("job", "cancel", queue, "does-not-exist", "--force")
        #expect(forced.status == 0, "\(forced.standardError)")
        #expect(try await redis.send(RedisCommand("ZSCORE", [.string(keys.cancelRequests), "does-not-exist"])) != .null)
    }

    @Test("group seek to a time prints the time, not a raw ID")
    func seekPrintsTime() async throws {
        let queue = uniqueName("seek")
        #expect(try await ferry("group", "create", queue, "g").status == 0)
        let result = try await ferry("group", "seek", queue, "g", "--to", "2026-11-23T09:00:00Z")
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.contains("2026-11-23T09:00:00"), "\(result.standardOutput)")
        #expect(!result.standardOutput.contains("18446744073709551615"))
    }

    @Test("an empty pipe into ferry publish (the producer failed) publishes nothing, exit 2; --allow-empty publishes")
    func emptyPipeRefused() async throws {
        let queue = uniqueName("pipe")
        let environment = [
            "FERRY_REDIS_URL": try await TestRedis.sharedURL(), "FERRY_BIN": try ferryExecutable().path(), "QUEUE": queue,
        ]
        let refused = try await runProcess(
            try executable(named: "sh"), ["-c", #"false | "$FERRY_BIN" publish "$QUEUE" --type t"#], environment: environment)
        #expect(refused.status == 2)
        #expect(refused.standardError.contains("standard input was empty"), "\(refused.standardError)")
        let redis = try await TestRedis.connection()
        let keys = QueueKeys(queue: try QueueName(queue))
        #expect(try await redis.send(RedisCommand("XLEN", [.string(keys.jobs)])) == .integer(0))
        let allowed = try await runProcess(
            try executable(named: "sh"), ["-c", #"true | "$FERRY_BIN" publish "$QUEUE" --type t --allow-empty"#],
            environment: environment)
        #expect(allowed.status == 0, "\(allowed.standardError)")
        #expect(try await redis.send(RedisCommand("XLEN", [.string(keys.jobs)])) == .integer(1))
    }

    @Test("ferry publish sets max_attempts, timeout_ms and traceparent; a bad traceparent is refused")
    func publishOptions() async throws {
        let queue = uniqueName("opts")
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let result = try await ferry(
            "publish", queue, "--type", "t", "--data", "x", "--max-attempts", "2", "--timeout", "30s", "--traceparent",
            traceparent)
        #expect(result.status == 0, "\(result.standardError)")
        let redis = try await TestRedis.connection()
        let keys = QueueKeys(queue: try QueueName(queue))
        let job = try #require(
            StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(keys.jobs), "-", "+"]))).first
        )
        .decodedJob()
        #expect(job.maxAttempts == 2)
        #expect(job.timeout == .seconds(30))
        #expect(job.traceparent == traceparent)
        let bad = try await ferry("publish", queue, "--type", "t", "--traceparent", "not-a-trace")
        #expect(bad.status == 2)
        #expect(bad.standardError.contains("--traceparent"))
    }

    @Test("bench publish with a 64 KiB payload measures its baseline: redis-benchmark's long output is read whole")
    func benchLargePayload() async throws {
        let result = try await ferry(
            "bench", "publish", "--payload-bytes", "65536", "--jobs", "200", "--single-jobs", "20", "--batch", "100", "--rounds",
            "1")
        #expect(result.status == 0, "\(result.standardError)")
        #expect(!result.standardOutput.contains("not found"), "\(result.standardOutput)")
        let batched = try #require(result.lines.first { $0.contains("batched (-P 100), status hashes off") })
        let cells = batched.components(separatedBy: "  ").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        #expect(cells.count == 6 && cells.dropFirst().allSatisfy { Double($0) != nil }, "rates, ratio and Redis time: \(batched)")
        let byCommand = try #require(result.lines.first { $0.contains("ferry batched, status on: ") })
        #expect(byCommand.contains("fcall") && byCommand.contains("xadd"), "the Redis time by command: \(byCommand)")
    }

    /// Runs a short `ferry bench worker` (`jobs` jobs a run and for the baseline, one second of
    /// latency at 50 jobs/s) with `arguments` against `server`, a server of the test's own: the
    /// slowlog and INFO count every client's commands. Expects it to exit 0.
    private func benchWorker(on server: RedisServerProcess, jobs: Int, _ arguments: [String]) async throws -> ProcessResult {
        try await bench(
            on: server,
            ["worker", "--jobs", "\(jobs)", "--baseline-jobs", "\(jobs)", "--latency-seconds", "1", "--rate", "50"] + arguments)
    }

    /// Runs `ferry bench` with `arguments` against `server`; expects it to exit 0.
    private func bench(on server: RedisServerProcess, _ arguments: [String]) async throws -> ProcessResult {
        let result = try await runProcess(
            try ferryExecutable(), ["bench"] + arguments, environment: ["FERRY_REDIS_URL": server.url])
        #expect(result.status == 0, "\(result.standardError)")
        return result
    }

    @Test(
        "bench worker prints Redis time per job by command and by script, the scripts timed by Redis's slowlog, whose settings it puts back, and the defaults' rate beside status off at 256, also at another concurrency (--defaults-at)"
    )
    func benchWorkerByScript() async throws {
        let server = try await RedisServerProcess()
        defer { Task { await server.stop() } }
        let result = try await benchWorker(
            on: server, jobs: 400,
            [
                "--concurrency", "1", "--concurrency", "8", "--concurrency", "256", "--defaults-rounds", "2", "--defaults-at",
                "32",
            ])
        // With concurrency 1 measured, the plain loop reading one job at a time too, as its yardstick.
        #expect(
            result.lines.contains { $0.hasPrefix("redis-py, one job a read") && $0.contains("× Redis time") },
            "\(result.standardOutput)")
        // The job store issue's figure, in the same run: the defaults with JSON logs against 256
        // without, back to back in each round, the median of the rounds with their range.
        let defaults = try #require(result.lines.first { $0.hasPrefix("A worker with the defaults") }, "\(result.standardOutput)")
        let figure = try #require(
            defaults.firstMatch(
                of:
                    #/
                    : \ \d+\ jobs/s,\ ([0-9.]+)\ of\ status\ off\ at\ concurrency\ 256\ without\ logs
                    \ \(the\ median\ of\ 2\ rounds,\ each\ the\ two\ back\ to\ back;\ ([0-9.]+)-([0-9.]+)\)$
                    /#), "\(defaults)")
        let (ratio, lowest, highest) = (Double(figure.1) ?? -1, Double(figure.2) ?? -1, Double(figure.3) ?? -1)
        #expect(ratio > 0 && lowest <= ratio && ratio <= highest, "\(defaults)")
        // The same worker at another concurrency (--defaults-at), measured the same way, on the next line.
        let at = try #require(result.lines.firstIndex { $0.hasPrefix("A worker with the defaults") })
        let other = result.lines[at + 1]
        let otherFigure = try #require(
            other.firstMatch(
                of:
                    #/
                    ^The\ same\ worker\ at\ concurrency\ 32:\ \d+\ jobs/s,\ ([0-9.]+)\ of\ status\ off\ at\ concurrency\ 256\ without\ logs
                    \ \(the\ median\ of\ 2\ rounds,\ each\ the\ two\ back\ to\ back;\ [0-9.]+-[0-9.]+\)$
                    /#), "\(result.standardOutput)")
        #expect((Double(otherFigure.1) ?? -1) > 0, "\(other)")
        let heading = try #require(result.lines.firstIndex { $0.hasPrefix("By script") }, "\(result.standardOutput)")
        let byCommand = try #require(result.lines[..<heading].first { $0.hasPrefix("  ferry, concurrency 8, status on: ") })
        #expect(byCommand.contains("fcall") && byCommand.contains("hset"), "\(byCommand)")
        // The server is new, so some run would load Ferry's library: the bench loads it before it
        // measures, as the load is once per Redis, not a cost of any run's jobs.
        #expect(
            !result.lines[..<heading].contains { $0.contains("function|load") },
            "the once-per-Redis FUNCTION LOAD counted against a run's jobs:\n\(result.standardOutput)")
        let byScript = try #require(result.lines[heading...].first { $0.hasPrefix("  ferry, concurrency 8, status on: ") })
        // A rate under 0.1 a job reads as a batch's size: "(1 per 400 jobs)", not "(0.00/job)".
        let ack = try #require(
            byScript.firstMatch(of: /ack ([0-9.]+) µs \((?:([0-9.]+)\/job|1 per ([0-9]+) jobs)\)/), "\(byScript)")
        #expect(Double(ack.1) ?? 0 > 0 && (ack.2.flatMap { Double($0) } ?? ack.3.flatMap { Double($0) } ?? 0) > 0, "\(byScript)")
        #expect(!byScript.contains("0.00/job"), "\(byScript)")
        let redis = RedisConnection(configuration: try RedisConfiguration(url: server.url))
        let threshold = try await redis.send(RedisCommand("CONFIG", ["GET", "slowlog-log-slower-than"])).array?.last?.string
        #expect(threshold == "10000", "the server's own setting is back")
    }

    @Test(
        "bench api runs wrk against a trivial route, the publish route and the publish route with an Idempotency-Key each, every answer 2xx, and prints each rate and its ratio to the trivial route"
    )
    func benchAPI() async throws {
        let server = try await RedisServerProcess()
        defer { Task { await server.stop() } }
        let result = try await bench(
            on: server, ["api", "--seconds", "1", "--rounds", "1", "--connections", "4", "--threads", "1"])
        for run in ["trivial Hummingbird route", "POST /v1/queues/Q/jobs (publish)", "the same, an Idempotency-Key each"] {
            let line = try #require(result.lines.first { $0.hasPrefix(run) }, "\(result.standardOutput)")
            let cells = line.dropFirst(run.count).split(separator: " ").map { Double($0) }
            #expect(cells.count == 3 && cells.allSatisfy { ($0 ?? 0) > 0 }, "requests/s, p50 and p99: \(line)")
        }
        for ratio in ["ratio publish/trivial: ", "ratio publish with an Idempotency-Key/trivial: "] {
            let line = try #require(result.lines.first { $0.hasPrefix(ratio) }, "\(result.standardOutput)")
            #expect((Double(line.dropFirst(ratio.count).prefix { $0 != " " }) ?? 0) > 0, "\(line)")
        }
    }

    @Test(
        "bench worker --workers runs that many workers on each queue, beside as many plain loops reading one job at a time, every job handled; --compare-carried-reads runs each row again with reads on the reader only"
    )
    func benchWorkerFleet() async throws {
        let server = try await RedisServerProcess()
        defer { Task { await server.stop() } }
        let result = try await benchWorker(
            on: server, jobs: 300, ["--concurrency", "1", "--workers", "3", "--compare-carried-reads"])
        for run in [
            "3 plain loops, one job a read: XACK pipelined with the next XREADGROUP COUNT 1",
            "ferry, 3 workers at concurrency 1, status off",
            "ferry, 3 workers at concurrency 1, status on",
            "ferry, 3 workers at concurrency 1, status on, reads on the reader only",
        ] {
            let line = try #require(result.lines.first { $0.hasPrefix(run) }, "\(result.standardOutput)")
            let cells = line.dropFirst(run.count).split(separator: " ").prefix(2).map { Double($0) }
            #expect(cells.count == 2 && cells.allSatisfy { ($0 ?? 0) > 0 }, "jobs/s and Redis µs a job: \(line)")
        }
        let fleet = try #require(result.lines.first { $0.hasPrefix("ferry, 3 workers at concurrency 1, status on") })
        #expect(fleet.firstMatch(of: /; [0-9.]+× the plain loops' Redis time$/) != nil, "\(fleet)")
        let own = try #require(result.lines.first { $0.hasPrefix("ferry, 3 workers at concurrency 1, status off, reads on") })
        #expect(own.firstMatch(of: /; carried reads: [0-9.]+× its jobs\/s, [0-9.]+× its Redis time$/) != nil, "\(own)")
        let breakdown = try #require(result.lines.first { $0.hasPrefix("  3 plain loops, one job a read") })
        #expect(breakdown.contains("xreadgroup") && breakdown.contains("(1.00/job)"), "one read a job: \(breakdown)")
        #expect(try await ferry("bench", "worker", "--workers", "0").status == 2, "--workers must be 1 to 256")
        #expect(try await ferry("bench", "worker", "--defaults-rounds", "0").status == 2, "--defaults-rounds must be 1 to 25")
        #expect(try await ferry("bench", "worker", "--defaults-at", "0").status == 2, "--defaults-at must be 1 to 1000")
    }

    @Test("bench memory prints bytes per job held at a steady rate, status off (the baseline) and on, and the sizing formula")
    func benchMemory() async throws {
        let result = try await ferry("bench", "memory", "--rate", "200", "--keep", "1s", "--duration", "3s")
        #expect(result.status == 0, "\(result.standardError)")
        for run in ["status off (baseline: the stream)", "status on (with its index)"] {
            let line = try #require(result.lines.first { $0.hasPrefix(run) }, "\(result.standardOutput)")
            let cells = line.dropFirst(run.count).split(separator: " ").map(String.init)
            #expect(cells.count == 4 && cells.allSatisfy { Double($0) != nil }, "bytes, jobs held, bytes/job, ratio: \(line)")
        }
        #expect(result.lines.contains { $0.hasPrefix("Sizing: Redis memory ≈ jobs/s × (retention × ") })
        #expect(try await ferry("bench", "memory", "--keep", "10s", "--duration", "20s").status == 2, "duration under 3 × keep")
    }

    @Test("bench schedule prints the lateness of jobs due at once beside the same jobs published at once, none run twice")
    func benchSchedule() async throws {
        let result = try await ferry("bench", "schedule", "--jobs", "300", "--lead", "2s")
        #expect(result.status == 0, "\(result.standardError)")
        for run in ["scheduled, all due at once", "published at once (baseline)"] {
            #expect(result.lines.contains { $0.hasPrefix(run) }, "\(result.standardOutput)")
        }
        #expect(result.lines.contains { $0.hasPrefix("started: 300 of 300 scheduled, 0 twice") }, "\(result.standardOutput)")
    }

    @Test("bench limits prints both runs with jobs/s and Redis time, their ratio, and the limits' own cost per job")
    func benchLimits() async throws {
        let result = try await ferry("bench", "limits", "--jobs", "300", "--rounds", "1")
        #expect(result.status == 0, "\(result.standardError)")
        let limited = try #require(result.lines.first { $0.hasPrefix("a concurrency limit and a rate, never reached") })
        #expect(limited.contains(" jobs/s, ") && limited.contains("× Redis time"), "\(limited)")
        #expect(result.lines.contains { $0.hasPrefix("no limits (baseline)") }, "\(result.standardOutput)")
        #expect(result.lines.contains { $0.hasPrefix("The limits' own cost: ") }, "\(result.standardOutput)")
    }
}
