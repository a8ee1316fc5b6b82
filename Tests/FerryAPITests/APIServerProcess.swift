import Ferry
import FerryTestSupport
import Foundation
import Logging
import Testing

/// A real `ferry serve` on a free loopback port (`--port 0`), against the test Redis, and a small
/// HTTP client for it (``sendHTTP(_:_:json:bearer:headers:)``).
final class APIServerProcess: Sendable {
    let process: ChildProcess
    let baseURL: String
    let logPath: String

    typealias Answer = HTTPAnswer

    /// Starts `ferry serve ARGUMENTS` (on the test Redis, or `redis`) and waits until it says where it listens.
    init(_ arguments: [String] = [], redis: String? = nil) async throws {
        var url = redis ?? ""
        if redis == nil { url = try await TestRedis.sharedURL() }
        let server = try await ListeningProcess(
            try ferryExecutable(), ["serve", "--port", "0", "--redis", url] + arguments, name: "serve")
        process = server.process
        baseURL = server.baseURL
        logPath = server.errorPath
    }

    deinit { process.signal(SIGKILL) }

    /// Sends a request with `body` as its JSON text.
    func send(
        _ method: String, _ path: String, json body: String? = nil, key: String? = nil, headers: [String: String] = [:]
    ) async throws -> Answer {
        try await sendHTTP(method, baseURL + path, json: body, bearer: key, headers: headers)
    }
}

struct APITestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs a worker on `setup`'s queue with `handlers` while `body` runs (one attempt a job when
/// `maxAttempts` is 1), and stops it after.
func withWorker(
    _ setup: TestQueue, handlers: [String: any JobHandler], maxAttempts: Int? = nil, body: () async throws -> Void
) async throws {
    var configuration = Worker.Configuration()
    configuration.consumer = uniqueName("c")
    if let maxAttempts { configuration.retry = RetryPolicy(maxAttempts: maxAttempts) }
    let worker = Worker(
        queue: setup.queue, redis: setup.redisConfiguration, handlers: handlers, configuration: configuration,
        logger: Logger(label: "test"))
    let task = Task { try await worker.run() }
    do {
        try await body()
    } catch {
        worker.stop()
        throw error
    }
    worker.stop()
    try await task.value
}
