import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry
@testable import FerryHTTP

/// Push delivery against a real HTTP server on loopback and a real redis-server.
@Suite("Push delivery")
struct PushDeliveryTests {
    typealias Setup = TestQueue

    static func text(_ entry: StreamEntry, _ field: String) -> String {
        String(decoding: entry.value(of: field) ?? [], as: UTF8.self)
    }

    @Test(
        "each response class settles as Pub/Sub push does: 200, 201, 202, 204 ack (203, 206 do not), listed 4xx dead-letter at once, others retry"
    )
    func responseClasses() async throws {
        let setup = try await Setup()
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        let acknowledged = ["200", "201", "202", "204"]
        let permanent = ["400", "401", "403", "404", "410", "413", "422"]
        // 203 and 206 are 2xx but not among Pub/Sub push's success codes: retried, as Pub/Sub does.
        let retried = ["203", "206", "418", "429", "500", "502", "503"]
        for status in acknowledged + permanent + retried { try await setup.publish(status, jobID: "s\(status)") }
        let jobs = acknowledged.count + permanent.count + retried.count
        try await setup.withWorker(PushEndpoint(url: server.url())) {
            #expect(await eventually { try await setup.deadEntries().count == permanent.count + retried.count })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        let requests = server.requests
        func attempts(_ status: String) -> Int { requests.filter { ($0.message?["jobId"] as? String) == "s\(status)" }.count }
        for status in acknowledged + permanent { #expect(attempts(status) == 1, "HTTP \(status)") }
        for status in retried { #expect(attempts(status) == 2, "HTTP \(status) is retried up to max attempts") }
        #expect(requests.count == acknowledged.count + permanent.count + 2 * retried.count)
        let dead = Dictionary(uniqueKeysWithValues: try await setup.deadEntries().map { (Self.text($0, "job_id"), $0) })
        let gone = try #require(dead["s410"])
        #expect(Self.text(gone, "dead_letter.error") == "HTTP 410: answer 410")
        #expect(Self.text(gone, "dead_letter.error_class") == "permanent_failure")
        #expect(Self.text(gone, "dead_letter.delivery_count") == "1")
        #expect(Self.text(try #require(dead["s500"]), "dead_letter.error_class") == "http_500")
        #expect(Self.text(try #require(dead["s418"]), "dead_letter.delivery_count") == "2")
        #expect(jobs == 18)
    }

    @Test("the wrapped body has the Pub/Sub push shape; traceparent travels as a header")
    func wrappedFormat() async throws {
        let setup = try await Setup()
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        try await setup.publish("204", jobID: "w-1", data: "héllo", attributes: ["tenant": "acme"])
        try await setup.withWorker(PushEndpoint(url: server.url())) {
            #expect(await eventually { server.requests.count == 1 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        let request = try #require(server.requests.first)
        #expect(request.headers["content-type"] == "application/json")
        #expect(request.headers["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        let json = try #require(request.json)
        #expect(json["subscription"] as? String == "projects/ferry/subscriptions/\(setup.queue).workers")
        #expect(json["deliveryAttempt"] as? Int == 1, "at the top level, as Pub/Sub sends it")
        let message = try #require(request.message)
        #expect(message["data"] as? String == Data("héllo".utf8).base64EncodedString())
        #expect(message["attributes"] as? [String: String] == ["tenant": "acme", "respond": "204"])
        #expect(message["jobId"] as? String == "w-1")
        #expect(message["type"] as? String == "t")
        #expect(message["deliveryAttempt"] as? Int == 1)
        let entry = try #require(
            StreamEntry.entries(from: try await setup.redis.send(RedisCommand("XRANGE", [.string(setup.keys.jobs), "-", "+"])))
                .first)
        #expect(message["messageId"] as? String == entry.id)
        #expect(message["message_id"] as? String == entry.id)
        #expect(message["publish_time"] as? String == message["publishTime"] as? String)
        let publishTime = try #require(message["publishTime"] as? String)
        #expect(publishTime.hasSuffix("Z") && publishTime.count == "2026-11-23T04:42:53.123Z".count, "\(publishTime)")
    }

    @Test("the wrapped body is valid JSON for any text: quotes, backslashes, control characters, slashes, emoji")
    func wrappedBodyEscaping() throws {
        let hostile = "a\"b\\c/d\ne\rf\tg\u{01}h\u{1f}i é 🚢 \u{7f}"
        let job = Job(
            id: hostile, entryID: "1700000000000-7", queue: QueueName("q"), group: "g/1", deliveryAttempt: 3,
            message: JobMessage(type: hostile, data: [0, 255, 10], attributes: [hostile: hostile, "b": "", "a": "1"]))
        let body = PushRequestBuilder.envelope(
            for: job, publishTime: "2023-11-14T22:13:20.000Z",
            subscription: PushEndpoint.defaultSubscription(queue: job.queue, group: job.group))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        #expect(json["subscription"] as? String == "projects/ferry/subscriptions/q.g%2F1")
        #expect(json["deliveryAttempt"] as? Int == 3)
        let message = try #require(json["message"] as? [String: Any])
        #expect(message["attributes"] as? [String: String] == [hostile: hostile, "b": "", "a": "1"])
        #expect(message["data"] as? String == Data([0, 255, 10]).base64EncodedString())
        #expect(message["deliveryAttempt"] as? Int == 3)
        #expect(message["jobId"] as? String == hostile)
        #expect(message["type"] as? String == hostile)
        #expect(message["messageId"] as? String == "1700000000000-7")
        #expect(message["publishTime"] as? String == "2023-11-14T22:13:20.000Z")
        #expect(message["message_id"] as? String == "1700000000000-7")
        #expect(message["publish_time"] as? String == "2023-11-14T22:13:20.000Z")
        #expect(Set(message.keys).count == 9 && Set(json.keys) == ["deliveryAttempt", "message", "subscription"])
        let text = String(decoding: body, as: UTF8.self)
        #expect(text.hasPrefix(#"{"deliveryAttempt":3,"message":{"attributes":{"a":"1","a\"b"#), "keys sorted: \(text)")
    }

    @Test("a reused curl handle carries nothing of the request before it: headers, body, timeout, status")
    func handleReuse() async throws {
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        let client = CurlHTTPClient(maxConnections: 1)
        defer { client.close() }
        await #expect(throws: CurlTransferError.self) {
            _ = try await client.send(
                .init(url: server.url("/respond/204,sleep=800"), body: [], timeout: .milliseconds(200)))
        }
        let first = try await client.send(
            .init(url: server.url("/respond/410"), headers: ["X-First: 1"], body: Array("first".utf8), timeout: .seconds(5)))
        let second = try await client.send(.init(url: server.url(), body: Array("second".utf8), timeout: .seconds(5)))
        #expect(first.status == 410 && second.status == 204)
        #expect(second.body.isEmpty, "the first response's body is not carried over")
        let seen = try #require(await eventually { server.requests.count == 3 } ? server.requests : nil)
        let last = try #require(seen.first { $0.bodyBytes == Array("second".utf8) })
        #expect(last.headers["x-first"] == nil)
        #expect(seen.first { $0.bodyBytes == Array("first".utf8) }?.headers["x-first"] == "1")
    }

    @Test("the raw format sends data as the body and metadata in Ferry-* headers, header-safe")
    func rawFormat() async throws {
        let setup = try await Setup()
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        try await setup.publish("204", jobID: "raw\r\nX-Injected: 1", data: "plain bytes", attributes: ["tenant": "acme"])
        try await setup.withWorker(PushEndpoint(url: server.url(), format: .raw)) {
            #expect(await eventually { server.requests.count == 1 })
        }
        let request = try #require(server.requests.first)
        #expect(request.bodyBytes == Array("plain bytes".utf8))
        #expect(request.headers["content-type"] == "application/octet-stream")
        #expect(request.headers["ferry-job-id"] == "raw%0D%0AX-Injected: 1", "CR and LF are percent-encoded")
        #expect(request.headers["x-injected"] == nil)
        #expect(request.headers["ferry-job-type"] == "t")
        #expect(request.headers["ferry-delivery-attempt"] == "1")
        #expect(request.headers["ferry-attributes"] == #"{"respond":"204","tenant":"acme"}"#)
        #expect(request.headers["ferry-publish-time"]?.hasSuffix("Z") == true)
    }

    @Test("a 503 with Retry-After is not retried before it; the job status shows the HTTP status")
    func retryAfterIsHonoured() async throws {
        let setup = try await Setup()
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        // Retry-After: 3 keeps the job `retrying` long enough for a loaded machine's polls to see it.
        try await setup.publish("503,retry-after=3;200", jobID: "ra")
        let start = ContinuousClock.now
        try await setup.withWorker(PushEndpoint(url: server.url())) {
            #expect(await eventually { server.requests.count == 1 })
            let status = { try await JobStatus.load(jobID: "ra", queue: setup.queue, connection: setup.redis)?.fields ?? [:] }
            #expect(await eventually { try await status()["state"] == "retrying" })
            let retrying = try await status()
            #expect(retrying["error_class"] == "http_503")
            #expect(retrying["last_error"] == "HTTP 503: answer 503")
            let next = Int64(retrying["next_attempt_at"] ?? "") ?? 0
            let recordedAt = Int64(retrying["updated_at"] ?? "") ?? 0
            #expect(next - recordedAt >= 2900, "next_attempt_at follows Retry-After: 3")
            #expect(await eventually { server.requests.count == 2 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(ContinuousClock.now - start >= .seconds(3), "the second delivery waited for Retry-After: 3")
        #expect(
            try await setup.redis.send(RedisCommand("EXISTS", [.string(setup.keys.retryAfter)])).integer == 0,
            "cleared once claimed")
    }

    @Test("a timeout and a refused connection are retried and name curl's error")
    func transferFailures() async throws {
        let setup = try await Setup()
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        try await setup.publish("200,sleep=1500", jobID: "slow")
        try await setup.withWorker(PushEndpoint(url: server.url(), timeout: .milliseconds(300))) {
            $0.retry.maxAttempts = 1
        } body: {
            #expect(await eventually { try await setup.deadEntries().count == 1 })
        }
        let timedOut = try #require(try await setup.deadEntries().first)
        #expect(Self.text(timedOut, "dead_letter.error_class") == "curl_28")
        #expect(Self.text(timedOut, "dead_letter.error").contains("curl error 28"))

        let refused = try await Setup()
        try await refused.publish("200", jobID: "refused")
        let closedPort = try freeLoopbackPort()
        try await refused.withWorker(PushEndpoint(url: "http://127.0.0.1:\(closedPort)/")) {
            $0.retry.maxAttempts = 2
        } body: {
            #expect(await eventually { try await refused.deadEntries().count == 1 })
        }
        let dead = try #require(try await refused.deadEntries().first)
        #expect(Self.text(dead, "dead_letter.error_class") == "curl_7")
        #expect(Self.text(dead, "dead_letter.delivery_count") == "2")
        #expect(Self.text(dead, "dead_letter.error").contains("onnect"))
    }

    @Test("a host that never answers the connect fails at the connect timeout, long before the request timeout")
    func connectTimeout() async throws {
        let listener = try SaturatedListener()
        let client = CurlHTTPClient(maxConnections: 1)
        defer { client.close() }
        let start = ContinuousClock.now
        let error = await #expect(throws: CurlTransferError.self) {
            _ = try await client.send(
                .init(
                    url: "http://127.0.0.1:\(listener.port)/", body: [], timeout: .seconds(20),
                    connectTimeout: .milliseconds(300)))
        }
        withExtendedLifetime(listener) {}
        #expect(ContinuousClock.now - start < .seconds(15), "well before the 20 s request timeout, on a loaded machine too")
        #expect(error?.code == 28, "curl's timeout, \(String(describing: error))")
        #expect(error?.message.lowercased().contains("connect") == true, "\(String(describing: error))")
    }

    @Test("https is verified: an endpoint whose certificate no one trusts is never sent a job (curl_60)")
    func tlsVerification() async throws {
        let directory = FileManager.default.temporaryDirectory.appending(path: uniqueName("push-tls")).path()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let certificate = try await runProcess(
            URL(fileURLWithPath: "/bin/sh"),
            [
                "-c",
                "openssl req -x509 -newkey rsa:2048 -nodes -keyout \"$1/key.pem\" -out \"$1/cert.pem\" -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1",
                "sh", directory,
            ])
        #expect(certificate.status == 0, "\(certificate.standardError)")
        let setup = try await Setup()
        let server = try await PushEndpointServer(tls: (directory + "/cert.pem", directory + "/key.pem"))
        defer { Task { await server.stop() } }
        try await setup.publish("204", jobID: "self-signed")
        try await setup.withWorker(PushEndpoint(url: server.url())) {
            $0.retry.maxAttempts = 1
        } body: {
            #expect(await eventually { try await setup.deadEntries().count == 1 })
        }
        let dead = try #require(try await setup.deadEntries().first)
        #expect(Self.text(dead, "dead_letter.error_class") == "curl_60", "\(Self.text(dead, "dead_letter.error"))")
        #expect(server.requests.isEmpty, "no request reached the unverified server")
    }

    @Test("only the start of a large response body is read; the job still settles by its status")
    func largeResponseBody() async throws {
        let setup = try await Setup()
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        try await setup.publish("410,big=5000000", jobID: "huge")
        try await setup.withWorker(PushEndpoint(url: server.url(), maxResponseBytes: 1024)) {
            #expect(await eventually { try await setup.deadEntries().count == 1 })
        }
        let dead = try #require(try await setup.deadEntries().first)
        let reason = Self.text(dead, "dead_letter.error")
        #expect(reason.hasPrefix("HTTP 410: xxxx") && reason.count < 1024, "\(reason.count) characters")
    }

    @Test("with a secret every request is signed; an independent verifier accepts it and refuses a tampered body")
    func signatures() async throws {
        let setup = try await Setup()
        let server = try await PushEndpointServer(secret: "s3cret")
        defer { Task { await server.stop() } }
        for index in 0..<3 { try await setup.publish("204", data: "{\"n\": \(index)}") }
        try await setup.withWorker(PushEndpoint(url: server.url(), secret: Array("s3cret".utf8))) {
            #expect(await eventually { server.requests.count == 3 })
        }
        #expect(server.requests.allSatisfy { $0.signatureValid == true })
        let request = try #require(server.requests.first)
        let verifier = try DocsVerifier.python()
        let check = { (body: [UInt8]) async throws -> String in
            try await runPython(
                verifier
                    + "\nimport base64, sys\nprint(verify(b's3cret', sys.argv[1], base64.b64decode(sys.argv[2]), sys.argv[3]))",
                [
                    request.headers["ferry-timestamp"] ?? "", Data(body).base64EncodedString(),
                    request.headers["ferry-signature"] ?? "",
                ]
            ).standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try await check(request.bodyBytes) == "True")
        #expect(try await check(request.bodyBytes + Array(" ".utf8)) == "False")
    }

    @Test("connections are reused: many jobs travel over a few keep-alive connections")
    func keepAlive() async throws {
        let setup = try await Setup()
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        for _ in 0..<40 { try await setup.publish("204") }
        try await setup.withWorker(PushEndpoint(url: server.url())) {
            $0.concurrency = 4
        } body: {
            #expect(await eventually { server.requests.count == 40 })
        }
        let connections = Set(server.requests.map(\.clientPort)).count
        #expect(connections <= 4, "40 requests over \(connections) connections")
    }

    @Test("an endpoint that fails for a while then recovers gets every job in the end, none dead-lettered")
    func recovery() async throws {
        let setup = try await Setup()
        let server = try await PushEndpointServer()
        defer { Task { await server.stop() } }
        for _ in 0..<20 { try await setup.publish("500;500;500;200") }
        try await setup.withWorker(PushEndpoint(url: server.url())) {
            $0.retry.maxAttempts = 5; $0.concurrency = 8
        } body: {
            #expect(
                await eventually(.seconds(20)) {
                    try await setup.pendingCount() == 0 && server.requests.filter { $0.status == 200 }.count == 20
                })
        }
        #expect(server.requests.filter { $0.status == 200 }.count == 20)
        #expect(try await setup.deadEntries().isEmpty)
    }

