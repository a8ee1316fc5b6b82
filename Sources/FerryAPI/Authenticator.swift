import Ferry
import FerryRedis
import Foundation
import HTTPTypes

/// Who a request comes from: an API key or a JWT as a bearer token (every API call), or the
/// dashboard's session cookie (pages, and the API's reads the dashboard's pages make). One
/// place, so the API and the dashboard cannot disagree on who someone is.
struct Authenticator: Sendable {
    /// Whether API keys are accepted: false with no authentication.
    let acceptsKeys: Bool
    /// The connections key lookups take turns on.
    let pool: RedisConnectionPool
    /// The API keys; nil with no authentication.
    var keys: APIKeys? { acceptsKeys ? APIKeys(connection: pool.next) : nil }
    /// JWT verification, when configured.
    let jwt: JWTAuthenticator?
    /// The dashboard's sessions.
    let sessions: DashboardSessions
    /// No authentication (`--no-auth`): every caller may do everything.
    var isOpen: Bool { keys == nil && jwt == nil }

    /// The caller a bearer token names, or a refusal (`unauthenticated`) saying why.
    func client(token: String) async throws -> APIClient {
        if let jwt, !token.hasPrefix("ferry_") { return try await jwt.authenticate(token: token) }
        guard let keys, let key = try await keys.authenticate(token: token) else {
            throw APIProblem(.unauthenticated, "the API key is not one this server knows (mistyped, or revoked)")
        }
        return APIClient(
            name: "API key \(key.name)", identity: "key:\(key.id)", scopes: Set(key.scopes), queues: key.queues.map(Set.init))
    }

    /// The caller of `request`: its bearer token, else (when `cookies` allows, for requests
    /// that change nothing) its dashboard session; nil when it presents neither.
    func client(of request: HTTPRequest, cookies: Bool) async throws -> APIClient? {
        if isOpen { return .unrestricted }
        if let header = request.headerFields[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else {
                throw APIProblem(.unauthenticated, "the Authorization header is not Bearer <API key or JWT>")
            }
            return try await client(token: String(parts[1]).trimmingCharacters(in: .whitespaces))
        }
        guard cookies, let session = Self.cookie(DashboardSessions.cookieName, in: request) else { return nil }
        return try await sessions.client(session: session)
    }

    /// The value of the cookie `name`, if the request sends it.
    static func cookie(_ name: String, in request: HTTPRequest) -> String? {
        for header in request.headerFields[values: .cookie] {
            for pair in header.split(separator: ";") {
                let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if parts.count == 2, parts[0] == name { return parts[1] }
            }
        }
        return nil
    }
}

/// The dashboard's sign-ins: a browser that presented an API key or a JWT once gets a random
/// session id in an `HttpOnly`, `SameSite=Strict` cookie; Redis keeps, under the id's SHA-256,
/// who it is for 12 hours, or until the JWT it was made from expires if that is sooner
/// (`ferry:dashboard:session:<sha256>`), so every `ferry serve` knows the session and signing out
/// ends it everywhere. A session made with an API key ends when the key
/// is revoked: each use checks the key is still there.
struct DashboardSessions: Sendable {
    static let cookieName = "ferry_session"
    static let lifetime: Duration = .seconds(12 * 3600)
    let pool: RedisConnectionPool
    var connection: RedisConnection { pool.next }

    static func key(_ session: String) -> String { "ferry:dashboard:session:" + APIKeys.sha256(session) }

    /// How long a session of `client` lasts: ``lifetime``, or less when its credential expires
    /// sooner (a JWT's `exp`), so a session never outlives the token it was made from.
    static func lifetime(of client: APIClient, now: Date = Date()) -> Duration {
        guard let expiresAt = client.expiresAt else { return lifetime }
        let left = Duration.milliseconds(max(0, expiresAt.millisecondsSince1970 - now.millisecondsSince1970))
        return min(lifetime, left)
    }

    /// Starts a session for `client`; returns its id, for the cookie, and how long it lasts.
    func create(for client: APIClient) async throws -> (id: String, lifetime: Duration) {
        let lifetime = Self.lifetime(of: client)
        let session = APIKeys.randomHex(bytes: 32)
        var fields: [RedisArgument] = [
            "name", .string(client.name), "identity", .string(client.identity),
            "scopes", .string(client.scopes.map(\.rawValue).sorted().joined(separator: " ")),
        ]
        if let queues = client.queues { fields += ["queues", .string(queues.sorted().joined(separator: "\n"))] }
        if let jobKey = client.jobKey { fields += ["job_key", .string(jobKey)] }
        _ = try await connection.pipeline([
            RedisCommand("HSET", [.string(Self.key(session))] + fields),
            RedisCommand("PEXPIRE", [.string(Self.key(session)), .integer(max(1, lifetime.milliseconds))]),
        ])
        return (session, lifetime)
    }

    /// The caller a session id stands for, or a refusal when it ended (expired, signed out, or
    /// its API key revoked).
    func client(session: String) async throws -> APIClient {
        let ended = APIProblem(.unauthenticated, "the dashboard session has ended; sign in again")
        guard session.count == 64, session.allSatisfy(\.isHexDigit) else { throw ended }
        let fields = QueueInspector.fields(try await connection.send(RedisCommand("HGETALL", [.string(Self.key(session))])))
        guard let identity = fields["identity"]?.string, let name = fields["name"]?.string else { throw ended }
        if identity.hasPrefix("key:") {
            let exists = try await connection.send(
                RedisCommand("HEXISTS", [.string(APIKeys.redisKey), .string(String(identity.dropFirst(4)))]))
            guard exists.integer == 1 else {
                try await end(session)
                throw ended
            }
        }
        let scopes = (fields["scopes"]?.string ?? "").split(separator: " ").compactMap { APIKeys.Scope(rawValue: String($0)) }
        return APIClient(
            name: name, identity: identity, scopes: Set(scopes),
            queues: fields["queues"]?.string.map { Set($0.split(separator: "\n").map(String.init)) },
            jobKey: fields["job_key"]?.string)
    }

    /// Ends a session (signing out).
    func end(_ session: String) async throws {
        try await connection.send(RedisCommand("DEL", [.string(Self.key(session))]))
    }
}
