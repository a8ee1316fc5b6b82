import Ferry
import Foundation

/// Delivers each job to an HTTP endpoint and settles it by the response, the way a Pub/Sub push
/// subscription does, so handlers can be written in any language.
///
/// 102, 200, 201, 202 and 204 acknowledge. The endpoint's permanent statuses (400, 401, 403,
/// 404, 410, 413, 422 by default) dead-letter at once with the status and the start of the body
/// as the reason. 429 and 503 retry no earlier than their `Retry-After`; other statuses, timeouts
/// and connection failures retry with the worker's backoff.
public struct PushJobHandler: JobHandler {
    /// Where and how jobs are delivered.
    public let endpoint: PushEndpoint
    private let client: CurlHTTPClient
    private let builder: PushRequestBuilder
    private let flowControl: PushFlowControl

    /// Statuses that acknowledge the job (Pub/Sub push's success codes).
    public static let successStatuses: Set<Int> = [102, 200, 201, 202, 204]

    /// - Parameter concurrency: the most requests in flight; the worker's concurrency.
    public init(endpoint: PushEndpoint, concurrency: Int, client: CurlHTTPClient? = nil) {
        self.endpoint = endpoint
        self.client = client ?? CurlHTTPClient(maxConnections: max(concurrency, 16))
        self.builder = PushRequestBuilder(endpoint: endpoint, signer: endpoint.secret.map(RequestSigner.init(secret:)))
        self.flowControl = PushFlowControl(limit: concurrency)
    }

    /// The in-flight window right now (slow start): for tests and metrics.
    public var window: Int { flowControl.window }

    public func handle(_ job: Job) async throws {
        let request = builder.request(for: job)
        try await flowControl.acquire()
        let response: CurlHTTPClient.Response
        do {
            response = try await client.send(request)
        } catch let error as CurlTransferError {
            flowControl.release(healthy: false)
            throw PushError.transfer(error)
        } catch {
            flowControl.release(healthy: true)  // cancelled: says nothing about the endpoint
            throw error
        }
        flowControl.release(healthy: !(response.status == 429 || response.status >= 500))
        try settle(response)
    }

    private func settle(_ response: CurlHTTPClient.Response) throws {
        if Self.successStatuses.contains(response.status) { return }
        let reason = PushError.reason(response)
        if endpoint.permanentStatuses.contains(response.status) {
            throw PermanentJobError(reason)
        }
        let retryAfter =
            response.status == 429 || response.status == 503
            ? response.headers["retry-after"].flatMap { Self.parseRetryAfter($0, now: Date()) } : nil
        throw PushError.status(response.status, reason: reason, retryAfter: retryAfter)
    }

    /// `Retry-After` is seconds or an HTTP date (RFC 9110); a date in the past means now.
    static func parseRetryAfter(_ value: String, now: Date) -> Duration? {
        let text = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Int64(text), seconds >= 0 { return .seconds(seconds) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: text) else { return nil }
        return .milliseconds(max(Int64(date.timeIntervalSince(now) * 1000), 0))
    }
}

/// Why a push delivery will be retried: the HTTP status, or curl's error.
public enum PushError: RetryableJobError, CustomStringConvertible {
    case status(Int, reason: String, retryAfter: Duration?)
    case transfer(CurlTransferError)

    /// `http_<status>` or `curl_<code>`: stable, for grouping failures.
    public var errorClass: String {
        switch self {
        case .status(let status, _, _): "http_\(status)"
        case .transfer(let error): "curl_\(error.code)"
        }
    }

    /// The endpoint's `Retry-After` (429, 503), honoured before the next delivery.
    public var retryAfter: Duration? {
        if case .status(_, _, let retryAfter) = self { return retryAfter }
        return nil
    }

    public var description: String {
        switch self {
        case .status(_, let reason, _): reason
        case .transfer(let error): error.description
        }
    }

    /// `HTTP 410: <start of the body>`: what the job status and the dead-letter reason show.
    static func reason(_ response: CurlHTTPClient.Response) -> String {
        let body = String(decoding: response.body.prefix(512), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return body.isEmpty ? "HTTP \(response.status)" : "HTTP \(response.status): \(body)"
    }
}