    @Test("webhooks fire once per terminal state: succeeded, dead, cancelled")
    func webhooks() async throws {
        let setup = try await Setup()
        let server = try await PushEndpointServer(secret: "hook")
        defer { Task { await server.stop() } }
        let notifier = WebhookNotifier(url: server.url("/respond/204"), secret: Array("hook".utf8))
        try await setup.publish("200", jobID: "ok")
        try await setup.publish("410", jobID: "gone")
        try await setup.publish("200", jobID: "never")
        _ = try await JobStatus.requestCancellation(jobID: "never", queue: setup.queue, connection: setup.redis)
        try await setup.withWorker(PushEndpoint(url: server.url()), observer: notifier) {
            #expect(await eventually { notifier.delivered == 3 })
        }
        let events = server.requests.filter { $0.path == "/respond/204" }.compactMap(\.json)
        #expect(events.count == 3)
        let states = Dictionary(
            uniqueKeysWithValues: events.map { ($0["job_id"] as? String ?? "", $0["state"] as? String ?? "") })
        #expect(states == ["ok": "succeeded", "gone": "dead", "never": "cancelled"])
        let dead = try #require(events.first { $0["job_id"] as? String == "gone" })
        #expect(dead["error"] as? String == "HTTP 410: answer 410")
        #expect(dead["queue"] as? String == setup.queue.rawValue && dead["attempts"] as? Int == 1)
        #expect(server.requests.filter { $0.path == "/respond/204" }.allSatisfy { $0.signatureValid == true })
        #expect(notifier.failed == 0)
    }

