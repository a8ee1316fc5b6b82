import Ferry
import Foundation
import Logging
import Synchronization

/// Posts a small signed JSON event when a job reaches a terminal state (`ferry worker --notify`).
///
/// Sending happens off the job's path: a failing or slow webhook endpoint never holds a worker
/// slot. Each event is tried a few times with backoff; one that still fails is logged and
/// counted, never fatal. Events beyond ``maxPending`` waiting at once are dropped the same way.
public final class WebhookNotifier: JobEventObserver {
    /// Where events are POSTed.
    public let url: String
    private let client: CurlHTTPClient
    private let signer: RequestSigner?
    private let headers: [String]
    private let timeout: Duration
    private let backoffs: [Duration]
    private let logger: Logger
    private let counts = Mutex((pending: 0, delivered: 0, failed: 0))
    /// Events in flight at once, at most; more are dropped and counted as failed.
    public let maxPending = 10_000

    /// - Parameter backoffs: the waits between attempts; their count + 1 is the number of attempts.
    public init(
        url: String, secret: [UInt8]? = nil, headers: [String] = [], timeout: Duration = .seconds(10),
        backoffs: [Duration] = [.milliseconds(500), .seconds(2), .seconds(8)], client: CurlHTTPClient = CurlHTTPClient(),
        logger: Logger = Logger(label: "ferry.notify")
    ) {
        self.url = url
        self.client = client
        self.signer = secret.map(RequestSigner.init(secret:))
        self.headers = headers
        self.timeout = timeout
        self.backoffs = backoffs
        self.logger = logger
    }

    /// Events delivered (a 2xx answer) and events given up on, so far.
    public var delivered: Int { counts.withLock { $0.delivered } }
    /// Given up on: retries used up, or dropped because ``maxPending`` were waiting.
    public var failed: Int { counts.withLock { $0.failed } }

    /// The event as posted, keys in snake case: `{"event": "job.succeeded", "job_id", "queue", …}`.
    struct Payload: Encodable {
        let event: String
        let jobId: String
        let entryId: String
        let queue: String
        let group: String
        let state: String
        let type: String?
        let attempts: Int
        let errorClass: String?
        let error: String?
        let publishedAt: String?
        let finishedAt: String
    }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }()

    /// Queues the event and returns at once: a slow webhook never holds up a job.
    public func jobFinished(_ event: JobEvent) {
        let admitted = counts.withLock { counts -> Bool in
            guard counts.pending < maxPending else {
                counts.failed += 1
                return false
            }
            counts.pending += 1
            return true
        }
        guard admitted else {
            logger.warning("webhook_dropped: too many notifications waiting", metadata: ["ferry.job_id": "\(event.jobID)"])
            return
        }
        Task { await deliver(event) }
    }

    private func deliver(_ event: JobEvent) async {
        defer { counts.withLock { $0.pending -= 1 } }
        let payload = Payload(
            event: "job.\(event.state.rawValue)", jobId: event.jobID, entryId: event.entryID, queue: event.queue.rawValue,
            group: event.group, state: event.state.rawValue, type: event.type, attempts: event.attempts,
            errorClass: event.errorClass, error: event.error, publishedAt: event.publishedAt.map(\.rfc3339),
            finishedAt: event.finishedAt.rfc3339)
        guard let body = try? Array(Self.encoder.encode(payload)) else { return }
        var lastError = ""
        for attempt in 0...backoffs.count {
            if attempt > 0 { try? await Task.sleep(for: backoffs[attempt - 1]) }
            var request = CurlHTTPClient.Request(
                url: url, headers: ["Content-Type: application/json"] + headers, body: body, timeout: timeout,
                maxResponseBytes: 4096)
            if let signer { request.headers += signer.headers(body: body) }
            do {
                let response = try await client.send(request)
                if (200..<300).contains(response.status) {
                    counts.withLock { $0.delivered += 1 }
                    return
                }
                lastError = PushError.reason(response)
            } catch {
                lastError = "\(error)"
            }
        }
        counts.withLock { $0.failed += 1 }
        logger.warning(
            "webhook_failed",
            metadata: [
                "ferry.job_id": "\(event.jobID)", "ferry.state": "\(event.state.rawValue)",
                "ferry.attempts": "\(backoffs.count + 1)",
                "ferry.error": "\(FailureText.keepingEnd(lastError, limit: FailureText.loggedLimit))",
            ])
    }
}
