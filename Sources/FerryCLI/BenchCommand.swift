import ArgumentParser
import Ferry
import FerryRedis
import Foundation
import Subprocess

/// `ferry bench`: throughput figures printed beside a baseline measured in the same run.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure Ferry against a plain-Redis baseline on the configured server.",
        discussion: """
            Every figure is printed beside a baseline measured in the same run on the same server, and \
            their ratio, so a loaded or slow machine moves both alike. Build with -c release for real figures.
            """,
        subcommands: [
            PublishBenchmark.self, WorkerBenchmark.self, MemoryBenchmark.self, ListBenchmark.self, ScheduleBenchmark.self,
            RetryBenchmark.self, LimitBenchmark.self, WorkflowBenchmark.self,
            PushBenchmark.self, APIBenchmark.self,
            LoopbackEndpoint.self,
        ])
}

/// Publish throughput, one at a time and batched, beside `redis-benchmark -c 1 -P <batch> XADD`
/// with the same fields on the same server, as a ratio. Build with `-c release` for real figures.
struct PublishBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish throughput beside redis-benchmark XADD.")

    @Option(parsing: .unconditional, help: "Jobs to publish batched.")
    var jobs = 200_000

    @Option(parsing: .unconditional, help: "Jobs to publish one at a time (each waits for its reply).")
    var singleJobs = 20_000

    @Option(parsing: .unconditional, help: "Jobs per pipelined batch, and redis-benchmark's -P.")
    var batch = 100

    @Option(parsing: .unconditional, help: "Payload size in bytes.")
    var payloadBytes = 64

    @Option(parsing: .unconditional, help: "Rounds of Ferry and baseline, alternating; the median is printed.")
    var rounds = 5

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        guard jobs > 0, singleJobs > 0, batch > 0, rounds > 0, payloadBytes >= 0, jobs >= batch else {
            throw ValidationError(
                "--jobs, --single-jobs, --batch and --rounds must be positive, --jobs at least --batch, --payload-bytes not negative"
            )
        }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let connection = try await redis.connect(clientName: "ferry-bench")
        let queue = try QueueName("ferry-bench-\(getpid())")
        var configuration = Publisher.Configuration()
        configuration.pipelineDepth = batch
        // Like for like with the plain XADD baseline: no status hash per job.
        configuration.recordsStatus = false
        let publisher = Publisher(queue: queue, connection: connection, configuration: configuration)
        let payload = String(repeating: "x", count: payloadBytes)
        let job = JobMessage(type: "bench", data: payload)

        var statusConfiguration = configuration
        statusConfiguration.recordsStatus = true
        let statusPublisher = Publisher(queue: queue, connection: connection, configuration: statusConfiguration)

        print(
            "Publish throughput against \(connection.configuration.redactedURL), payload \(payloadBytes) bytes, median of \(rounds) rounds; Redis CPU µs/job is the command thread's time per job"
        )
        // The baseline writes the same fields Ferry does (published_at as a fixed value). Ferry
        // and baseline alternate, so a noisy neighbour on the machine hits both alike.
        let fields = ["type", "bench", "data", payload, "published_at", "1700000000000", "v", "1"]
        let baselineKey = publisher.keys.prefix + ":baseline"
        let baselineCommand = ["XADD", baselineKey, "*"] + fields
        var single: [Round] = []
        var batched: [Round] = []
        var withStatus: [Round] = []
        let batch = Array(repeating: job, count: self.batch)
        let batchedJobs = jobs / self.batch * self.batch
        for _ in 0..<rounds {
            single.append(
                try await round(
                    connection, jobs: singleJobs, { _ = try await publisher.publish(job) },
                    baseline: { try await redisBenchmark(pipeline: 1, requests: singleJobs, command: baselineCommand) }))
            batched.append(
                try await round(
                    connection, jobs: batchedJobs, step: self.batch, { _ = try await publisher.publish(batch) },
                    baseline: { try await redisBenchmark(pipeline: self.batch, requests: jobs, command: baselineCommand) }))
            withStatus.append(
                try await round(
                    connection, jobs: batchedJobs, step: self.batch, { _ = try await statusPublisher.publish(batch) },
                    baseline: { try await redisBenchmark(pipeline: self.batch, requests: jobs, command: baselineCommand) }))
            try await cleanUp(queue, connection: connection)  // the baseline stream is one of its keys
        }

        printTable([
            ["", "ferry jobs/s", "redis-benchmark XADD/s", "ratio", "ferry Redis CPU µs/job", "XADD Redis CPU µs/job"],
            row("one at a time (-P 1), status hashes off", single),
            row("batched (-P \(self.batch)), status hashes off", batched),
            row("batched (-P \(self.batch)), status hashes on", withStatus),
        ])
        if single.contains(where: { $0.baseline == nil }) {
            print("redis-benchmark was not found (Debian: apt-get install redis-tools); no baseline measured.")
        }
        print("By command, µs per job, last round (from INFO commandstats; a script's row includes the commands it calls):")
        for (label, rounds) in [("one at a time", single), ("batched", batched), ("batched, status on", withStatus)] {
            if let last = rounds.last {
                print("  ferry \(label): \(last.ferryTime.breakdown)")
                if let baselineTime = last.baselineTime { print("  XADD \(label): \(baselineTime.breakdown)") }
            }
        }
        // A run of its own with every command logged: where the scripts' time went.
        let scripts = try await ScriptTimeReport.measure(connection, jobs: batchedJobs) {
            for _ in 0..<(batchedJobs / self.batch) { _ = try await statusPublisher.publish(batch) }
        }
        try await cleanUp(queue, connection: connection)
        print(
            "By script, µs per job, batched with status on (a run of its own with Redis's slowlog logging every command): "
                + (scripts.map { $0.breakdown.isEmpty ? "no script ran" : $0.breakdown }
                    ?? "not measured: the server refused CONFIG SET slowlog-log-slower-than, or its slowlog filled"))
    }

    /// One measured run of Ferry and of its baseline: rates and Redis time.
    struct Round {
        var ferry: Double
        var ferryTime: RedisTimeReport
        var baseline: Double?
        var baselineTime: RedisTimeReport?
    }

    /// Measures `body` (`jobs` jobs, `step` per call) and then the baseline, each with its Redis time.
    private func round(
        _ connection: RedisConnection, jobs: Int, step: Int = 1, _ body: () async throws -> Void,
        baseline: () async throws -> Double?
    ) async throws -> Round {
        var rate = 0.0
        let ferryTime = try await RedisTimeReport.measure(connection, jobs: jobs) {
            rate = try await measure(jobs: jobs, step: step, body)
        }
        var baselineRate: Double?
        let baselineTime = try await RedisTimeReport.measure(connection, jobs: jobs) { baselineRate = try await baseline() }
        return Round(
            ferry: rate, ferryTime: ferryTime, baseline: baselineRate, baselineTime: baselineRate == nil ? nil : baselineTime)
    }

    /// Runs `body` until `jobs` jobs are done, `step` jobs per call, and returns jobs per second.
    private func measure(jobs: Int, step: Int = 1, _ body: () async throws -> Void) async throws -> Double {
        let start = ContinuousClock.now
        for _ in 0..<(jobs / step) { try await body() }
        return Double(jobs) / secondsSince(start)
    }

    private func row(_ label: String, _ rounds: [Round]) -> [String] {
        let rate = median(rounds.map(\.ferry))
        let baselines = rounds.compactMap(\.baseline)
        let baseline = baselines.isEmpty ? nil : median(baselines)
        let ratio = baselines.count == rounds.count ? median(rounds.map { $0.ferry / $0.baseline! }) : nil
        let baselineTimes = rounds.compactMap { $0.baselineTime?.microsecondsPerJob }
        return [
            label, String(format: "%.0f", rate), baseline.map { String(format: "%.0f", $0) } ?? "-",
            ratio.map { String(format: "%.2f", $0) } ?? "-",
            String(format: "%.1f", median(rounds.map(\.ferryTime.microsecondsPerJob))),
            baselineTimes.isEmpty ? "-" : String(format: "%.1f", median(baselineTimes)),
        ]
    }

    /// Runs `redis-benchmark -c 1` with the same server settings and returns its requests per second.
    private func redisBenchmark(pipeline: Int, requests: Int, command: [String]) async throws -> Double? {
        let configuration = try redis.configuration()
        var arguments = [
            "-c", "1", "-n", String(requests), "-P", String(pipeline), "--csv", "--dbnum", String(configuration.database),
        ]
        switch configuration.endpoint {
        case .tcp(let host, let port): arguments += ["-h", host, "-p", String(port)]
        case .unixSocket(let path): arguments += ["-s", path]
        }
        if let user = configuration.username { arguments += ["--user", user] }
        if let password = configuration.password { arguments += ["-a", password, "--no-auth-warning"] }
        let status: TerminationStatus
        let output: String
        let errorOutput: String
        do {
            // The CSV line echoes the command, payload included: read it whole, however large.
            let result = try await Subprocess.run(
                .name("redis-benchmark"), arguments: Arguments(arguments + command),
                output: .string(limit: 64 << 20), error: .string(limit: 1 << 16))
            (status, output, errorOutput) = (result.terminationStatus, result.standardOutput, result.standardError)
        } catch {
            if executableOnPath("redis-benchmark") { throw BaselineFailure("redis-benchmark could not run: \(error)") }
            return nil
        }
        // --csv prints a header line, then "command","rps", and six latency columns.
        let lines = output.split(separator: "\n")
        let columns =
            lines.count >= 2
            ? lines[1].split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) } : []
        guard status.isSuccess, columns.count >= 8, let rate = Double(columns[columns.count - 7]) else {
            throw BaselineFailure(
                "redis-benchmark failed (\(status)): \(FailureText.keepingEnd(errorOutput, limit: 500))")
        }
        return rate
    }
}