    @Test("a notification that keeps failing is counted and logged, never fatal")
    func failingWebhook() async throws {
        let notifier = WebhookNotifier(url: "http://127.0.0.1:\(try freeLoopbackPort())/", backoffs: [.milliseconds(10)])
        let queue = QueueName("q")
        notifier.jobFinished(JobEvent(jobID: "j", entryID: "1-0", queue: queue, group: "g", state: .succeeded, attempts: 1))
        #expect(await eventually { notifier.failed == 1 })
        #expect(notifier.delivered == 0)
    }

    @Test("flow control: the window starts small, grows with successes, halves on failures, and respects the limit")
    func slowStart() async throws {
        let flow = PushFlowControl(limit: 8)
        #expect(flow.window == 1)
        for _ in 0..<20 {
            try await flow.acquire()
            flow.release(healthy: true)
        }
        #expect(flow.window == 8)
        for _ in 0..<2 {
            try await flow.acquire()
            flow.release(healthy: false)
        }
        #expect(flow.window == 2)
        try await flow.acquire()
        try await flow.acquire()
        let third = Task { try await flow.acquire() }
        try await Task.sleep(for: .milliseconds(50))
        #expect(flow.inFlight == 2, "a third request waits while the window is 2")
        flow.release(healthy: true)
        try await third.value
        #expect(flow.inFlight == 2)
    }

