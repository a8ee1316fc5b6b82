import CoreMetrics
import FerryRedis
import Foundation

/// What a worker reports through swift-metrics; a Prometheus backend serves it on `/metrics`
/// (`ferry worker --admin-port`). Without a bootstrapped backend every call is a no-op.
///
/// Names follow Prometheus conventions: `ferry_jobs_total{queue,group,type,outcome}`,
/// `ferry_job_duration_seconds`, `ferry_job_start_latency_seconds`, `ferry_jobs_in_flight`,
/// `ferry_reclaims_total`, `ferry_lease_extensions_total`, `ferry_redis_errors_total{prefix}`,
/// `ferry_entries_deleted_total`, `ferry_queue_paused`.
struct WorkerMetrics: Sendable {
    /// How one delivery of a job ended.
    enum Outcome: String {
        /// The handler succeeded and the job was acknowledged.
        case completed
        /// The handler failed (each failed attempt counts once; a retry or dead-letter follows).
        case failed
        /// A redelivery was scheduled after a failure.
        case retried
        /// The job went to the dead-letter stream.
        case deadLettered = "dead_lettered"
        /// The idempotency key had already completed: acknowledged without running.
        case skippedDuplicate = "skipped_duplicate"
        /// Cancelled on request (`ferry job cancel`).
        case cancelled
        /// The handler asked to run later (``JobSnooze``): parked, no attempt spent.
        case snoozed
        /// Over a rate or concurrency limit: parked until it could pass, no attempt spent.
        case waited
    }

    let queue: String
    let group: String
    private let inFlight: Gauge
    private let reclaims: Counter
    private let leaseExtensions: Counter
    private let startLatency: CoreMetrics.Timer

    init(queue: QueueName, group: String) {
        self.queue = queue.rawValue
        self.group = group
        let dimensions = [("queue", queue.rawValue), ("group", group)]
        inFlight = Gauge(label: "ferry_jobs_in_flight", dimensions: dimensions)
        reclaims = Counter(label: "ferry_reclaims_total", dimensions: dimensions)
        leaseExtensions = Counter(label: "ferry_lease_extensions_total", dimensions: dimensions)
        startLatency = CoreMetrics.Timer(label: "ferry_job_start_latency_seconds", dimensions: dimensions)
    }

    func job(_ outcome: Outcome, type: String?) {
        Counter(
            label: "ferry_jobs_total",
            dimensions: [("queue", queue), ("group", group), ("type", type ?? "unknown"), ("outcome", outcome.rawValue)]
        ).increment()
    }

    func handlerDuration(_ duration: Duration, type: String, step: String? = nil) {
        CoreMetrics.Timer(label: "ferry_job_duration_seconds", dimensions: [("queue", queue), ("group", group), ("type", type)])
            .recordNanoseconds(duration.nanoseconds)
        if let step {
            // A workflow step's run that ended it (succeeded or decided), by step name.
            CoreMetrics.Timer(
                label: "ferry_step_duration_seconds", dimensions: [("queue", queue), ("group", group), ("step", step)]
            )
            .recordNanoseconds(duration.nanoseconds)
        }
    }

    /// From publish (`published_at`, else the entry ID's time) to the handler starting.
    func started(publishedAt: Date) {
        startLatency.recordNanoseconds(max(Int64(Date().timeIntervalSince(publishedAt) * 1e9), 0))
    }

    func inFlight(_ count: Int) { inFlight.record(count) }
    /// `ferry_queue_paused{queue,group}`: 1 while the queue or the group is paused.
    func paused(_ paused: Bool) {
        Gauge(label: "ferry_queue_paused", dimensions: [("queue", queue), ("group", group)]).record(paused ? 1 : 0)
    }
    func entriesDeleted(_ count: Int) {
        Counter(label: "ferry_entries_deleted_total", dimensions: [("queue", queue), ("group", group)]).increment(by: count)
    }
    func reclaimed(_ count: Int) { reclaims.increment(by: count) }
    func leasesExtended(_ count: Int) { leaseExtensions.increment(by: count) }

    func redisError(_ error: RedisError) {
        Counter(
            label: "ferry_redis_errors_total",
            dimensions: [("queue", queue), ("group", group), ("prefix", error.prefix?.rawValue ?? error.kind.description)]
        ).increment()
    }
}

extension Duration {
    var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}