/// The baseline tool was there but failed: said as such, never as a missing tool.
struct BaselineFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Whether an executable of this name is on `PATH`.
func executableOnPath(_ name: String) -> Bool {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    return path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(name)") }
}

/// The middle value of a benchmark's rounds (the upper middle for an even count).
func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

/// Seconds elapsed since `start`, as a Double for rates.
/// Deletes every key of a benchmark's queue, `ferry:{Q}:*` (`SCAN MATCH`, `UNLINK`), outside the
/// measurements.
func cleanUp(_ queue: QueueName, connection: RedisConnection) async throws {
    let found = try await connection.scanKeys(matching: QueueKeys(queue: queue).prefix + ":*")
    for chunk in stride(from: 0, to: found.count, by: 1000) {
        try await connection.send(RedisCommand("UNLINK", found[chunk..<min(chunk + 1000, found.count)].map { .bytes($0) }))
    }
}

/// The nearest-rank percentile `p` (0 to 1) of `values`; 0 for none.
func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

/// Prints times in milliseconds, p50, p99 and max, for a run beside its baseline, with the
/// ratio of the two at `ratioAt` (0.5 or 0.99): how every latency benchmark reports.
func printLatencies(
    _ run: (name: String, values: [Double]), baseline: (name: String, values: [Double]), ratioAt: Double, decimals: Int
) {
    let format = "%.\(decimals)f"
    func row(_ name: String, _ values: [Double], ratio: String) -> [String] {
        [
            name, String(format: format, percentile(values, 0.5)), String(format: format, percentile(values, 0.99)),
            String(format: format, values.max() ?? 0), ratio,
        ]
    }
    let ratio = percentile(run.values, ratioAt) / max(percentile(baseline.values, ratioAt), 0.001)
    printTable([
        ["run", "p50 ms", "p99 ms", "max ms", ratioAt == 0.5 ? "ratio (p50)" : "ratio (p99)"],
        row(run.name, run.values, ratio: String(format: "%.2f", ratio)),
        row(baseline.name, baseline.values, ratio: "1"),
    ])
}

func secondsSince(_ start: ContinuousClock.Instant) -> Double {
    let (seconds, attoseconds) = (ContinuousClock.now - start).components
    return Double(seconds) + Double(attoseconds) / 1e18
}
