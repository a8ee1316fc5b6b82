import Ferry
import FerryRedis
import Foundation
import HTTPTypes
import OpenAPIRuntime

/// Per-client rate limits of `ferry serve` (`--rate-limit 100/s`, `--rate-limit publish=30/d`):
/// at most N requests of a route class in any window of a period, per caller, held in Redis so
/// every `ferry serve` behind a load balancer shares them. Over the limit is 429 `rate-limited`
/// with `Retry-After` saying when the window lets the next one in.
///
/// Exact windows rather than a token bucket: "30 uploads a day" means no 31st within a day, which
/// a bucket refilling all day would allow. The window holds one member per counted request, so a
/// limit's cost in Redis memory is its count per active caller (at most ``maxCount``).
public struct APIRateLimits: Sendable, Equatable {
    /// What a limit counts: operations are classed by what they do.
    public enum RouteClass: String, Sendable, CaseIterable {
        /// Publishing jobs and starting workflows (the `publish` scope).
        case publish
        /// Reading, other than one job's status.
        case read
        /// One job's status (`GET .../jobs/{id}`), counted per caller and job: "10 polls a
        /// minute per job" lets a client follow many jobs.
        case poll
        /// Cancel, retry and the other admin operations.
        case admin
    }

    /// One class's limit: `count` requests in any window of `period`.
    public struct Limit: Sendable, Equatable {
        public var count: Int
        public var period: Duration
    }

    /// The largest count a limit may have: each counted request is a member of a sorted set.
    public static let maxCount = 100_000

    /// The limit of each class that has one.
    public var limits: [RouteClass: Limit] = [:]

    /// No limits.
    public init() {}

    /// Reads `--rate-limit` values: `N/PERIOD` for every class, `CLASS=N/PERIOD` for one (a
    /// later value wins). Periods as `ferry limit` writes them: `100/s`, `30/d`, `5/10s`.
    ///
    /// - Throws: ``FerryError`` `invalidInput` naming the value and what is expected.
    public init(parsing values: [String]) throws(FerryError) {
        for value in values {
            let parts = value.split(separator: "=", maxSplits: 1).map(String.init)
            let classes: [RouteClass]
            if parts.count == 2 {
                guard let named = RouteClass(rawValue: parts[0]) else {
                    throw FerryError(
                        .invalidInput,
                        "--rate-limit \(value): \"\(parts[0])\" is not a route class; use publish, read, poll or admin (or none, for all)"
                    )
                }
                classes = [named]
            } else {
                classes = RouteClass.allCases
            }
            let (count, period) = try QueueLimit.parseRate(parts.last ?? value)
            guard count <= Self.maxCount else {
                throw FerryError(
                    .invalidInput, "--rate-limit \(value): at most \(Self.maxCount) requests a period can be counted")
            }
            for routeClass in classes { limits[routeClass] = Limit(count: count, period: period) }
        }
    }

    /// The class of an operation of the document, by its scope (one job's status is `poll`).
    static func routeClass(operationID: String, scope: APIKeys.Scope) -> RouteClass {
        if operationID == "getJob" { return .poll }
        switch scope {
        case .publish: return .publish
        case .read: return .read
        case .admin: return .admin
        }
    }
}

/// Counts requests (or, for a batch publish, its jobs) against their caller's limit
/// (``APIRateLimits``) in Redis (`rate_window.lua`), so every `ferry serve` shares it.
struct RateLimiter: Sendable {
    let limits: APIRateLimits
    let pool: RedisConnectionPool
    static let script = RedisScript(name: "rate_window", source: EmbeddedAPIFiles.rate_window)

    /// Counts `weight` against `client`'s limit of `routeClass` (per job for `poll`: `job`, as
    /// `queue/job_id`), or refuses with 429 and `Retry-After`, counting nothing, when they do not
    /// fit in the window. No limit for the class: nothing is counted.
    func charge(_ client: APIClient, _ routeClass: APIRateLimits.RouteClass, job: String? = nil, weight: Int = 1) async throws {
        guard let limit = limits.limits[routeClass] else { return }
        let rate = QueueLimit.rateText(count: limit.count, period: limit.period)
        let unit = routeClass == .publish && weight > 1 ? "published jobs" : "\(routeClass.rawValue) requests"
        guard weight <= limit.count else {
            throw APIProblem(
                .rateLimited, "\(client.name) may make \(rate) \(unit); \(weight) at once can never fit: send fewer at a time")
        }
        var key = "ferry:api:rate:\(routeClass.rawValue):\(client.identity)"
        if routeClass == .poll, let job { key += ":\(job)" }
        let reply = try await pool.next.run(
            Self.script, keys: [.string(key)],
            arguments: [
                .integer(Int64(limit.count)), .integer(limit.period.milliseconds), .string(UUID().uuidString),
                .integer(Int64(weight)),
            ])
        let answer = reply.array?.compactMap(\.integer) ?? []
        guard answer.count == 2 else { throw APIProblem(.internal, "the rate limit script answered \(reply)") }
        if answer[0] == 0 {
            throw APIProblem(
                .rateLimited,
                "\(client.name) may make \(rate) \(unit)\(routeClass == .poll ? " per job" : ""); "
                    + "try again in \(Double(answer[1]) / 1000) s",
                retryAfter: Int((answer[1] + 999) / 1000))
        }
    }
}

/// Counts each request against its caller's limit (``RateLimiter``); after authentication, so
/// the caller is known, and before the handler, so a refused request does no work. A batch
/// publish is counted by its handler instead, once per job, when it knows how many.
struct RateLimitMiddleware: ServerMiddleware {
    let limiter: RateLimiter
    /// Operations whose handlers count themselves (by the jobs in their body).
    static let countedByHandler: Set<String> = ["publishJobs"]

    func intercept(
        _ request: HTTPRequest, body: HTTPBody?, metadata: ServerRequestMetadata, operationID: String,
        next: @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)
    ) async throws -> (HTTPResponse, HTTPBody?) {
        guard let scope = OpenAPIDocument.scopes[operationID], !Self.countedByHandler.contains(operationID) else {
            return try await next(request, body, metadata)
        }
        let job = metadata.pathParameters["queue"].flatMap { queue in metadata.pathParameters["job_id"].map { "\(queue)/\($0)" } }
        try await limiter.charge(
            APIClient.current, APIRateLimits.routeClass(operationID: operationID, scope: scope), job: job)
        return try await next(request, body, metadata)
    }
}
