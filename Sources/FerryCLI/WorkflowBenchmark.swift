import ArgumentParser
import Ferry
import FerryRedis
import Foundation
import Synchronization

/// `ferry bench workflows`: 3-step chains beside single jobs, in the same run.
struct WorkflowBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workflows",
        abstract: "Workflows/s of a 3-step chain beside single jobs/s, and each one's Redis time.",
        discussion: """
            Each round starts N workflows of three no-op steps and runs them to the end with one worker, then runs \
            3N single no-op jobs (status on) with the same worker settings: the same amount of handler work. Rounds \
            alternate the two so drift in the machine falls on both. Prints workflows/s, steps/s, jobs/s, the ratio \
            of steps/s to jobs/s, and the Redis time of a step beside a job's.
            """)

    @Option(parsing: .unconditional, help: "Workflows per run (single jobs: three times as many).")
    var workflows = 3000

    @Option(parsing: .unconditional, help: "Rounds; each runs both.")
    var rounds = 3

    @Option(name: .customLong("concurrency"), help: "Worker concurrency.")
    var concurrency = 16

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        guard workflows > 0, rounds > 0, (1...1000).contains(concurrency) else {
            throw ValidationError("--workflows and --rounds must be positive, --concurrency 1 to 1000")
        }
        let redisConfiguration = try redis.configuration()
        let connection = try await redis.connect(clientName: "ferry-bench")
        print(
            "Workflow benchmark against \(redisConfiguration.redactedURL): \(workflows) 3-step chains and \(workflows * 3) single jobs per run, concurrency \(concurrency), \(rounds) rounds"
        )
        var chains: [(rate: Double, time: RedisTimeReport)] = []
        var singles: [(rate: Double, time: RedisTimeReport)] = []
        for round in 0..<rounds {
            for chained in round % 2 == 0 ? [true, false] : [false, true] {
                let queue = try QueueName("ferry-bench-\(getpid())-workflows-\(round)-\(chained)")
                if chained {
                    var rate = 0.0
                    let time = try await RedisTimeReport.measure(connection, jobs: workflows * 3) {
                        rate = try await Self.chains(
                            queue, count: workflows, concurrency: concurrency, redis: redisConfiguration, connection: connection)
                    }
                    chains.append((rate, time))
                } else {
                    var rate = 0.0
                    let time = try await RedisTimeReport.measure(connection, jobs: workflows * 3) {
                        rate = try await WorkerBenchmark.throughput(
                            queue, jobs: workflows * 3, concurrency: concurrency, status: true, connection: connection,
                            redis: redisConfiguration)
                    }
                    singles.append((rate, time))
                }
                try await cleanUp(queue, connection: connection)
            }
        }
        let workflowRate = median(chains.map(\.rate)), jobRate = median(singles.map(\.rate))
        let stepTime = median(chains.map(\.time.microsecondsPerJob)), jobTime = median(singles.map(\.time.microsecondsPerJob))
        printTable([
            ["run (median of \(rounds))", "per second", "Redis CPU µs per step or job", "ratio"],
            ["single jobs (baseline)", String(format: "%.0f jobs", jobRate), String(format: "%.1f", jobTime), "1"],
            [
                "3-step workflows", String(format: "%.0f workflows (%.0f steps)", workflowRate, workflowRate * 3),
                String(format: "%.1f", stepTime),
                String(
                    format: "%.2f steps/s to jobs/s, %.2f× Redis time", workflowRate * 3 / jobRate, stepTime / max(jobTime, 0.001)
                ),
            ],
        ])
        if let last = chains.last { print("  workflows, by command: \(last.time.breakdown(top: 20))") }
    }

    /// Starts `count` 3-step chains, runs them to the end with one worker, and returns workflows/s
    /// (from the worker's start to the last one's end).
    static func chains(
        _ queue: QueueName, count: Int, concurrency: Int, redis: RedisConfiguration, connection: RedisConnection
    ) async throws -> Double {
        let definition = WorkflowDefinition("bench") {
            WorkflowStep("a", type: "noop")
            WorkflowStep("b", type: "noop")
            WorkflowStep("c", type: "noop")
        }
        let store = Workflows(queue: queue, connection: connection)
        for index in 0..<count { try await store.start(definition, id: "w\(index)") }
        var configuration = Worker.Configuration()
        configuration.consumer = "bench"
        configuration.concurrency = concurrency
        let worker = Worker(
            queue: queue, redis: redis, handlers: ["noop": JobHandlerClosure { _ in }], configuration: configuration)
        let start = ContinuousClock.now
        let running = Task { try await worker.run() }
        let index = QueueKeys(queue: queue).workflowIndex(state: Workflows.State.succeeded.rawValue)
        while try await connection.send(RedisCommand("ZCARD", [.string(index)])).integer ?? 0 < count {
            try await Task.sleep(for: .milliseconds(10))
        }
        let elapsed = secondsSince(start)
        worker.stop()
        try await running.value
        return Double(count) / elapsed
    }
}
