import CoreMetrics
import Ferry
import FerryRedis
import Logging
import ServiceLifecycle

/// Samples a queue's backlog into gauges every `interval`, so `/metrics` answers without
/// touching Redis: `ferry_stream_length{queue}`, `ferry_dead_letters{queue}`,
/// `ferry_ordering_keys_blocked{queue}`, per group `ferry_group_lag`, `ferry_group_pending`,
/// `ferry_oldest_pending_age_seconds`, and per priority lane (a queue with lanes)
/// `ferry_priority_depth` and `ferry_priority_oldest_age_seconds`, and `ferry_workflows{queue,state}`.
public struct QueueSampler: Sendable {
    /// The queue whose backlog is sampled.
    public let queue: QueueName
    /// How often: the gauges are this stale at most.
    public let interval: Duration
    private let redis: RedisConfiguration
    private let logger: Logger

    /// Samples on a connection of its own, dialled from `redis`.
    public init(queue: QueueName, redis: RedisConfiguration, interval: Duration = .seconds(15), logger: Logger) {
        self.queue = queue
        self.redis = redis
        self.interval = interval
        self.logger = logger
    }

    /// Samples until the task is cancelled or a `ServiceGroup` shuts down gracefully. A failed
    /// sample is logged and tried again next time.
    public func run() async {
        var configuration = redis
        configuration.clientName = "ferry-worker-sampler"
        let inspector = QueueInspector(connection: RedisConnection(configuration: configuration, logger: logger))
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                if let report = try await inspector.report(queue) { record(report) }
            } catch {
                logger.debug("queue sample failed", metadata: ["ferry.error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }

    func record(_ report: QueueInspector.QueueReport) {
        let queue = [("queue", report.queue)]
        Gauge(label: "ferry_stream_length", dimensions: queue).record(report.length)
        Gauge(label: "ferry_dead_letters", dimensions: queue).record(report.deadLetters)
        Gauge(label: "ferry_ordering_keys_blocked", dimensions: queue).record(report.blockedOrderingKeys.count)
        for group in report.groups {
            let dimensions = queue + [("group", group.name)]
            // When Redis cannot tell (a group placed mid-stream by another tool) and more are left
            // than the inspector counts: at least that many, not the last figure it had.
            Gauge(label: "ferry_group_lag", dimensions: dimensions).record(group.lag ?? QueueInspector.lagCountLimit)
            Gauge(label: "ferry_group_pending", dimensions: dimensions).record(group.pending)
            Gauge(label: "ferry_oldest_pending_age_seconds", dimensions: dimensions)
                .record(Double(group.oldestPendingAgeMilliseconds ?? 0) / 1000)
        }
        for state in Workflows.State.allCases {
            Gauge(label: "ferry_workflows", dimensions: queue + [("state", state.rawValue)])
                .record(report.workflows[state.rawValue] ?? 0)
        }
        for lane in report.priorities {
            let dimensions = queue + [("priority", lane.priority)]
            Gauge(label: "ferry_priority_depth", dimensions: dimensions).record(lane.depth)
            Gauge(label: "ferry_priority_oldest_age_seconds", dimensions: dimensions)
                .record(Double(lane.oldestAgeMilliseconds ?? 0) / 1000)
        }
    }
}

/// The sampler is a swift-service-lifecycle `Service`: it stops at the group's graceful shutdown.
extension QueueSampler: Service {}
