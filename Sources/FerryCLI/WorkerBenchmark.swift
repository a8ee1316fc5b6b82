import ArgumentParser
import Ferry
import FerryRedis
import Foundation
import Logging
import Subprocess
import Synchronization

/// `ferry bench worker`: end-to-end throughput and start latency of the worker, beside a plain
/// redis-py consumer-group loop on the same server in the same run.
struct WorkerBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Worker throughput (publish to ack) and start latency, beside a redis-py consumer loop.")

    @Option(parsing: .unconditional, help: "Jobs per throughput run.")
    var jobs = 20_000

    @Option(parsing: .unconditional, help: "Jobs of the redis-py baseline run: enough that it lasts seconds.")
    var baselineJobs = 200_000

    @Option(name: .customLong("concurrency"), help: "Worker concurrency to measure; repeat for several.")
    var concurrencies = [1, 16, 256]

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "Workers sharing the queue in each throughput run, each with --concurrency.",
            discussion:
                "Several workers at concurrency 1 read and acknowledge one or two jobs at a time while keeping Redis busy, as a fleet of containers running slow handlers does: what a job costs Redis at small batches when Redis, not the workers, is the limit."
        ))
    var workers = 1

    @Option(parsing: .unconditional, help: "Seconds of steady publishing at --rate for the latency measurement.")
    var latencySeconds = 5

    @Option(parsing: .unconditional, help: "Jobs per second for the latency measurement.")
    var rate = 1000

    /// What the measured workers log.
    enum Logs: String, CaseIterable, ExpressibleByArgument {
        case none
        /// Info lines as a production worker writes them, into /dev/null.
        case json
    }

    @Option(help: "Worker logs: none, or json (info lines as a production worker writes them, into /dev/null).")
    var logFormat = Logs.none

    @Flag(
        help:
            "Also run each row with reads on the reader's own connection only, never carried by the flush that acknowledges the jobs in flight: what carried reads change, in the same run."
    )
    var compareCarriedReads = false

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "Rounds of the defaults figure: a worker with the defaults and status off at concurrency 256, alternated.",
            discussion:
                "This machine's speed can move by half within minutes, so one run of each, minutes apart, measures the machine as much as the worker: each round runs the two back to back and the figure is the median of the rounds' ratios, printed with their range."
        ))
    var defaultsRounds = 3

    @Option(
        name: .customLong("defaults-at"),
        parsing: .singleValue,
        help: ArgumentHelp(
            "Also measure the defaults figure with this concurrency instead of the default's (everything else as deployed); repeat for several.",
            discussion:
                "Where the figure's ceiling is: at concurrency 256 a worker's batches are as large as they come, so a lower concurrency, read-ahead and all, can at best run as the same status and logs do there."
        ))
    var defaultsAt: [Int] = []

    @Option(
        name: .customLong("read-ahead"),
        help: ArgumentHelp(
            "The read-ahead of every measured worker (default: a worker's default, 256).",
            discussion:
                "0 measures workers that take only what they can start at once: what read-ahead changes, run beside a default run."
        ))
    var readAhead: Int?

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        guard jobs > 0, baselineJobs > 0, latencySeconds > 0, rate > 0 else {
            throw ValidationError("--jobs, --baseline-jobs, --latency-seconds and --rate must be positive")
        }
        guard concurrencies.allSatisfy({ (1...1000).contains($0) }) else {
            throw ValidationError("--concurrency must be 1 to 1000")
        }
        guard (1...256).contains(workers) else { throw ValidationError("--workers must be 1 to 256") }
        guard (1...25).contains(defaultsRounds) else { throw ValidationError("--defaults-rounds must be 1 to 25") }
        guard defaultsAt.allSatisfy({ (1...1000).contains($0) }) else {
            throw ValidationError("--defaults-at must be 1 to 1000")
        }
        guard readAhead.map({ (0...10_000).contains($0) }) ?? true else {
            throw ValidationError("--read-ahead must be 0 to 10000")
        }
    }

    /// Counts handled jobs and collects start latencies, from any handler task.
    final class Tally: Sendable {
        let state = Mutex((count: 0, latencies: [Double]()))
        func record(latency: Double?) {
            state.withLock {
                $0.count += 1
                if let latency { $0.latencies.append(latency) }
            }
        }
        var count: Int { state.withLock { $0.count } }
    }

    func run() async throws {
        (logFormat == .json ? LogOutput.jsonDiscarded : .text).bootstrap()
        let redisConfiguration = try redis.configuration()
        let connection = try await redis.connect(clientName: "ferry-bench")
        print(
            "Worker benchmark against \(redisConfiguration.redactedURL): \(jobs) jobs per run, no-op Swift handler, "
                + (logFormat == .json ? "JSON info logs into /dev/null" : "no logs")
                + ", read-ahead \(readAhead ?? Worker.Configuration().readAhead)")

        var rows: [[String]] = [["run", "jobs/s", "Redis CPU µs/job", "ratio to baseline"]]
        var breakdowns: [(String, RedisTimeReport)] = []
        var scripts: [(String, ScriptTimeReport?)] = []
        var baseline: Double?
        let baselineTime = try await RedisTimeReport.measure(connection, jobs: baselineJobs) {
            baseline = try await pythonBaseline(jobs: baselineJobs, perRead: 100)
        }
        // Outside the measurement: deleting a stream is no part of a job's cost.
        try await connection.send(RedisCommand("UNLINK", [.string("ferry-bench:\(getpid()):baseline")]))
        let baselineName = "redis-py: XADD pipelined; XACK pipelined with the next XREADGROUP COUNT 100 (baseline)"
        rows.append([baselineName, baseline.map { String(format: "%.0f", $0) } ?? "-", baselineTime.cell, "1"])
        breakdowns.append((baselineName, baselineTime))
        // The ratio column: a run's jobs/s (when the baseline ran) and Redis time against the baseline's.
        func againstBaseline(rate: Double, time: RedisTimeReport) -> String {
            (baseline.map { String(format: "%.2f jobs/s, ", rate / $0) } ?? "")
                + String(format: "%.2f× Redis time", time.microsecondsPerJob / max(baselineTime.microsecondsPerJob, 0.001))
        }
        if concurrencies.contains(1), baseline != nil {
            // What one job a read costs Redis even without Ferry: the figure to read concurrency 1's beside.
            let jobs = min(baselineJobs, 20_000)
            var single: Double?
            let singleTime = try await RedisTimeReport.measure(connection, jobs: jobs) {
                single = try await pythonBaseline(jobs: jobs, perRead: 1)
            }
            try await connection.send(RedisCommand("UNLINK", [.string("ferry-bench:\(getpid()):baseline")]))
            let name = "redis-py, one job a read: XACK pipelined with the next XREADGROUP COUNT 1"
            rows.append([
                name, single.map { String(format: "%.0f", $0) } ?? "-", singleTime.cell,
                againstBaseline(rate: single ?? 0, time: singleTime),
            ])
            breakdowns.append((name, singleTime))
        }
        // Workers at concurrency 1 beside as many plain loops reading one job at a time.
        var plainLoopsTime: RedisTimeReport?
        if concurrencies.contains(1), workers > 1 {
            let jobs = jobs
            var rate = 0.0
            let time = try await RedisTimeReport.measure(connection, jobs: jobs) {
                rate = try await Self.plainLoops(jobs: jobs, loops: workers, redis: redisConfiguration)
            }
            let name = "\(workers) plain loops, one job a read: XACK pipelined with the next XREADGROUP COUNT 1"
            rows.append([name, String(format: "%.0f", rate), time.cell, againstBaseline(rate: rate, time: time)])
            breakdowns.append((name, time))
            plainLoopsTime = time
        }
        for status in [false, true] {
            for concurrency in concurrencies {
                var rate = 0.0
                let queue = try QueueName("ferry-bench-\(getpid())-\(concurrency)-\(status)")
                let time = try await RedisTimeReport.measure(connection, jobs: jobs) {
                    rate = try await throughput(
                        queue, concurrency: concurrency, status: status, connection: connection, redis: redisConfiguration)
                }
                try await cleanUp(queue, connection: connection)  // outside the measurement
                let name =
                    (workers > 1
                        ? "ferry, \(workers) workers at concurrency \(concurrency)" : "ferry, concurrency \(concurrency)")
                    + ", status \(status ? "on" : "off")"
                // A fleet at one job a read is also set beside its own yardstick, the plain loops.
                let besideLoops =
                    concurrency == 1
                    ? plainLoopsTime.map {
                        String(
                            format: "; %.2f× the plain loops' Redis time",
                            time.microsecondsPerJob / max($0.microsecondsPerJob, 0.001))
                    } ?? "" : ""
                rows.append([
                    name, String(format: "%.0f", rate), time.cell,
                    againstBaseline(rate: rate, time: time) + besideLoops,
                ])
                breakdowns.append((name, time))
                if compareCarriedReads {
                    // The same run with every read on the reader's connection, set beside it.
                    var ownRate = 0.0
                    let own = try QueueName("ferry-bench-\(getpid())-\(concurrency)-\(status)-own-reads")
                    let ownTime = try await RedisTimeReport.measure(connection, jobs: jobs) {
                        ownRate = try await throughput(
                            own, concurrency: concurrency, status: status, carriesReads: false, connection: connection,
                            redis: redisConfiguration)
                    }
                    try await cleanUp(own, connection: connection)
                    let ownName = name + ", reads on the reader only"
                    rows.append([
                        ownName, String(format: "%.0f", ownRate), ownTime.cell,
                        againstBaseline(rate: ownRate, time: ownTime)
                            + String(
                                format: "; carried reads: %.2f× its jobs/s, %.2f× its Redis time", rate / max(ownRate, 0.001),
                                time.microsecondsPerJob / max(ownTime.microsecondsPerJob, 0.001)),
                    ])
                    breakdowns.append((ownName, ownTime))
                }
                // A run of its own with every command logged: where the scripts' time went.
                let logged = try QueueName("ferry-bench-\(getpid())-\(concurrency)-\(status)-scripts")
                scripts.append(
                    (
                        name,
                        try await ScriptTimeReport.measure(connection, jobs: jobs) {
                            _ = try await throughput(
                                logged, concurrency: concurrency, status: status, connection: connection,
                                redis: redisConfiguration)
                        }
                    ))
                try await cleanUp(logged, connection: connection)
            }
        }
        // The job store issue's figure: a worker as deployed (the defaults, JSON logs at info)
        // beside status off at concurrency 256 without logs, the two back to back in each round;
        // then the same worker at each --defaults-at concurrency, measured the same way.
        var defaultsLines: [String] = []
        if logFormat == .none, concurrencies.contains(256) {
            let sink = FileHandle(forWritingAtPath: "/dev/null") ?? .standardError
            let defaults = Worker.Configuration().concurrency
            // Issue 12's other figure, measured the same way: status on against status off, both
            // at concurrency 256 without logs, back to back in each round of the first worker's.
            var statusOnRatios: [Double] = []
            for (index, concurrency) in ([defaults] + defaultsAt).enumerated() {
                var rates: [Double] = []
                var ratios: [Double] = []
                for round in 0..<defaultsRounds {
                    let fastestQueue = try QueueName("ferry-bench-\(getpid())-defaults-\(index)-\(round)-256")
                    let fastest = try await throughput(
                        fastestQueue, concurrency: 256, status: false, connection: connection, redis: redisConfiguration)
                    try await cleanUp(fastestQueue, connection: connection)
                    if index == 0 {
                        let statusOnQueue = try QueueName("ferry-bench-\(getpid())-defaults-\(round)-256-status")
                        let statusOn = try await throughput(
                            statusOnQueue, concurrency: 256, status: true, connection: connection, redis: redisConfiguration)
                        try await cleanUp(statusOnQueue, connection: connection)
                        statusOnRatios.append(statusOn / max(fastest, 0.001))
                    }
                    let queue = try QueueName("ferry-bench-\(getpid())-defaults-\(index)-\(round)")
                    let rate = try await throughput(
                        queue, concurrency: concurrency, status: true, connection: connection, redis: redisConfiguration,
                        logger: Logger(label: "ferry.worker") { _ in JSONLogHandler(logLevel: .info, output: sink) })
                    try await cleanUp(queue, connection: connection)
                    rates.append(rate)
                    ratios.append(rate / max(fastest, 0.001))
                }
                let worker =
                    index == 0
                    ? "A worker with the defaults (concurrency \(concurrency), status on, JSON logs at info into /dev/null)"
                    : "The same worker at concurrency \(concurrency)"
                defaultsLines.append(
                    worker
                        + String(
                            format:
                                ": %.0f jobs/s, %.2f of status off at concurrency 256 without logs (the median of %d rounds, each the two back to back; %.2f-%.2f)",
                            median(rates), median(ratios), defaultsRounds, ratios.min() ?? 0, ratios.max() ?? 0))
            }
            defaultsLines.insert(
                String(
                    format:
                        "Status on at concurrency 256 (no logs): %.2f of status off (the median of %d rounds, each the two back to back; %.2f-%.2f)",
                    median(statusOnRatios), defaultsRounds, statusOnRatios.min() ?? 0, statusOnRatios.max() ?? 0), at: 0)
        }
        printTable(rows)
        for line in defaultsLines { print(line) }
        if baseline == nil { print("python3 with redis-py was not found; no baseline measured (pip install redis).") }
        print(
            "Redis time covers publish, delivery and acknowledgement of every job. By command, µs per job (from INFO commandstats; a script's row includes the commands it calls, which also have rows of their own):"
        )
        for (name, time) in breakdowns { print("  \(name): \(time.breakdown)") }
        print(
            "By script, µs per job (each from a run of its own with Redis's slowlog logging every command; a script's time includes the commands it calls):"
        )
        for (name, time) in scripts {
            print(
                "  \(name): \(time?.breakdown ?? "not measured: the server refused CONFIG SET slowlog-log-slower-than, or its slowlog filled")"
            )
        }

        let latencies = try await startLatency(connection: connection, redis: redisConfiguration).sorted()
        func percentile(_ p: Double) -> String {
            latencies.isEmpty
                ? "-" : String(format: "%.2f ms", latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))])
        }
        print(
            "Publish-to-start latency at \(rate) jobs/s for \(latencySeconds) s (concurrency 16, status on): p50 \(percentile(0.5)), p99 \(percentile(0.99))"
        )
    }

    /// Publishes `jobs` jobs to `queue` and runs a worker on them until all are handled; returns
    /// jobs per second of the worker. Leaves the queue's keys for the caller to remove.
    private func throughput(
        _ queue: QueueName, concurrency: Int, status: Bool, carriesReads: Bool = true, connection: RedisConnection,
        redis: RedisConfiguration, logger: Logger = Logger(label: "ferry.worker")
    ) async throws -> Double {
        try await Self.throughput(
            queue, jobs: jobs, concurrency: concurrency, workers: workers, status: status, carriesReads: carriesReads,
            readAhead: readAhead, connection: connection, redis: redis, logger: logger)
    }

    /// Publishes `jobs` no-op jobs to `queue` (inside the measurement: the Redis time per job
    /// covers the whole cycle) and runs `workers` workers (consumers of one group) on them until
    /// all are handled; returns their jobs per second. Leaves the queue's keys for the caller to
    /// remove. `readAhead` nil leaves the workers' default.
    static func throughput(
        _ queue: QueueName, jobs: Int, concurrency: Int, workers: Int = 1, status: Bool, carriesReads: Bool = true,
        readAhead: Int? = nil, connection: RedisConnection, redis: RedisConfiguration,
        logger: Logger = Logger(label: "ferry.worker")
    ) async throws -> Double {
        var publishing = Publisher.Configuration()
        publishing.recordsStatus = status
        let publisher = Publisher(queue: queue, connection: connection, configuration: publishing)
        let job = JobMessage(type: "noop", data: "{}")
        var published = 0
        while published < jobs {
            published += try await publisher.publish(Array(repeating: job, count: min(1000, jobs - published))).count
        }
        let tally = Tally()
        let fleet = (0..<workers).map { number in
            var configuration = Worker.Configuration()
            configuration.concurrency = concurrency
            configuration.recordsStatus = status
            configuration.carriesReads = carriesReads
            if let readAhead { configuration.readAhead = readAhead }
            configuration.consumer = workers == 1 ? "bench" : "bench-\(number)"
            return Worker(
                queue: queue, redis: redis, handlers: ["noop": JobHandlerClosure { _ in tally.record(latency: nil) }],
                configuration: configuration, logger: logger)
        }
        let start = ContinuousClock.now
        let running = fleet.map { worker in Task { try await worker.run() } }
        while tally.count < jobs { try await Task.sleep(for: .milliseconds(5)) }
        let elapsed = secondsSince(start)
        for worker in fleet { worker.stop() }
        for task in running { try await task.value }
        return Double(jobs) / elapsed
    }

    /// How far the plain loops got: jobs acknowledged, and when the last one was.
    private final class LoopProgress: Sendable {
        let acknowledged = Atomic(0)
        let finished = Mutex<ContinuousClock.Instant?>(nil)
    }

    /// `loops` tasks, each with a connection of its own, running the plain consumer-group loop
    /// one job a read (the previous job's `XACK` pipelined with the next `XREADGROUP COUNT 1`)
    /// over `jobs` plain entries published first: what reading one job at a time costs Redis
    /// without Ferry, with as many readers as the workers beside it. Returns jobs per second.
    static func plainLoops(jobs: Int, loops: Int, redis: RedisConfiguration) async throws -> Double {
        let stream = "ferry-bench:\(getpid()):plain-loops"
        let connection = RedisConnection(configuration: redis)
        try await connection.send(RedisCommand("DEL", [.string(stream)]))
        for first in stride(from: 0, to: jobs, by: 1000) {
            _ = try await connection.pipeline(
                (first..<min(first + 1000, jobs)).map { _ in
                    RedisCommand("XADD", [.string(stream), "*", "type", "noop", "data", "{}"])
                })
        }
        try await connection.send(RedisCommand("XGROUP", ["CREATE", .string(stream), "g", "0"]))
        let progress = LoopProgress()
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for number in 0..<loops {
                group.addTask {
                    let reader = RedisConnection(configuration: redis)
                    var previous: [RedisArgument] = []
                    repeat {
                        var commands: [RedisCommand] = []
                        if !previous.isEmpty { commands.append(RedisCommand("XACK", [.string(stream), "g"] + previous)) }
                        commands.append(
                            RedisCommand(
                                "XREADGROUP",
                                [
                                    "GROUP", "g", .string("c\(number)"), "COUNT", "1", "BLOCK", "100", "STREAMS", .string(stream),
                                    ">",
                                ]))
                        let replies = try await reader.pipeline(commands, timeout: .seconds(5))
                        if !previous.isEmpty, progress.acknowledged.add(previous.count, ordering: .relaxed).newValue == jobs {
                            progress.finished.withLock { $0 = .now }
                        }
                        // [[stream, [[id, fields]]]], or nil once the stream is drained.
                        let entries = replies.last?.array?.first?.array?.last?.array ?? []
                        previous = entries.compactMap { $0.array?.first?.string }.map { .string($0) }
                    } while !previous.isEmpty
                    await reader.close()
                }
            }
            try await group.waitForAll()
        }
        try await connection.send(RedisCommand("UNLINK", [.string(stream)]))
        await connection.close()
        let end = progress.finished.withLock { $0 } ?? .now
        return Double(jobs) / Double((end - start) / .milliseconds(1)) * 1000
    }

    private func startLatency(connection: RedisConnection, redis: RedisConfiguration) async throws -> [Double] {
        let queue = try QueueName("ferry-bench-\(getpid())-latency")
        let publisher = Publisher(queue: queue, connection: connection)
        let tally = Tally()
        var configuration = Worker.Configuration()
        configuration.consumer = "bench"
        let worker = Worker(
            queue: queue, redis: redis,
            handlers: [
                "timed": JobHandlerClosure { job in
                    let sent = Double(String(decoding: job.data, as: UTF8.self)) ?? 0
                    tally.record(latency: (Date().timeIntervalSince1970 - sent) * 1000)
                }
            ],
            configuration: configuration)
        let running = Task { try await worker.run() }
        try await Task.sleep(for: .milliseconds(300))
        let total = rate * latencySeconds
        let start = ContinuousClock.now
        for index in 0..<total {
            let due = start + .seconds(Double(index) / Double(rate))
            if due > .now { try await Task.sleep(until: due) }
            _ = try await publisher.publish(JobMessage(type: "timed", data: String(Date().timeIntervalSince1970)))
        }
        while tally.count < total { try await Task.sleep(for: .milliseconds(5)) }
        worker.stop()
        try await running.value
        try await cleanUp(queue, connection: connection)
        return tally.state.withLock { $0.latencies }
    }

    /// The strongest plain redis-py consumer-group loop: the hiredis parser, and one round trip
    /// per batch (the previous batch's `XACK` pipelined with the next `XREADGROUP COUNT 100`),
    /// over `baselineJobs` jobs so its run is not a fraction of a second.
    /// The plain loop over `jobs` jobs, reading `perRead` at a time; its jobs/s, nil without
    /// python3 and redis-py.
    private func pythonBaseline(jobs: Int, perRead: Int) async throws -> Double? {
        let script = """
            import sys, time, redis
            from redis.utils import HIREDIS_AVAILABLE
            r = redis.Redis.from_url(sys.argv[1])
            stream, n, per_read = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
            r.delete(stream)
            pipe = r.pipeline(transaction=False)
            for i in range(n):
                pipe.xadd(stream, {"type": "noop", "data": "{}"})
                if i % 1000 == 999: pipe.execute()
            pipe.execute()
            r.xgroup_create(stream, "g", id="0")
            done, acked, ids, start = 0, 0, [], time.perf_counter()
            while acked < n:
                pipe = r.pipeline(transaction=False)
                if ids: pipe.xack(stream, "g", *ids)
                pipe.xreadgroup("g", "c", {stream: ">"}, count=per_read, block=1000)
                replies = pipe.execute()
                if ids: acked += len(ids)
                reply = replies[-1]
                ids = [entry_id for entry_id, _ in reply[0][1]] if reply else []
            elapsed = time.perf_counter() - start
            r.delete(stream)
            print(n / elapsed, "hiredis" if HIREDIS_AVAILABLE else "python-parser")
            """
        let stream = "ferry-bench:\(getpid()):baseline"
        guard
            let result = try? await Subprocess.run(
                .name("python3"), arguments: ["-c", script, redis.resolvedURL, stream, String(jobs), String(perRead)],
                output: .string(limit: 4096), error: .discarded)
        else { return nil }
        let words = result.standardOutput.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        if words.last != "hiredis" { print("note: redis-py runs without hiredis (pip install hiredis): a weaker baseline") }
        return words.first.flatMap { Double($0) }
    }
}
