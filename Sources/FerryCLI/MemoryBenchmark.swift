import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry bench memory`: the Redis memory a queue holds per job at a steady rate, with job
/// status off (the stream alone: the baseline) and on, so Redis can be sized from a rate and
/// the keep times.
struct MemoryBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "Redis bytes held per job at a steady rate, status off (the stream alone) and on.",
        discussion: """
            Publishes at --rate for --duration while a worker runs every job, with the retention and the keep time \
            of succeeded statuses both set to --keep (and the retention pass every quarter of it), so what the queue \
            holds stops growing after --keep: the steady state. Reads used_memory once a second; the steady-state \
            figure is the median over the last third of the run, minus the memory before. Bytes per job is that \
            divided by the jobs held (rate × keep). Run it on a Redis with nothing else changing.
            """)

    @Option(parsing: .unconditional, help: "Jobs per second, published in batches every 100 ms.")
    var rate = 500

    @Option(help: "How long acknowledged entries and succeeded statuses are kept (--retention, --keep-succeeded).")
    var keep = "15s"

    @Option(help: "How long each run publishes; at least 3 × --keep, so the last third is steady.")
    var duration = "45s"

    @OptionGroup var redis: RedisOptions

    /// One run's figures.
    struct Run {
        let name: String
        let steadyBytes: Double
        let jobsHeld: Double
        var bytesPerJob: Double { steadyBytes / jobsHeld }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let settings = Settings()
        let keep = try settings.duration(self.keep, option: "keep", variable: "", default: .seconds(15))
        let duration = try settings.duration(self.duration, option: "duration", variable: "", default: .seconds(45))
        guard rate > 0, keep >= .seconds(1), duration >= keep * 3 else {
            throw ValidationError("--rate must be positive, --keep at least 1s, --duration at least 3 × --keep")
        }
        let redisConfiguration = try redis.configuration()
        let connection = try await redis.connect(clientName: "ferry-bench")
        print(
            "Memory benchmark against \(connection.configuration.redactedURL): \(rate) jobs/s for \(duration), keep \(keep), no-op handler"
        )
        var runs: [Run] = []
        for status in [false, true] {
            let queue = try QueueName("ferry-bench-\(getpid())-memory-\(status ? "status" : "plain")")
            runs.append(
                try await measure(
                    queue, status: status, keep: keep, duration: duration, connection: connection, redis: redisConfiguration))
            try await cleanUp(queue, connection: connection)
        }
        let plain = runs[0]
        printTable(
            [["run", "steady-state bytes", "jobs held", "bytes/job", "ratio to status off"]]
                + runs.map { run in
                    [
                        run.name, String(format: "%.0f", run.steadyBytes), String(format: "%.0f", run.jobsHeld),
                        String(format: "%.0f", run.bytesPerJob), String(format: "%.2f", run.bytesPerJob / plain.bytesPerJob),
                    ]
                })
        let statusBytes = runs[1].bytesPerJob - plain.bytesPerJob
        print(
            String(
                format:
                    "Sizing: Redis memory ≈ jobs/s × (retention × %.0f B + keep-succeeded × %.0f B) for succeeded jobs, plus failed jobs × keep-failed × their status size. With the defaults (1 h each) at 1,000 jobs/s: %.1f GB.",
                plain.bytesPerJob, statusBytes, 1000 * 3600 * (plain.bytesPerJob + statusBytes) / 1e9))
    }

    /// Runs one steady-state measurement and returns its figures.
    private func measure(
        _ queue: QueueName, status: Bool, keep: Duration, duration: Duration, connection: RedisConnection,
        redis: RedisConfiguration
    ) async throws -> Run {
        var publishing = Publisher.Configuration()
        publishing.recordsStatus = status
        let publisher = Publisher(queue: queue, connection: connection, configuration: publishing)
        var configuration = Worker.Configuration()
        configuration.recordsStatus = status
        configuration.consumer = "bench"
        configuration.retention = keep
        configuration.keepSucceeded = keep
        configuration.retentionInterval = keep / 4
        let worker = Worker(
            queue: queue, redis: redis, handlers: ["noop": JobHandlerClosure { _ in }], configuration: configuration)
        let before = try await usedMemory(connection)
        let running = Task { try await worker.run() }
        let start = ContinuousClock.now
        let perTick = max(rate / 10, 1)
        var samples: [(at: Duration, bytes: Double)] = []
        var tick = 0
        var nextSample = start
        while ContinuousClock.now - start < duration {
            let due = start + .milliseconds(100) * tick
            if due > .now { try await Task.sleep(until: due) }
            _ = try await publisher.publish(Array(repeating: JobMessage(type: "noop", data: "{}"), count: perTick))
            tick += 1
            if ContinuousClock.now >= nextSample {
                samples.append((ContinuousClock.now - start, try await usedMemory(connection) - before))
                nextSample = nextSample + .seconds(1)
            }
        }
        worker.stop()
        try await running.value
        let steady = samples.filter { $0.at >= duration * 2 / 3 }.map(\.bytes).sorted()
        let median = steady.isEmpty ? 0 : steady[steady.count / 2]
        let held = Double(perTick * 10) * Double(keep.components.seconds)
        return Run(
            name: status ? "status on (with its index)" : "status off (baseline: the stream)", steadyBytes: median, jobsHeld: held
        )
    }

    private func usedMemory(_ connection: RedisConnection) async throws -> Double {
        let info = try await connection.send(RedisCommand("INFO", ["memory"])).string ?? ""
        let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("used_memory:") }
        return Double(line?.dropFirst("used_memory:".count) ?? "") ?? 0
    }
}
