import Ferry
import FerryTestSupport
import Foundation
import Logging
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A real `ferry serve` on a free loopback port (`--port 0`), against the test Redis, and a small
/// HTTP client for it (URLSession, libcurl underneath on Linux).
final class APIServerProcess: Sendable {
    let process: ChildProcess
    let baseURL: String
    let logPath: String

    /// Starts `ferry serve ARGUMENTS` (on the test Redis, or `redis`) and waits until it says where it listens.
    init(_ arguments: [String] = [], redis: String? = nil) async throws {
        let output = FileManager.default.temporaryDirectory.appending(path: uniqueName("serve") + ".out").path()
        logPath = output + ".err"
        var url = redis ?? ""
        if redis == nil { url = try await TestRedis.sharedURL() }
        let errors = output + ".err"
        let process = try ChildProcess(
            try ferryExecutable(), ["serve", "--port", "0", "--redis", url] + arguments, standardOutput: output,
            standardError: errors)
        var base: String?
        _ = await eventually(.seconds(60)) {
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            base = text.split(separator: "\n").first { $0.hasPrefix("listening on ") }.map { String($0.dropFirst(13)) }
            return base != nil || !process.isRunning
        }
        guard let base else {
            process.signal(SIGKILL)
            throw APITestError("ferry serve did not start: \((try? String(contentsOfFile: errors, encoding: .utf8)) ?? "")")
        }
        self.process = process
        baseURL = base
    }

    deinit { process.signal(SIGKILL) }

    /// An answer: status, headers (lower-cased names) and the body, parsed when JSON.
    struct Answer: Sendable {
        var status: Int
        var headers: [String: String]
        var body: Data
        var json: [String: any Sendable]? {
            (try? JSONSerialization.jsonObject(with: body)) as? [String: any Sendable]
        }
        /// A problem's `type` without its prefix (`conflict`, `forbidden`, ...).
        var problem: String? { (json?["type"] as? String).map { String($0.dropFirst("urn:ferry:problem:".count)) } }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// Sends a request with `body` as its JSON text.
    func send(
        _ method: String, _ path: String, json body: String? = nil, key: String? = nil, headers: [String: String] = [:]
    ) async throws -> Answer {
        var request = URLRequest(url: URL(string: baseURL + path)!)
        request.httpMethod = method
        request.timeoutInterval = 120
        if let body {
            request.httpBody = Data(body.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        var fields: [String: String] = [:]
        for (name, value) in http.allHeaderFields {
            if let name = name as? String, let value = value as? String { fields[name.lowercased()] = value }
        }
        return Answer(status: http.statusCode, headers: fields, body: data)
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
