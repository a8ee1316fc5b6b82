import ArgumentParser
import Ferry
import FerryAPI
import FerryAdmin
import FerryRedis
import Foundation
import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle
import Subprocess
import Synchronization

/// `ferry bench api`: publish requests per second through `POST /v1/queues/Q/jobs` under `wrk`,
/// beside the same `wrk` against a trivial Hummingbird route in the same process and run, with
/// their p50 and p99 latency and the Redis time a publish costs. Build with `-c release`.
struct APIBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "HTTP publish throughput and latency beside a trivial Hummingbird route, both under wrk.",
        discussion: """
            Serves the API (no authentication, loopback) and a trivial route answering 202 with a small JSON body on \
            two free ports of this process, then runs wrk against each in turn for --rounds rounds and prints the \
            median of each figure and the ratio. Needs wrk (Debian: apt-get install wrk).
            """)

    @Option(parsing: .unconditional, help: "wrk's open connections.")
    var connections = 64

    @Option(parsing: .unconditional, help: "wrk's threads.")
    var threads = 2

    @Option(parsing: .unconditional, help: "Seconds each wrk run lasts.")
    var seconds = 10

    @Option(parsing: .unconditional, help: "Rounds of trivial route and API, alternating; the median is printed.")
    var rounds = 3

    @Option(parsing: .unconditional, help: "Connections to Redis the API's requests take turns on (as ferry serve's).")
    var redisConnections = 4

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        guard connections > 0, threads > 0, seconds > 0, rounds > 0, connections >= threads else {
            throw ValidationError(
                "--connections, --threads, --seconds and --rounds must be positive, --connections at least --threads")
        }
        guard executableOnPath("wrk") else { throw ValidationError("wrk was not found on PATH (Debian: apt-get install wrk)") }
    }

    /// What one wrk run measured.
    struct Run {
        var rate: Double
        var requests: Int
        var p50: Double
        var p99: Double
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let connection = try await redis.connect(clientName: "ferry-bench-api")
        let queue = try QueueName("ferry-bench-api-\(getpid())")
        var logger = Logger(label: "ferry.bench")
        logger.logLevel = .warning
        var settings = APIServer.Configuration()
        settings.port = 0
        settings.requiresAuthentication = false
        let ports = PortsSeen()
        let api = try await APIServer.application(
            configuration: settings,
            connections: RedisConnectionPool(configuration: try redis.configuration(), size: redisConnections),
            readiness: ReadinessProbe(connection: connection),
            metrics: PrometheusCollectorRegistry(), logger: logger, onListening: { ports.set("api", $0) })
        let trivialRouter = Router()
        trivialRouter.post("/trivial") { request, _ -> Response in
            var request = request
            _ = try await request.collectBody(upTo: 1 << 20)
            return Response(
                status: .accepted, headers: [.contentType: "application/json"],
                body: .init(
                    byteBuffer: ByteBuffer(string: #"{"job_id":"1","state":"queued","status_url":"/x","duplicate":false}"#)))
        }
        let trivial = Application(
            router: trivialRouter, configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "trivial"),
            onServerRunning: { ports.set("trivial", $0.localAddress?.port ?? 0) }, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [api, trivial], gracefulShutdownSignals: [], logger: logger))
        let serving = Task { try await group.run() }
        defer { serving.cancel() }
        let deadline = ContinuousClock.now + .seconds(30)
        while ports.get("api") == nil || ports.get("trivial") == nil {
            guard ContinuousClock.now < deadline else { throw BaselineFailure("the servers did not start listening") }
            try await Task.sleep(for: .milliseconds(20))
        }
        let request = """
            wrk.method = "POST"
            wrk.body = '{"type": "bench", "data": {"page": 7}}'
            wrk.headers["Content-Type"] = "application/json"

            """
        let script = FileManager.default.temporaryDirectory.appending(path: "ferry-bench-api-\(getpid()).lua").path()
        try Data(request.utf8).write(to: URL(fileURLWithPath: script))
        defer { try? FileManager.default.removeItem(atPath: script) }
        // The same request with an Idempotency-Key of its own each: a prefix per run (wrk's
        // argument) and thread, then a count.
        let keyed = FileManager.default.temporaryDirectory.appending(path: "ferry-bench-api-\(getpid())-keyed.lua").path()
        try Data(
            (request + """
                local threads = 0
                function setup(thread)
                  threads = threads + 1
                  thread:set("thread_number", threads)
                end
                function init(args)
                  prefix = args[1] .. "-" .. thread_number .. "-"
                  count = 0
                end
                function request()
                  count = count + 1
                  wrk.headers["Idempotency-Key"] = prefix .. count
                  return wrk.format()
                end
                """).utf8
        ).write(to: URL(fileURLWithPath: keyed))
        defer { try? FileManager.default.removeItem(atPath: keyed) }

        var trivialRuns: [Run] = []
        var apiRuns: [Run] = []
        var keyedRuns: [Run] = []
        var redisTimes: [RedisTimeReport] = []
        let publishURL = "http://127.0.0.1:\(ports.get("api")!)/v1/queues/\(queue)/jobs"
        for round in 0..<rounds {
            trivialRuns.append(try await wrk("http://127.0.0.1:\(ports.get("trivial")!)/trivial", script: script))
            var run: Run?
            let time = try await RedisTimeReport.measure(connection, jobs: 1) {
                run = try await wrk(publishURL, script: script)
            }
            guard let run else { continue }
            apiRuns.append(run)
            redisTimes.append(RedisTimeReport(usage: time.usage, jobs: run.requests))
            try await cleanUp(queue, connection: connection)
            keyedRuns.append(try await wrk(publishURL, script: keyed, arguments: ["\(getpid())-\(round)"]))
            try await cleanUp(queue, connection: connection)
        }
        await group.triggerGracefulShutdown()
        try? await serving.value
        func row(_ label: String, _ runs: [Run]) -> [String] {
            [
                label, String(format: "%.0f", median(runs.map(\.rate))), String(format: "%.2f", median(runs.map(\.p50))),
                String(format: "%.2f", median(runs.map(\.p99))),
            ]
        }
        print("wrk -t\(threads) -c\(connections) -d\(seconds)s, \(rounds) rounds, medians:")
        printTable([
            ["", "requests/s", "p50 ms", "p99 ms"], row("trivial Hummingbird route", trivialRuns),
            row("POST /v1/queues/Q/jobs (publish)", apiRuns),
            row("the same, an Idempotency-Key each", keyedRuns),
        ])
        let ratio = median(zip(apiRuns, trivialRuns).map { $0.rate / $1.rate })
        print(String(format: "ratio publish/trivial: %.2f (goal 0.5 or better)", ratio))
        print(
            String(
                format:
                    "ratio publish with an Idempotency-Key/trivial: %.2f (each request's body checked against its key's first)",
                median(zip(keyedRuns, trivialRuns).map { $0.rate / $1.rate })))
        if let time = redisTimes.sorted(by: { $0.microsecondsPerJob < $1.microsecondsPerJob }).dropFirst(redisTimes.count / 2)
            .first
        {
            print("Redis CPU per publish: \(time.cell) µs (\(time.breakdown(top: 5)))")
        }
    }

    /// Runs wrk against `url` with `script` (given `arguments`) and reads its figures; refuses a run with any
    /// answer that is not 2xx (a benchmark of errors measures nothing).
    private func wrk(_ url: String, script: String, arguments: [String] = []) async throws -> Run {
        let result = try await Subprocess.run(
            .name("wrk"),
            arguments: Arguments(
                ["-t", String(threads), "-c", String(connections), "-d", "\(seconds)s", "--latency", "-s", script, url]
                    + (arguments.isEmpty ? [] : ["--"] + arguments)),
            output: .string(limit: 1 << 20), error: .string(limit: 1 << 16))
        let text = result.standardOutput
        guard result.terminationStatus.isSuccess, !text.contains("Non-2xx or 3xx responses") else {
            throw BaselineFailure("wrk against \(url) failed or got errors: \(text)\(result.standardError)")
        }
        func value(after label: String) -> String? {
            text.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(label) }
                .map {
                    String($0.trimmingCharacters(in: .whitespaces).dropFirst(label.count)).trimmingCharacters(in: .whitespaces)
                }
        }
        /// wrk's `1.23ms`, `850.00us`, `1.02s` in milliseconds.
        func milliseconds(_ text: String?) -> Double {
            guard let text else { return .nan }
            for (unit, scale) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] where text.hasSuffix(unit) {
                return (Double(text.dropLast(unit.count)) ?? .nan) * scale
            }
            return .nan
        }
        // "  123456 requests in 10.00s, 20.00MB read"
        let requests = text.split(separator: "\n").first { $0.contains("requests in") }?.split(separator: " ").first.flatMap {
            Int($0)
        }
        return Run(
            rate: Double(value(after: "Requests/sec:") ?? "") ?? 0, requests: requests ?? 0,
            p50: milliseconds(value(after: "50%")), p99: milliseconds(value(after: "99%")))
    }
}

/// The ports the servers report once they listen.
final class PortsSeen: Sendable {
    private let ports = Mutex<[String: Int]>([:])
    func set(_ name: String, _ port: Int) { ports.withLock { $0[name] = port } }
    func get(_ name: String) -> Int? { ports.withLock { $0[name] } }
}
