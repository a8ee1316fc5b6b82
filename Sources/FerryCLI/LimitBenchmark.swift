import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry bench limits`: what a rate and a concurrency limit cost a worker that is never held
/// back by them, beside the same worker on a queue without limits, in alternating runs.
struct LimitBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "limits",
        abstract: "Worker throughput with generous limits configured, beside the same worker without limits.",
        discussion: """
            Each round runs the worker benchmark's no-op jobs (status on) twice: on a queue without limits, and on \
            one with a concurrency limit and a rate no job reaches (so nothing waits: what is measured is the cost \
            of checking). Rounds alternate the two so drift in the machine falls on both. Prints jobs/s and Redis \
            time per job of each, their ratio, and the limits' own Redis time per job (the difference).
            """)

    @Option(parsing: .unconditional, help: "Jobs per run.")
    var jobs = 20_000

    @Option(parsing: .unconditional, help: "Rounds; each runs both.")
    var rounds = 3

    @Option(name: .customLong("concurrency"), help: "Worker concurrency.")
    var concurrency = 16

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        guard jobs > 0, rounds > 0, (1...1000).contains(concurrency) else {
            throw ValidationError("--jobs and --rounds must be positive, --concurrency 1 to 1000")
        }
        let redisConfiguration = try redis.configuration()
        let connection = try await redis.connect(clientName: "ferry-bench")
        let generous = [
            QueueLimit(name: "bench-concurrency", kind: .concurrency(100_000)),
            QueueLimit(name: "bench-rate", kind: .rate(count: 1_000_000, period: .seconds(1), burst: 1000)),
        ]
        print(
            "Limit benchmark against \(redisConfiguration.redactedURL): \(jobs) no-op jobs per run, concurrency \(concurrency), status on, \(rounds) rounds; limits: "
                + generous.map(\.summary).joined(separator: ", "))
        var runs: [Bool: [(rate: Double, time: RedisTimeReport)]] = [false: [], true: []]
        for round in 0..<rounds {
            for limited in round % 2 == 0 ? [false, true] : [true, false] {
                let queue = try QueueName("ferry-bench-\(getpid())-limits-\(round)-\(limited)")
                if limited {
                    for limit in generous { try await QueueLimits(queue: queue, connection: connection).set(limit) }
                }
                var rate = 0.0
                let time = try await RedisTimeReport.measure(connection, jobs: jobs) {
                    rate = try await WorkerBenchmark.throughput(
                        queue, jobs: jobs, concurrency: concurrency, status: true, connection: connection,
                        redis: redisConfiguration)
                }
                try await cleanUp(queue, connection: connection)
                runs[limited, default: []].append((rate, time))
            }
        }
        let plain = runs[false] ?? [], limited = runs[true] ?? []
        let plainRate = median(plain.map(\.rate)), limitedRate = median(limited.map(\.rate))
        let plainTime = median(plain.map(\.time.microsecondsPerJob))
        let limitedTime = median(limited.map(\.time.microsecondsPerJob))
        printTable([
            ["run (median of \(rounds))", "jobs/s", "Redis CPU µs/job", "ratio to no limits"],
            ["no limits (baseline)", String(format: "%.0f", plainRate), String(format: "%.1f", plainTime), "1"],
            [
                "a concurrency limit and a rate, never reached", String(format: "%.0f", limitedRate),
                String(format: "%.1f", limitedTime),
                String(format: "%.2f jobs/s, %.2f× Redis time", limitedRate / plainRate, limitedTime / max(plainTime, 0.001)),
            ],
        ])
        print(String(format: "The limits' own cost: %.1f µs of Redis time per job.", limitedTime - plainTime))
        if let last = limited.last { print("  with limits, by command: \(last.time.breakdown(top: 20))") }
        if let last = plain.last { print("  without limits, by command: \(last.time.breakdown(top: 20))") }
    }
}
