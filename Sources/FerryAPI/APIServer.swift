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
        let metricsMiddleware = RequestMetricsMiddleware<BasicRequestContext>()
        let bodyLimit = BodyLimitMiddleware<BasicRequestContext>(maxBytes: configuration.maxBodyBytes)
        router.add(middleware: metricsMiddleware)
        router.add(middleware: bodyLimit)
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
        router.post(PublishFirstResponder.routerPath) { request, context in
            try await publish.respond(to: request, queue: Substring(context.parameters.get("queue") ?? ""))
        }
        try Dashboard(
            pool: connections, authenticator: authenticator, secureCookies: configuration.secureCookies, logger: logger
        ).addRoutes(to: router)
        let responder = PublishFirstResponder(
            router: router.buildResponder(), metrics: metricsMiddleware, bodyLimit: bodyLimit, publish: publish)
        return Application(
            responder: responder,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "ferry"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? configuration.port) },
            logger: logger)
    }
}

/// The server's responder: the API's busiest request, `POST /v1/queues/{queue}/jobs`, goes
/// straight to ``PublishRoute`` through the same middlewares as every route (metrics, the body
/// limit), without resolving its path in the router's trie of some 60 routes, which cost about
/// 7% of a publish's CPU on the request's thread (docs/design.md); every other request, and a
/// publish path in any other spelling (`//`, a trailing `/`), goes to the router, which
/// resolves it to the same route.
struct PublishFirstResponder: HTTPResponder {
    let router: RouterResponder<BasicRequestContext>
    let metrics: RequestMetricsMiddleware<BasicRequestContext>
    let bodyLimit: BodyLimitMiddleware<BasicRequestContext>
    let publish: PublishRoute

    /// The publish route as the router has it.
    static let routerPath: RouterPath = "/v1/queues/:queue/jobs"
    /// The publish route's name in metrics, as the router gives it.
    static let endpointPath = routerPath.description

    func respond(to request: Request, context: BasicRequestContext) async throws -> Response {
        guard request.method == .post, let queue = Self.publishQueue(inPath: request.uri.path) else {
            return try await router.respond(to: request, context: context)
        }
        context.coreContext.endpointPath.value = Self.endpointPath
        do {
            return try await metrics.handle(request, context: context) { request, context in
                try await bodyLimit.handle(request, context: context) { request, _ in
                    try await publish.respond(to: request, queue: queue)
                }
            }
        } catch let error as any HTTPResponseError {
            // As the router answers an error a route throws.
            return try error.response(from: request, context: context)
        }
    }

    /// The queue segment of `/v1/queues/{queue}/jobs` exactly (one non-empty segment, no
    /// query: `uri.path` has none), or nil for any other path.
    static func publishQueue(inPath path: String) -> Substring? {
        let prefix = "/v1/queues/", suffix = "/jobs"
        guard path.utf8.count > prefix.utf8.count + suffix.utf8.count, path.hasPrefix(prefix), path.hasSuffix(suffix) else {
            return nil
        }
        let utf8 = path.utf8
        let start = utf8.index(utf8.startIndex, offsetBy: prefix.utf8.count)
        let end = utf8.index(utf8.endIndex, offsetBy: -suffix.utf8.count)
        guard !utf8[start..<end].contains(UInt8(ascii: "/")) else { return nil }
        return path[start..<end]
    }
}

/// Answers a request body over the limit with 413 (a problem), before any handler reads it:
/// `Content-Length` is checked first, a chunked body as it arrives.
struct BodyLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    let maxBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
    {
        if let length = request.headers.value(of: .contentLength).flatMap(Int.init), length > maxBytes {
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
        let (head, bytes) = problem.parts()
        return Response(status: head.status, headers: head.headerFields, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
