import Ferry
import FerryAdmin
import FerryRedis
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import OpenAPIHummingbird
import OpenAPIRuntime
import Prometheus

/// `ferry serve`: the HTTP API (docs/openapi.yaml) over one Redis, with `/v1/openapi.json` and
/// `/healthz`, `/readyz` and `/metrics`. Stateless: run as many as the load needs behind a load balancer; keys and
/// idempotency records live in Redis.
public enum APIServer {
    /// How the server runs.
    public struct Configuration: Sendable {
        /// The address to listen on; loopback unless asked otherwise.
        public var host = "127.0.0.1"
        /// The port; 0 picks a free one (``onListening`` says which).
        public var port = 8080
        /// Whether requests need an API key or a JWT. Off (`--no-auth`) is for loopback: see ``validate()``.
        public var requiresAuthentication = true
        /// Per-client rate limits (`--rate-limit`); none by default.
        public var rateLimits = APIRateLimits()
        /// JWT bearer tokens, accepted beside API keys when set.
        public var jwt: JWTAuthenticator.Configuration?
        /// Allows listening beyond loopback with authentication off (`--insecure-no-auth`).
        public var insecureNoAuth = false
        /// The largest request body; a larger one is answered 413.
        public var maxBodyBytes = 2 * 1_048_576
        /// Publishing settings (payload limit, dedup window, status).
        public var publishing = Publisher.Configuration()
        /// Marks the dashboard's cookies `Secure` (`--secure-cookies`): for a server behind TLS.
        public var secureCookies = false
        /// Answers a reused `Idempotency-Key` with 409 naming the first job, even when the body
        /// is the same (`--reject-duplicates`): for services whose clients must learn that a
        /// submission was a duplicate (the same document uploaded twice) rather than receive the
        /// first job's answer again, which is the default (a safe retry of a lost response).
        public var rejectsDuplicates = false

        /// The defaults: loopback, port 8080, API keys required.
        public init() {}

        /// Refuses to serve without authentication anywhere but loopback, unless
        /// ``insecureNoAuth`` says the operator means it.
        public func validate() throws(FerryError) {
            guard !requiresAuthentication, !insecureNoAuth, !Self.isLoopback(host) else { return }
            throw FerryError(
                .invalidInput,
                "without authentication ferry serve listens on loopback only (got --host \(host)); create API keys (ferry api-key create) and drop --no-auth, or add --insecure-no-auth if a proxy in front authenticates"
            )
        }

        static func isLoopback(_ host: String) -> Bool {
            host == "localhost" || host == "::1" || host.hasPrefix("127.")
        }
    }

    /// The application: run it as a `Service` (in a `ServiceGroup`, for graceful shutdown).
    ///
    /// - Parameters:
    ///   - connections: the connections to Redis requests take turns on.
    ///   - readiness: what `/readyz` asks (Redis answering, on a connection of its own).
    ///   - metrics: what `/metrics` renders; request metrics are recorded through swift-metrics,
    ///     so the caller bootstraps it with this registry (``FerryMetricsFactory``).
    ///   - onListening: called with the port once the server listens.
    public static func application(
        configuration: Configuration, connections: RedisConnectionPool, readiness: ReadinessProbe,
        metrics: PrometheusCollectorRegistry, logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }
    ) async throws -> some ApplicationProtocol {
        try configuration.validate()
        var jwt: JWTAuthenticator?
        if let settings = configuration.jwt { jwt = try await JWTAuthenticator(settings) }
        let router = Router()
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: BodyLimitMiddleware(maxBytes: configuration.maxBodyBytes))
        // Probes and metrics need no credentials, as a load balancer's and Prometheus's do not
        // carry any; they show no job data.
        router.get("/metrics") { _, _ in AdminResponse.metrics(metrics) }
        router.get("/readyz") { _, _ in await AdminResponse.readiness(readiness) }
        router.get("/v1/openapi.json") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.json)))
        }
        router.get("/healthz") { _, _ in AdminResponse.text(.ok, "ok\n") }
        let authenticator = Authenticator(
            acceptsKeys: configuration.requiresAuthentication, pool: connections,
            jwt: configuration.requiresAuthentication ? jwt : nil, sessions: DashboardSessions(pool: connections))
        let limiter = RateLimiter(limits: configuration.rateLimits, pool: connections)
        let handlers = APIHandlers(
            pool: connections, publishing: configuration.publishing, rejectsDuplicates: configuration.rejectsDuplicates,
            limiter: limiter)
        let middlewares: [any ServerMiddleware] = [
            ProblemMiddleware(logger: logger),
            AuthenticationMiddleware(authenticator: authenticator),
            RateLimitMiddleware(limiter: limiter),
            AuditMiddleware(pool: connections),
        ]
        let routes = RoutesButPublish(router: router)
        try handlers.registerHandlers(on: routes, middlewares: [LocationHeaderMiddleware()] + middlewares)
        guard let generatedPublish = routes.publish else {
            throw FerryError(.invalidInput, "the API document has no POST \(PublishRoute.path)")
        }
        let publish = PublishRoute(handlers: handlers, middlewares: middlewares, generated: generatedPublish)
        router.post("/v1/queues/:queue/jobs") { request, context in try await publish.respond(to: request, context: context) }
        try Dashboard(
            pool: connections, authenticator: authenticator, secureCookies: configuration.secureCookies, logger: logger
        ).addRoutes(to: router)
        return Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "ferry"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? configuration.port) },
            logger: logger)
    }
}

/// Answers a request body over the limit with 413 (a problem), before any handler reads it:
/// `Content-Length` is checked first, a chunked body as it arrives.
struct BodyLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    let maxBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > maxBytes {
            return Self.response(tooLarge)
        }
        var request = request
        do {
            _ = try await request.collectBody(upTo: maxBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            return Self.response(tooLarge)
        }
        return try await next(request, context)
    }

    /// The answer to a body over the limit (made only then: every request passes here).
    private var tooLarge: APIProblem {
        APIProblem(
            .payloadTooLarge, "the request body is over \(maxBytes) bytes; send large payloads by reference (docs/wire-format.md)"
        )
    }

    static func response(_ problem: APIProblem) -> Response {
        let (head, body) = problem.response()
        return Response(
            status: head.status, headers: head.headerFields,
            body: .init(asyncSequence: body.map { ByteBuffer(bytes: $0) }))
    }
}
