import Ferry
import FerryRedis
import Foundation
import HTTPTypes
import OpenAPIRuntime

/// An error as the API answers it: an RFC 9457 problem (`application/problem+json`) whose
/// `type` (`urn:ferry:problem:<name>`) stays the same for good, so clients branch on it, and
/// whose `detail` says what is wrong and what to do.
struct APIProblem: Error, Sendable, CustomStringConvertible {
    /// The kinds of error the API answers, each with its status.
    enum Kind: String, Sendable {
        case invalidRequest = "invalid-request"
        case unauthenticated
        case forbidden
        case notFound = "not-found"
        case conflict
        case queueFull = "queue-full"
        case quotaReached = "quota-reached"
        case rateLimited = "rate-limited"
        case payloadTooLarge = "payload-too-large"
        case redisUnavailable = "redis-unavailable"
        case `internal`

        var status: HTTPResponse.Status {
            switch self {
            case .invalidRequest: .badRequest
            case .unauthenticated: .unauthorized
            case .forbidden: .forbidden
            case .notFound: .notFound
            case .conflict: .conflict
            case .queueFull, .redisUnavailable: .serviceUnavailable
            case .quotaReached, .rateLimited: .tooManyRequests
            case .payloadTooLarge: .contentTooLarge
            case .internal: .internalServerError
            }
        }
    }

    var kind: Kind
    var detail: String
    /// For `conflict`: the job the idempotency key published first.
    var jobID: String?
    /// Seconds after which trying again may succeed (`Retry-After`).
    var retryAfter: Int?

    init(_ kind: Kind, _ detail: String, jobID: String? = nil, retryAfter: Int? = nil) {
        self.kind = kind
        self.detail = detail
        self.jobID = jobID
        self.retryAfter = retryAfter
    }

    /// The problem for a library error: invalid input 400, not found 404, a full queue 503 (a
    /// key at its quota 429) with `Retry-After`, Redis unreachable or refusing 503.
    init(_ error: FerryError) {
        if let full = error.queueFull {
            let seconds = full.retryAfter.map { max(1, Int(($0.milliseconds + 999) / 1000)) } ?? 1
            self.init(full.key == nil ? .queueFull : .quotaReached, error.message, retryAfter: seconds)
            return
        }
        switch error.code {
        case .invalidInput: self.init(.invalidRequest, error.message)
        case .notFound: self.init(.notFound, error.message)
        case .redis: self.init(.redisUnavailable, "Redis did not answer or refused: \(error.message)", retryAfter: 1)
        default: self.init(.internal, error.message)
        }
    }

    var description: String { "\(kind.rawValue): \(detail)" }

    /// The problem's JSON body.
    struct Body: Encodable {
        var type: String
        var title: String
        var status: Int
        var detail: String
        var jobID: String?

        enum CodingKeys: String, CodingKey {
            case type, title, status, detail
            case jobID = "job_id"
        }
    }

    /// The response: status, `Content-Type: application/problem+json`, `Retry-After` when
    /// known, `WWW-Authenticate` for a missing or refused credential.
    func response() -> (HTTPResponse, HTTPBody) {
        let (head, bytes) = parts()
        return (head, HTTPBody(bytes))
    }

    /// The answer's head and its body's bytes.
    func parts() -> (HTTPResponse, [UInt8]) {
        var response = HTTPResponse(status: kind.status)
        response.headerFields[.contentType] = "application/problem+json"
        if let retryAfter { response.headerFields[.retryAfter] = "\(retryAfter)" }
        if kind == .unauthenticated { response.headerFields[.wwwAuthenticate] = #"Bearer realm="ferry""# }
        let body = Body(
            type: "urn:ferry:problem:\(kind.rawValue)", title: kind.status.reasonPhrase, status: kind.status.code,
            detail: detail, jobID: jobID)
        let bytes = (try? JSONEncoder().encode(body)).map(Array.init) ?? Array(#"{"type":"urn:ferry:problem:internal"}"#.utf8)
        return (response, bytes)
    }
}
