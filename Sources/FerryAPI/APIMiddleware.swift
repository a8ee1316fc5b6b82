import Ferry
import FerryRedis
import Foundation
import HTTPTypes
import Logging
import OpenAPIRuntime

/// Turns every error of an operation into an RFC 9457 problem: a request that does not decode
/// (a missing field, a wrong type, malformed JSON) is `invalid-request`; a library error keeps its
/// meaning (``APIProblem/init(_:)``); anything else is `internal`, logged, its text not shown.
struct ProblemMiddleware: ServerMiddleware {
    let logger: Logger

    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        do {
            return try await next(request, body, metadata)
        } catch {
            let problem = problem(for: error)
            if problem.kind == .internal {
                logger.error(
                    "api_error", metadata: ["ferry.operation": "\(operationID)", "ferry.error": "\(String(reflecting: error))"])
            }
            return problem.response()
        }
    }

    func problem(for error: any Error) -> APIProblem {
        switch error {
        case let problem as APIProblem: return problem
        case let error as FerryError: return APIProblem(error)
        case let error as RedisError: return APIProblem(FerryError(error))
        case let error as ServerError:
            // No input: the request did not decode into the operation's input.
            if error.operationInput == nil, !(error.underlyingError is APIProblem || error.underlyingError is FerryError) {
                return APIProblem(.invalidRequest, "the request does not match the API: \(Self.reason(error.underlyingError))")
            }
            return problem(for: error.underlyingError)
        default:
            return APIProblem(.internal, "the server failed; its log has the error")
        }
    }

    /// What a decoding error says, without Swift's type names.
    static func reason(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "the field \(key.stringValue) is missing"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
            DecodingError.dataCorrupted(let context):
            "\(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)"
        default: "\(error)"
        }
    }
}

/// Who may call what: the bearer token is an API key (``APIKeys``) or a JWT
/// (``JWTAuthenticator``); the operation's scope
/// (`x-ferry-scope` in the document) must be one of the key's, and a queue in the path one it
/// may see. The caller is then ``APIClient/current`` for the handler.
/// Writes a generated answer's `Location` as the URI reference it is: the runtime writes header
/// values percent-encoded (OpenAPI's simple style), which would escape the reference's `/` and
/// its escapes again.
struct LocationHeaderMiddleware: ServerMiddleware {
    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        var (response, responseBody) = try await next(request, body, metadata)
        if let location = response.headerFields[.location] {
            response.headerFields[.location] = APIHandlers.percentDecoded(location)
        }
        return (response, responseBody)
    }
}

struct AuthenticationMiddleware: ServerMiddleware {
    let authenticator: Authenticator

    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        guard var scope = OpenAPIDocument.scopes[operationID] else {
            throw APIProblem(.forbidden, "operation \(operationID) names no scope in the API document; no one may call it")
        }
        let client = try await authenticate(request)
        if client.jobKey != nil {
            guard let own = OpenAPIDocument.keyedCallerScopes[operationID] else {
                throw APIProblem(
                    .forbidden,
                    "\(client.name) is scoped to its own jobs (--jwt-subject-is-key): it may publish, read, list, cancel and retry them, not call \(operationID)"
                )
            }
            scope = own
        }
        guard client.may(scope) else {
            throw APIProblem(.forbidden, "\(client.name) lacks the \(scope.rawValue) scope \(operationID) needs")
        }
        if let name = metadata.pathParameters["queue"].map(APIHandlers.percentDecoded), !client.sees(name) {
            throw APIProblem(.forbidden, "\(client.name) may not use queue \(name)")
        }
        return try await APIClient.$current.withValue(client) { try await next(request, body, metadata) }
    }

    /// Bearer tokens always; the dashboard's session cookie for reads only (a cross-site form
    /// cannot make a read do anything, and the cookie is `SameSite=Strict` besides).
    private func authenticate(_ request: HTTPRequest) async throws -> APIClient {
        let safe = request.method == .get || request.method == .head
        guard let client = try await authenticator.client(of: request, cookies: safe) else {
            throw APIProblem(.unauthenticated, "send an API key or a JWT: Authorization: Bearer ...")
        }
        return client
    }
}

/// Records each admin operation of the API in the audit log (``AuditLog``): who, which
/// operation, on what, and how it ended, so changes made by scripts are on record beside those
/// made in the dashboard.
struct AuditMiddleware: ServerMiddleware {
    let pool: RedisConnectionPool
    var log: AuditLog { AuditLog(connection: pool.next) }

    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        guard OpenAPIDocument.scopes[operationID] == .admin else { return try await next(request, body, metadata) }
        let parameters = metadata.pathParameters
        let queue = parameters["queue"].map(APIHandlers.percentDecoded) ?? ""
        let target = (parameters["job_id"] ?? parameters["name"] ?? parameters["workflow_id"]).map(String.init) ?? ""
        let actor = APIClient.current.name
        do {
            let answer = try await next(request, body, metadata)
            try await log.record(
                actor: actor, action: operationID, queue: queue, target: target, outcome: "HTTP \(answer.0.status.code)")
            return answer
        } catch {
            let outcome = (error as? APIProblem).map { "refused: \($0.kind.rawValue)" } ?? "failed"
            try? await log.record(actor: actor, action: operationID, queue: queue, target: target, outcome: outcome)
            throw error
        }
    }
}
