import ArgumentParser
import Ferry
import FerryHTTP
import FerryRedis
import Foundation
import Hummingbird
import Logging
import Subprocess
import Synchronization
import SystemPackage

/// `ferry bench push`: jobs/s delivered by push to a loopback endpoint that answers 204 at once,
/// beside the request rates `wrk` and `curl --parallel` reach against the same endpoint in the
/// same run. curl's own client shows what libcurl costs per request on this machine before any
/// queue work, which wrk (hand-written HTTP on epoll) does not.
struct PushBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Push delivery throughput beside wrk and curl --parallel against the same loopback endpoint.")

    @Option(parsing: .unconditional, help: "Jobs per Ferry run.")
    var jobs = 20_000

    @Option(parsing: .unconditional, help: "Seconds per wrk run.")
    var seconds = 5

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        guard jobs > 0, seconds > 0 else { throw ValidationError("--jobs and --seconds must be positive") }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let redisConfiguration = try redis.configuration()
        let connection = try await redis.connect(clientName: "ferry-bench")
        // The endpoint runs in a process of its own, as wrk does: in Ferry's process it would
        // share the cooperative pool with the worker it is measuring.
        let portFile = FileManager.default.temporaryDirectory.appending(path: "ferry-bench-endpoint-\(getpid())").path()
        defer { try? FileManager.default.removeItem(atPath: portFile) }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
        _ = try await Subprocess.run(
            .path(FilePath(executable)), arguments: ["bench", "endpoint", "--port-file", portFile], input: .none,
            output: .discarded, error: .discarded
        ) { execution in
            defer { try? execution.send(signal: .kill) }
            try await measure(
                endpointPort: try await Self.waitForPort(portFile), connection: connection, redis: redisConfiguration)
        }
    }

    private static func waitForPort(_ file: String) async throws -> Int {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: file, encoding: .utf8), let port = Int(text) { return port }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ValidationError("the loopback endpoint did not start within 10 s")
    }

    private func measure(
        endpointPort: Int, connection: RedisConnection, redis redisConfiguration: RedisConfiguration
    ) async throws {
        let url = "http://127.0.0.1:\(endpointPort)/"
        print("Push benchmark: \(jobs) jobs per run to \(url) (answers 204), Redis \(redisConfiguration.redactedURL), status off")

        var rows: [[String]] = [
            [
                "concurrency", "wrk req/s", "curl --parallel req/s", "ferry jobs/s", "ferry/wrk", "ferry/curl",
                "ferry's client alone",
            ]
        ]
        for concurrency in [16, 64] {
            let wrk = try? await wrkRate(url, connections: concurrency)
            let curl = try? await curlRate(url, parallel: concurrency)
            let ferry = try await ferryRate(url, concurrency: concurrency, connection: connection, redis: redisConfiguration)
            let client = try await clientRate(url, concurrency: concurrency)
            func rate(_ value: Double?) -> String { value.map { String(format: "%.0f", $0) } ?? "-" }
            func ratio(_ baseline: Double?) -> String { baseline.map { String(format: "%.2f", ferry / $0) } ?? "-" }
            rows.append([
                "\(concurrency)", rate(wrk), rate(curl), rate(ferry), ratio(wrk), ratio(curl), rate(client),
            ])
        }
        printTable(rows)
        print(
            """
            Baselines, each with as many connections as Ferry's concurrency, POSTing a body of the same size:
            wrk, and curl --parallel (libcurl's own client, on the libcurl Ferry uses, with no queue behind it).
            A dash: the tool is not installed.
            """)
    }

    /// A body the size of a wrapped push request for the benchmark's job.
    private static let sampleBody =
        #"{"message":{"attributes":{},"data":"e30=","deliveryAttempt":1,"jobId":"1700000000000-0","messageId":"1700000000000-0","publishTime":"2023-11-14T22:13:20.000Z","type":"noop"},"subscription":"bench/workers"}"#

    private func ferryRate(
        _ url: String, concurrency: Int, connection: RedisConnection, redis: RedisConfiguration
    ) async throws -> Double {
        let queue = try QueueName("ferry-bench-\(getpid())-push-\(concurrency)")
        var publishing = Publisher.Configuration()
        publishing.recordsStatus = false
        let publisher = Publisher(queue: queue, connection: connection, configuration: publishing)
        var published = 0
        while published < jobs {
            published += try await publisher.publish(
                Array(repeating: JobMessage(type: "noop", data: "{}"), count: min(1000, jobs - published))
            ).count
        }
        var configuration = Worker.Configuration()
        configuration.concurrency = concurrency
        configuration.recordsStatus = false
        configuration.consumer = "bench"
        let counter = DeliveryCounter()
        let worker = Worker(
            queue: queue, redis: redis, handlers: [:], configuration: configuration,
            fallbackHandler: PushJobHandler(endpoint: PushEndpoint(url: url), concurrency: concurrency), observer: counter)
        let start = ContinuousClock.now
        let running = Task { try await worker.run() }
        while counter.count < jobs { try await Task.sleep(for: .milliseconds(5)) }
        let elapsed = secondsSince(start)
        worker.stop()
        try await running.value
        let keys = QueueKeys(queue: queue)
        try await connection.send(RedisCommand("UNLINK", [.string(keys.jobs), .string(keys.deadLetter)]))
        return Double(jobs) / elapsed
    }

    /// The curl client on its own, `concurrency` requests at a time: what delivery costs without Redis.
    private func clientRate(_ url: String, concurrency: Int) async throws -> Double {
        let client = CurlHTTPClient(maxConnections: concurrency)
        defer { client.close() }
        let request = CurlHTTPClient.Request(url: url, body: Array(Self.sampleBody.utf8), timeout: .seconds(10))
        let perTask = max(jobs / concurrency, 1)
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask { for _ in 0..<perTask { _ = try await client.send(request) } }
            }
            try await group.waitForAll()
        }
        return Double(perTask * concurrency) / secondsSince(start)
    }

    /// Counts jobs that succeeded, from any task.
    final class DeliveryCounter: JobEventObserver {
        private let succeeded = Atomic(0)
        var count: Int { succeeded.load(ordering: .relaxed) }
        func jobFinished(_ event: JobEvent) {
            if event.state == .succeeded { succeeded.add(1, ordering: .relaxed) }
        }
    }

    private func wrkRate(_ url: String, connections: Int) async throws -> Double? {
        let script = FileManager.default.temporaryDirectory.appending(path: "ferry-bench-\(getpid()).lua").path()
        try """
        wrk.method = "POST"
        wrk.body = '\(Self.sampleBody)'
        wrk.headers["Content-Type"] = "application/json"
        """.write(toFile: script, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: script) }
        let result = try await Subprocess.run(
            .name("wrk"), arguments: ["-t2", "-c\(connections)", "-d\(seconds)s", "-s", script, url],
            output: .string(limit: 64 * 1024), error: .discarded)
        guard result.terminationStatus.isSuccess,
            let line = result.standardOutput.split(separator: "\n").first(where: { $0.hasPrefix("Requests/sec:") })
        else { return nil }
        return Double(line.dropFirst("Requests/sec:".count).trimmingCharacters(in: .whitespaces))
    }

    /// `curl --parallel` sending as many requests as Ferry's run delivers jobs (at least 20,000, for
    /// a run long enough to time), its URLs in a config file rather than on the command line.
    private func curlRate(_ url: String, parallel: Int) async throws -> Double? {
        let requests = max(jobs, 20_000)
        let config = FileManager.default.temporaryDirectory.appending(path: "ferry-bench-\(getpid()).curl").path()
        try String(repeating: "url = \"\(url)\"\noutput = \"/dev/null\"\n", count: requests)
            .write(toFile: config, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: config) }
        let arguments = [
            "-s", "--parallel", "--parallel-max", "\(parallel)", "-X", "POST", "-H", "Content-Type: application/json", "-d",
            Self.sampleBody, "-K", config,
        ]
        let start = ContinuousClock.now
        let result = try await Subprocess.run(
            .name("curl"), arguments: .init(arguments), output: .discarded, error: .discarded)
        guard result.terminationStatus.isSuccess else { return nil }
        return Double(requests) / secondsSince(start)
    }
}

/// `ferry bench endpoint` (hidden): a minimal HTTP endpoint on a free loopback port that
/// answers every POST with 204, for `ferry bench push`. Writes its port to a file, runs until killed.
struct LoopbackEndpoint: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoint", abstract: "A loopback endpoint answering 204, for bench push.", shouldDisplay: false)

    @Option(help: "Where to write the port once listening.")
    var portFile: String

    func run() async throws {
        let router = Router()
        router.post("/") { _, _ -> HTTPResponse.Status in .noContent }
        var logger = Logger(label: "ferry.bench.endpoint")
        logger.logLevel = .critical
        let portFile = self.portFile
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                try? String(channel.localAddress?.port ?? 0).write(toFile: portFile, atomically: true, encoding: .utf8)
            }, logger: logger)
        try await app.runService()
    }
}
