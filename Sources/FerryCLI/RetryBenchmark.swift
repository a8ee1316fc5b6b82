import ArgumentParser
import Ferry
import FerryRedis
import Foundation
import Synchronization

/// `ferry bench retry`: many jobs that fail once and wait for their retry, all in the group's
/// later deliveries at once: how late each retry starts after its due time, beside the same
/// number of jobs published at once (the floor: how long the worker takes to get through them).
struct RetryBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry",
        abstract: "Lateness of retries when many jobs wait for one, beside the same jobs published at once.",
        discussion: """
            Publishes --jobs jobs at once; a worker (concurrency 256, status off) fails each first attempt, which \
            parks it for --backoff (fixed, no jitter), and records how long after that due time its second attempt \
            started. The due times are as spread as the first attempts were, so the worker keeps up the way a \
            production one would while retries come back. The baseline publishes the same number at once to a plain \
            queue and records how long after publishing each started.
            """)

    @Option(parsing: .unconditional, help: "Jobs that fail once.")
    var jobs = 100_000

    @Option(help: "The fixed backoff before each retry.")
    var backoff = "10s"

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        guard jobs > 0 else { throw ValidationError("--jobs must be positive") }
        let backoff = try Settings().duration(self.backoff, option: "backoff", variable: "", default: .seconds(10))
        let redisConfiguration = try redis.configuration()
        let connection = try await redis.connect(clientName: "ferry-bench")
        var publishing = Publisher.Configuration()
        publishing.recordsStatus = false
        let messages = Array(repeating: JobMessage(type: "t", data: "{}"), count: jobs)

        // Baseline: the same jobs published at once, started as fast as the worker goes.
        let plainQueue = try QueueName("ferry-bench-\(getpid())-plain")
        let plainDelays = StartDelays()
        let sentAt = Date()
        let plainPublisher = Publisher(queue: plainQueue, connection: connection, configuration: publishing)
        for chunk in stride(from: 0, to: jobs, by: 1000) {
            _ = try await plainPublisher.publish(Array(messages[chunk..<min(chunk + 1000, jobs)]))
        }
        try await drainBenchmarkQueue(plainQueue, jobs: jobs, redis: redisConfiguration) { job in
            plainDelays.record(job, Date().timeIntervalSince(sentAt) * 1000)
        }
        try await cleanUp(plainQueue, connection: connection)

        // Each job fails once and comes back after the backoff.
        let queue = try QueueName("ferry-bench-\(getpid())-retry")
        let publisher = Publisher(queue: queue, connection: connection, configuration: publishing)
        for chunk in stride(from: 0, to: jobs, by: 1000) {
            _ = try await publisher.publish(Array(messages[chunk..<min(chunk + 1000, jobs)]))
        }
        let failedAt = Mutex<[String: Date]>([:])
        let late = StartDelays()
        let wrongAttempts = Mutex(0)
        let backoffSeconds = Double(backoff.milliseconds) / 1000
        try await drainBenchmarkQueue(
            queue, jobs: jobs, redis: redisConfiguration,
            retry: RetryPolicy(maxAttempts: 2, minimumBackoff: backoff, maximumBackoff: backoff, strategy: .fixed, jitter: .none),
            until: { late.count >= jobs }
        ) { job in
            if job.deliveryAttempt == 1 {
                failedAt.withLock { $0[job.id] = Date() }
                throw BenchmarkFailure()
            }
            if job.deliveryAttempt != 2 { wrongAttempts.withLock { $0 += 1 } }
            let due = failedAt.withLock { $0[job.id] }.map { $0.addingTimeInterval(backoffSeconds) } ?? Date()
            late.record(job, Date().timeIntervalSince(due) * 1000)
        }
        try await cleanUp(queue, connection: connection)

        print(
            "Retry benchmark against \(connection.configuration.redactedURL): \(jobs) jobs failing once, backoff \(backoff.milliseconds) ms fixed, worker concurrency 256, status off"
        )
        printLatencies(
            ("retries: second attempt's start minus its due time", late.all),
            baseline: ("published at once (baseline): start minus publish", plainDelays.all), ratioAt: 0.99, decimals: 0)
        print(
            "retried: \(late.count) of \(jobs), \(late.duplicates) twice, \(wrongAttempts.withLock { $0 }) not as attempt 2; within 1 s of due: \(String(format: "%.1f", Double(late.all.filter { $0 <= 1000 }.count) * 100 / Double(max(jobs, 1))))%"
        )
    }
}

/// What the retry benchmark's handler throws on a first attempt.
struct BenchmarkFailure: Error, CustomStringConvertible {
    var description: String { "the benchmark fails every first attempt" }
}
