import Ferry
import FerryRedis
import Foundation
import Hummingbird
import Logging
import Prometheus
import ServiceLifecycle

/// The worker's admin endpoints, for Prometheus and Kubernetes (`ferry worker --admin-port`):
///
/// - `GET /metrics`: every metric in Prometheus text format.
/// - `GET /healthz`: 200 while the worker's loops are turning (liveness), 503 otherwise.
/// - `GET /readyz`: 200 when Redis answers and the worker's group exists (readiness), 503
///   otherwise, with the reason in the body.
public struct AdminServer: Sendable {
    /// The address to bind: all interfaces by default, as a pod's probes need.
    public var host: String
    /// The port to bind; 0 picks a free one (``run(onListening:until:)`` reports it).
    public var port: Int
    /// The worker whose health `/healthz` reports and whose group `/readyz` checks.
    public let worker: Worker
    /// Where the worker's metrics are registered: what `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    private let redis: RedisConfiguration
    private let logger: Logger

    /// `redis` is dialled on a connection of the probe's own, so a busy worker cannot delay it.
    public init(
        host: String = "0.0.0.0", port: Int, worker: Worker, redis: RedisConfiguration, registry: PrometheusCollectorRegistry,
        logger: Logger = Logger(label: "ferry.admin")
    ) {
        self.host = host
        self.port = port
        self.worker = worker
        self.redis = redis
        self.registry = registry
        self.logger = logger
    }

    /// Serves until `stop` returns, then shuts down gracefully (open requests finish; nothing is
    /// logged as an error), or until the task is cancelled. `onListening` receives the bound port.
    public func run(
        onListening: @escaping @Sendable (Int) -> Void, until stop: @escaping @Sendable () async -> Void
    ) async throws {
        var probeConfiguration = redis
        probeConfiguration.clientName = "ferry-worker-probe"
        probeConfiguration.commandTimeout = .seconds(2)
        let readiness = ReadinessProbe(
            connection: RedisConnection(configuration: probeConfiguration, logger: logger),
            check: { [keys = worker.keys, group = worker.configuration.group] connection throws(RedisError) in
                let groups = try await connection.send(RedisCommand("XINFO", ["GROUPS", .string(keys.jobs)]))
                let names = (groups.array ?? []).compactMap { $0.array }.compactMap { info in
                    zip(info, info.dropFirst()).first { $0.0.string == "name" }?.1.string
                }
                return names.contains(group) ? nil : "the group \(group) does not exist on \(keys.jobs) yet"
            })
        let router = Router()
        let registry = self.registry
        let worker = self.worker
        router.get("/metrics") { _, _ -> Response in
            worker.recordInFlight()  // exact now, not as of the last lease extension
            return AdminResponse.metrics(registry)
        }
        router.get("/healthz") { _, _ -> Response in
            let health = worker.health
            return AdminResponse.text(
                health.isHealthy ? .ok : .serviceUnavailable, health.isHealthy ? "ok\n" : "the worker's loops are not turning\n")
        }
        router.get("/readyz") { _, _ -> Response in
            if worker.health.stopping { return AdminResponse.text(.serviceUnavailable, "stopping\n") }
            return await AdminResponse.readiness(readiness)
        }
        var quiet = logger
        quiet.logLevel = .warning
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "ferry-admin"),
            onServerRunning: { [logger] channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("admin_listening", metadata: ["ferry.admin_port": "\(port)"])
                onListening(port)
            }, logger: quiet)
        // The worker's own signal handling decides when to stop; the server only follows.
        let services = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: quiet))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            group.addTask {
                await stop()
                await services.triggerGracefulShutdown()
            }
            try await group.next()
            try await group.next()
        }
    }
}

/// The answers the worker's admin port and `ferry serve` give alike.
public enum AdminResponse {
    /// Every registered metric in Prometheus text format.
    public static func metrics(_ registry: PrometheusCollectorRegistry) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
    }

    /// `ready`, or 503 saying what is wrong.
    public static func readiness(_ probe: ReadinessProbe) async -> Response {
        if let problem = await probe.problem() { return text(.serviceUnavailable, problem + "\n") }
        return text(.ok, "ready\n")
    }

    /// A short plain-text answer.
    public static func text(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(
            status: status, headers: [.contentType: "text/plain; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Answers "is this process able to work": Redis reachable and `check` content (the worker's
/// group present, say). Results are kept for a second so that frequent probes cost Redis one
/// command per second at most.
public actor ReadinessProbe {
    private let connection: RedisConnection
    private let check: @Sendable (RedisConnection) async throws(RedisError) -> String?
    private var cached: (at: ContinuousClock.Instant, problem: String?)?

    /// `check` returns nil when ready, else what is wrong; its Redis errors become the reason.
    /// The connection should be the probe's own, so a busy process cannot delay it.
    public init(
        connection: RedisConnection,
        check: @escaping @Sendable (RedisConnection) async throws(RedisError) -> String? = ReadinessProbe.ping
    ) {
        self.connection = connection
        self.check = check
    }

    /// Ready when Redis answers.
    @Sendable public static func ping(_ connection: RedisConnection) async throws(RedisError) -> String? {
        _ = try await connection.send(RedisCommand("PING"))
        return nil
    }

    /// nil when ready; otherwise what is wrong.
    public func problem() async -> String? {
        if let cached, ContinuousClock.now - cached.at < .seconds(1) { return cached.problem }
        let problem: String?
        do throws(RedisError) {
            problem = try await check(connection)
        } catch {
            problem =
                error.prefix == nil || error.isRetryable ? "Redis is unreachable: \(error.message)" : "Redis: \(error.message)"
        }
        cached = (.now, problem)
        return problem
    }
}

/// The admin endpoints are a swift-service-lifecycle `Service`: listed before the worker in a
/// `ServiceGroup`, they are shut down after it (a group shuts down in reverse order), so probes
/// and metrics answer while the worker drains, `/readyz` saying `stopping`.
extension AdminServer: Service {
    /// Serves until the group's graceful shutdown reaches it, or the task is cancelled.
    public func run() async throws {
        try await run(onListening: { _ in }, until: { try? await gracefulShutdown() })
    }
}
