import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry bench list`: pages through a queue's index of jobs while a worker keeps moving them
/// between states, checks every job is listed exactly once, and prints each page's time beside
/// a plain `ZRANGE` of one index set on the same server.
struct ListBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "ferry jobs list paging over many jobs while they change state, beside a plain ZRANGE.",
        discussion: """
            Publishes --jobs jobs (a tenth fail at once and are dead-lettered, a third fail their first attempt \
            and come back after --backoff, the rest succeed), runs a worker until every job has started, then \
            pages through the group's index --limit jobs at a time while the retried jobs keep moving, and reports \
            jobs listed, duplicates, missing, and page times.
            """)

    @Option(parsing: .unconditional, help: "Jobs in the index.")
    var jobs = 100_000

    @Option(parsing: .unconditional, help: "Jobs per page.")
    var limit = 100

    @Option(help: "When retried jobs come back: long enough that they move while the listing pages.")
    var backoff = "3s"

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        guard jobs > 0, (1...1000).contains(limit) else { throw ValidationError("--jobs must be positive, --limit 1 to 1000") }
        let backoff = try Settings().duration(self.backoff, option: "backoff", variable: "", default: .seconds(3))
        let redisConfiguration = try redis.configuration()
        let connection = try await redis.connect(clientName: "ferry-bench")
        let queue = try QueueName("ferry-bench-\(getpid())-list")
        let publisher = Publisher(queue: queue, connection: connection)
        var published = 0
        while published < jobs {
            let batch = (published..<min(published + 1000, jobs)).map { index in
                JobMessage(type: index % 10 == 0 ? "bad" : index % 3 == 0 ? "flaky" : "ok", data: "{}", jobID: "job-\(index)")
            }
            published += try await publisher.publish(batch).count
        }
        var configuration = Worker.Configuration()
        configuration.consumer = "bench"
        configuration.concurrency = 256
        configuration.retry = RetryPolicy(maxAttempts: 3, minimumBackoff: backoff, maximumBackoff: backoff)
        let worker = Worker(
            queue: queue, redis: redisConfiguration,
            handlers: [
                "ok": JobHandlerClosure { _ in },
                "bad": JobHandlerClosure { _ in throw PermanentJobError("refused by the benchmark") },
                "flaky": JobHandlerClosure { job in
                    if job.deliveryAttempt == 1 { throw JobFailure("first attempts fail in the benchmark") }
                },
            ], configuration: configuration)
        let running = Task { try await worker.run() }
        let index = JobIndex(queue: queue, connection: connection)
        func counts() async throws -> [JobState: Int] { try await index.counts(group: "workers") }
        while try await counts().values.reduce(0, +) < jobs { try await Task.sleep(for: .milliseconds(100)) }
        let before = try await counts()

        var seen = Set<String>()
        var duplicates = 0
        var times: [Double] = []
        var cursor: JobIndex.Cursor?
        repeat {
            let start = ContinuousClock.now
            let page = try await index.list(group: "workers", limit: limit, after: cursor)
            times.append(secondsSince(start) * 1000)
            for row in page.rows where !seen.insert(row.jobID).inserted { duplicates += 1 }
            cursor = page.next
        } while cursor != nil
        let after = try await counts()
        let expected = Set((0..<jobs).map { "job-\($0)" })
        let missing = expected.subtracting(seen).count

        // The baseline: one plain ZRANGE page of the largest set, as many times.
        let largest = try await counts().max { $0.value < $1.value }?.key ?? .succeeded
        let set = QueueKeys(queue: queue).statusIndex(group: "workers", state: largest)
        var baseline: [Double] = []
        for _ in 0..<max(times.count, 1) {
            let start = ContinuousClock.now
            _ = try await connection.send(
                RedisCommand("ZRANGE", [.string(set), "+inf", "-inf", "BYSCORE", "REV", "LIMIT", 0, .integer(Int64(limit))]))
            baseline.append(secondsSince(start) * 1000)
        }
        worker.stop()
        running.cancel()
        _ = await running.result
        try await cleanUp(queue, connection: connection)

        func describe(_ counts: [JobState: Int]) -> String {
            counts.filter { $0.value > 0 }.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value)" }
                .joined(separator: ", ")
        }
        print("Listing benchmark against \(connection.configuration.redactedURL): \(jobs) jobs, \(limit) a page")
        print("states when paging began: \(describe(before)); when it ended: \(describe(after))")
        print("listed \(seen.count) of \(jobs) in \(times.count) pages: \(duplicates) listed twice, \(missing) missing")
        printLatencies(
            ("ferry jobs list page (every state)", times),
            baseline: ("ZRANGE BYSCORE REV LIMIT of one set (baseline)", baseline), ratioAt: 0.5, decimals: 2)
    }
}

/// A failure the benchmark's handlers throw: retried with the backoff.
struct JobFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
