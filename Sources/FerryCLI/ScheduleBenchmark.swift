import ArgumentParser
import Ferry
import FerryRedis
import Foundation
import Synchronization

/// `ferry bench schedule`: many jobs due in the same second, delivered by a worker: how late
/// each runs, beside the same number published at once into a plain queue (the floor: how long
/// the worker takes to get through them), and the longest `move_due.lua` call seen.
struct ScheduleBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule",
        abstract: "Lateness of jobs all due at once, beside the same jobs published at once.",
        discussion: """
            Schedules --jobs jobs due --lead from now (pipelined), runs a worker (concurrency 256, status off) from \
            before they are due, and records how long after its due time each job started. The baseline publishes \
            the same number at once to a plain queue and records how long after publishing each started: the part \
            of the lateness that is only the worker getting through that many jobs. While the scheduled jobs are \
            moved, the benchmark also calls the mover itself and reports its longest call: how long Redis is held. \
            A third run spreads --spread-jobs due times evenly over --spread (a load the worker keeps up with) and \
            records each job's lateness: the precision of delivery in steady use.
            """)

    @Option(parsing: .unconditional, help: "Jobs due in the same second.")
    var jobs = 100_000

    @Option(help: "How far ahead they are due: enough to schedule them all first.")
    var lead = "10s"

    @Option(parsing: .unconditional, help: "Jobs of the steady run, due evenly over --spread.")
    var spreadJobs = 10_000

    @Option(help: "How long the steady run's due times span.")
    var spread = "20s"

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        guard jobs > 0 else { throw ValidationError("--jobs must be positive") }
        let lead = try Settings().duration(self.lead, option: "lead", variable: "", default: .seconds(10))
        let redisConfiguration = try redis.configuration()
        let connection = try await redis.connect(clientName: "ferry-bench")
        var publishing = Publisher.Configuration()
        publishing.recordsStatus = false

        // Baseline: the same jobs published at once, started as fast as the worker goes.
        let plainQueue = try QueueName("ferry-bench-\(getpid())-plain")
        let plainDelays = StartDelays()
        let sentAt = Date()
        let plainPublisher = Publisher(queue: plainQueue, connection: connection, configuration: publishing)
        var published = 0
        while published < jobs {
            published += try await plainPublisher.publish(
                Array(repeating: JobMessage(type: "t", data: "{}"), count: min(1000, jobs - published))
            ).count
        }
        try await drainBenchmarkQueue(plainQueue, jobs: jobs, redis: redisConfiguration) { job in
            plainDelays.record(job, Date().timeIntervalSince(sentAt) * 1000)
        }
        try await cleanUp(plainQueue, connection: connection)

        // Scheduled: all due at one time.
        let queue = try QueueName("ferry-bench-\(getpid())-scheduled")
        let due = Date().addingTimeInterval(Double(lead.components.seconds))
        let publisher = Publisher(queue: queue, connection: connection, configuration: publishing)
        var scheduled = 0
        while scheduled < jobs {
            scheduled += try await publisher.schedule(
                Array(repeating: JobMessage(type: "t", data: "{}"), count: min(1000, jobs - scheduled)), .at(due)
            ).count
        }
        if Date() > due { print("note: scheduling took longer than --lead; raise it for a true figure") }
        let delays = StartDelays()
        let longestMove = Mutex<Double>(0)
        let mover = Task {
            let scheduledJobs = ScheduledJobs(queue: queue, connection: connection)
            while !Task.isCancelled {
                if Date() >= due {
                    let start = ContinuousClock.now
                    _ = try? await scheduledJobs.moveDue()
                    let took = secondsSince(start) * 1000
                    longestMove.withLock { $0 = max($0, took) }
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        try await drainBenchmarkQueue(queue, jobs: jobs, redis: redisConfiguration) { job in
            delays.record(job, Date().timeIntervalSince(due) * 1000)
        }
        mover.cancel()
        try await cleanUp(queue, connection: connection)

        let steady = try await steadyLateness(connection: connection, redis: redisConfiguration, publishing: publishing)

        let plain = plainDelays.all
        let late = delays.all
        print(
            "Schedule benchmark against \(connection.configuration.redactedURL): \(jobs) jobs, worker concurrency 256, status off"
        )
        printLatencies(
            ("scheduled, all due at once: start minus due time", late),
            baseline: ("published at once (baseline): start minus publish", plain), ratioAt: 0.99, decimals: 0)
        print(
            "started: \(delays.count) of \(jobs) scheduled, \(delays.duplicates) twice; the longest move_due.lua call seen: \(String(format: "%.2f", longestMove.withLock { $0 })) ms (100 jobs a call)"
        )
        let within = steady.all.filter { $0 <= 1000 }.count
        printLatencies(
            ("steady: \(spreadJobs) due evenly over \(spread): start minus due time", steady.all),
            baseline: ("published at once (baseline): start minus publish", plain), ratioAt: 0.99, decimals: 0)
        print(
            "steady: \(steady.count) of \(spreadJobs) started, \(steady.duplicates) twice; within 1 s of due: \(String(format: "%.1f", Double(within) * 100 / Double(max(spreadJobs, 1))))%"
        )
    }

    /// Schedules `spreadJobs` jobs due in 100 ms slots evenly over `spread`, runs the benchmark
    /// worker until all have started, and returns how late each started.
    private func steadyLateness(
        connection: RedisConnection, redis: RedisConfiguration, publishing: Publisher.Configuration
    ) async throws -> StartDelays {
        let span = try Settings().duration(spread, option: "spread", variable: "", default: .seconds(20))
        let queue = try QueueName("ferry-bench-\(getpid())-steady")
        let publisher = Publisher(queue: queue, connection: connection, configuration: publishing)
        let slots = max(Int(span.milliseconds / 100), 1)
        let start = Date().addingTimeInterval(3)
        for slot in 0..<slots {
            let count = spreadJobs / slots + (slot < spreadJobs % slots ? 1 : 0)
            guard count > 0 else { continue }
            let due = start.addingTimeInterval(Double(slot) / 10)
            _ = try await publisher.schedule(
                (0..<count).map { JobMessage(type: "t", data: "{}", jobID: "steady-\(due.millisecondsSince1970)-\($0)") },
                .at(due))
        }
        if Date() > start { print("note: scheduling the steady run took longer than its 3 s lead") }
        let delays = StartDelays()
        try await drainBenchmarkQueue(queue, jobs: spreadJobs, redis: redis) { job in
            let due = job.id.split(separator: "-").dropFirst().first.flatMap { Int64($0) } ?? 0
            delays.record(job, Double(Date().millisecondsSince1970 - due))
        }
        try await cleanUp(queue, connection: connection)
        return delays
    }
}

/// Start delays in milliseconds, by job, from any handler task: what the time benchmarks measure.
final class StartDelays: Sendable {
    private let values = Mutex<(delays: [Double], ids: Set<String>, duplicates: Int)>(([], [], 0))
    func record(_ job: Job, _ milliseconds: Double) {
        values.withLock {
            $0.delays.append(milliseconds)
            if !$0.ids.insert(job.id).inserted { $0.duplicates += 1 }
        }
    }
    var count: Int { values.withLock { $0.ids.count } }
    var all: [Double] { values.withLock { $0.delays } }
    var duplicates: Int { values.withLock { $0.duplicates } }
}

/// Runs a benchmark worker (consumer `bench`, concurrency 256, status off) on `queue` with
/// `handler` for type `t` until `done` says so (by default, once `jobs` distinct jobs have
/// started), then stops it.
func drainBenchmarkQueue(
    _ queue: QueueName, jobs: Int, redis: RedisConfiguration, retry: RetryPolicy? = nil,
    until done: (@Sendable () -> Bool)? = nil, handler: @escaping @Sendable (Job) async throws -> Void
) async throws {
    let started = Mutex(Set<String>())
    var configuration = Worker.Configuration()
    configuration.consumer = "bench"
    configuration.concurrency = 256
    configuration.recordsStatus = false
    if let retry { configuration.retry = retry }
    let worker = Worker(
        queue: queue, redis: redis,
        handlers: [
            "t": JobHandlerClosure { job in
                started.withLock { _ = $0.insert(job.id) }
                try await handler(job)
            }
        ],
        configuration: configuration)
    let running = Task { try await worker.run() }
    while !(done?() ?? (started.withLock { $0.count } >= jobs)) { try await Task.sleep(for: .milliseconds(10)) }
    worker.stop()
    try await running.value
}
