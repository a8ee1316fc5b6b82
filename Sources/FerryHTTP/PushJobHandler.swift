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
        if let progress = response.headers["ferry-progress"].flatMap(Self.parseProgress) {
            await job.reportProgress(progress.percent, stage: progress.stage)
        }
        try settle(response)
        if job.workflow != nil { try Self.applyStepReply(response, to: job) }
    }

    /// A workflow step's answer (docs/push.md, "Workflow steps"): a JSON object body may carry
    /// `result` (text) or `result_base64`, kept as the step's result, and `decision` (`proceed`,
    /// `block`, `retry`, `fail`) with `reason`, `step` and `after` (a duration such as `30s`).
    /// Any other body is no answer: the step proceeds without a result.
    ///
    /// - Throws: ``WorkflowDecision`` for a decision; ``PermanentJobError`` for one it cannot
    ///   read, or an answer cut off at the response limit.
    static func applyStepReply(_ response: CurlHTTPClient.Response, to job: Job) throws {
        guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] else { return }
        if response.bodyTruncated {
            throw PermanentJobError(
                "the step's answer was cut off at the push response limit (16 KiB by default); keep the result shorter, or store it elsewhere and answer a reference"
            )
        }
        if let text = object["result"] as? String {
            try job.setResult(Array(text.utf8))
        } else if let encoded = object["result_base64"] as? String {
            guard let bytes = Data(base64Encoded: encoded) else {
                throw PermanentJobError("the step's result_base64 is not base64")
            }
            try job.setResult(Array(bytes))
        }
        let reason = object["reason"] as? String ?? ""
        switch object["decision"] as? String {
        case nil, "proceed": return
        case "block": throw WorkflowDecision.block(reason: reason.isEmpty ? "blocked by the step's endpoint" : reason)
        case "fail": throw WorkflowDecision.fail(reason: reason.isEmpty ? "failed by the step's endpoint" : reason)
        case "retry":
            guard let step = object["step"] as? String else {
                throw PermanentJobError("the step's retry decision names no step (\"step\": \"<name>\")")
            }
            let after = (object["after"] as? String).flatMap { Duration(ferryText: $0) } ?? .zero
            throw WorkflowDecision.retry(step: step, after: after)
        case let other?:
            throw PermanentJobError("the step's decision \"\(other)\" is none of proceed, block, retry, fail")
        }
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

    /// A `Ferry-Progress` header, `<percent> [stage]` (docs/push.md): the job's progress as the
    /// endpoint answered, on any response (a retried one too); nil when it does not parse.
    static func parseProgress(_ value: String) -> (percent: Int, stage: String?)? {
        let words = value.trimmingCharacters(in: .whitespaces).split(separator: " ", maxSplits: 1)
        guard let first = words.first, let percent = Int(first) else { return nil }
        return (min(max(percent, 0), 100), words.count > 1 ? String(words[1]) : nil)
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