    @Test("Retry-After is read as seconds or as an HTTP date")
    func retryAfterParsing() {
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        #expect(PushJobHandler.parseRetryAfter("120", now: now) == .seconds(120))
        #expect(PushJobHandler.parseRetryAfter("Tue, 14 Nov 2023 22:13:50 GMT", now: now) == .seconds(30))
        #expect(PushJobHandler.parseRetryAfter("soon", now: now) == nil)
    }
}

/// The Python `verify` function from docs/push.md, as a reader would copy it.
enum DocsVerifier {
    static func python() throws -> String {
        let markdown = try String(contentsOf: repositoryRoot.appending(path: "docs/push.md"), encoding: .utf8)
        guard let start = markdown.range(of: "```python\n"),
            let end = markdown.range(of: "\n```", range: start.upperBound..<markdown.endIndex)
        else { throw TestSupportError("docs/push.md has no python block") }
        return String(markdown[start.upperBound..<end.lowerBound])
    }
}

extension TestQueue {
    fileprivate init() async throws { try await self.init("push") }

    fileprivate func publish(
        _ respond: String, jobID: String? = nil, data: String = "{}", attributes: [String: String] = [:]
    )
        async throws
    {
        var message = JobMessage(
            type: "t", data: data, jobID: jobID, attributes: attributes.merging(["respond": respond]) { $1 })
        message.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        _ = try await publisher.publish(message)
    }

    /// Runs a push worker while `body` runs, then stops it.
    fileprivate func withWorker(
        _ endpoint: PushEndpoint, observer: (any JobEventObserver)? = nil,
        configure: (inout Worker.Configuration) -> Void = { _ in }, body: () async throws -> Void
    ) async throws {
        var configuration = Worker.Configuration()
        configuration.consumer = uniqueName("c")
        configuration.lease = .seconds(5)
        configuration.retry = RetryPolicy(
            maxAttempts: 2, minimumBackoff: .milliseconds(50), maximumBackoff: .milliseconds(50))
        configuration.shutdownGrace = .seconds(5)
        configure(&configuration)
        let worker = Worker(
            queue: queue, redis: redisConfiguration, handlers: [:], configuration: configuration,
            fallbackHandler: PushJobHandler(endpoint: endpoint, concurrency: configuration.concurrency), observer: observer)
        let task = Task { try await worker.run() }
        do { try await body() } catch {
            worker.stop()
            throw error
        }
        worker.stop()
        try await task.value
    }
}
