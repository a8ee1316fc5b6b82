import CoreMetrics
import Prometheus

/// The swift-metrics backend behind `/metrics`: swift-prometheus's registry, with each metric's
/// `# HELP` text and the histogram buckets Ferry's latencies need.
///
/// `PrometheusMetricsFactory` registers every metric with empty help, which `promtool check
/// metrics` rejects and a person reading a scrape cannot use; the registry itself takes help text
/// per metric family, so this factory passes it there and leaves unregistering to the stock
/// factory.
public struct FerryMetricsFactory: MetricsFactory {
    /// Where metrics are registered: what `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    private let stock: PrometheusMetricsFactory

    /// Jobs wait and run for minutes, not only milliseconds: the alert on a p95 start latency
    /// above 5 minutes needs buckets that reach that far.
    static let latencyBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(120), .seconds(300), .seconds(600),
        .seconds(1800), .seconds(3600),
    ]

    /// What each of Ferry's metrics means; any other metric gets a generic line.
    public static let help: [String: String] = [
        "ferry_jobs_total":
            "Deliveries by how they ended (completed, failed, retried, dead_lettered, skipped_duplicate, cancelled, snoozed, waited).",
        "ferry_job_duration_seconds": "How long handlers ran, by job type.",
        "ferry_step_duration_seconds": "How long the runs that ended workflow steps took, by step name.",
        "ferry_workflows": "Workflows of the queue by state (sampled every --sample-interval).",
        "ferry_job_start_latency_seconds": "From publish (published_at, else the entry ID's time) to the handler starting.",
        "ferry_jobs_in_flight": "Jobs this worker holds (running, read ahead, being acknowledged), exact at scrape time.",
        "ferry_reclaims_total": "Entries whose lease expired (a crashed or frozen worker's) that this worker claimed.",
        "ferry_lease_extensions_total": "Leases of running jobs extended, so slow jobs are not reclaimed.",
        "ferry_redis_errors_total": "Redis errors met by the worker, by error prefix (or kind when Redis sent none).",
        "ferry_entries_deleted_total":
            "Pending entries found deleted from the stream by someone else (XDEL, XTRIM) before they finished.",
        "ferry_queue_paused": "1 while the queue or this worker's group is paused (ferry queue pause), else 0.",
        "ferry_worker_start_time_seconds": "When this worker started, in seconds since the epoch.",
        "ferry_stream_length": "Entries in the queue's job stream (sampled every --sample-interval).",
        "ferry_dead_letters": "Entries in the queue's dead-letter stream (sampled every --sample-interval).",
        "ferry_ordering_keys_blocked":
            "Ordering keys a dead-lettered job stopped, waiting for ferry ordering resume (sampled every --sample-interval).",
        "ferry_priority_depth":
            "The slowest group's unfinished jobs in each priority lane (sampled every --sample-interval).",
        "ferry_priority_oldest_age_seconds":
            "Age of the oldest job some group has yet to finish, per priority lane (sampled every --sample-interval).",
        "ferry_api_requests_total": "HTTP API requests answered, by route template, method and status.",
        "ferry_api_request_errors_total":
            "HTTP API requests that ended in an error thrown past every handler, by route and status.",
        "ferry_api_request_duration_seconds": "How long HTTP API requests took to answer, by route template, method and status.",
        "ferry_api_active_requests": "HTTP API requests being answered now, by method.",
        "ferry_group_lag": "Entries not yet delivered to the group (sampled every --sample-interval).",
        "ferry_group_pending": "Entries delivered to the group and not yet acknowledged (sampled every --sample-interval).",
        "ferry_oldest_pending_age_seconds": "Idle time of the group's oldest pending entry (sampled every --sample-interval).",
    ]

    /// Registers into `registry`.
    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        var stock = PrometheusMetricsFactory(registry: registry)
        stock.durationHistogramBuckets = [
            "ferry_job_start_latency_seconds": Self.latencyBuckets, "ferry_job_duration_seconds": Self.latencyBuckets,
            "ferry_step_duration_seconds": Self.latencyBuckets,
        ]
        self.stock = stock
    }

    /// Libraries' OpenTelemetry-style names (Hummingbird's `MetricsMiddleware`) as Prometheus
    /// names in Ferry's family; dots are not valid in a Prometheus name.
    static let renamed: [String: String] = [
        "hb.requests": "ferry_api_requests_total", "hb.request.errors": "ferry_api_request_errors_total",
        "http.server.request.duration": "ferry_api_request_duration_seconds",
        "http.server.active_requests": "ferry_api_active_requests",
        "http.route": "route", "http.request.method": "method", "http.response.status_code": "status", "error.type": "status",
    ]

    /// `name` as Prometheus allows it: renamed when known, else every other character an underscore.
    static func prometheusName(_ name: String) -> String {
        if let renamed = renamed[name] { return renamed }
        return String(name.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") ? $0 : "_" })
    }

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: Self.help[label] ?? "Ferry metric \(label).")
    }

    private func named(_ label: String, _ dimensions: [(String, String)]) -> (MetricNameDescriptor, [(String, String)]) {
        (descriptor(Self.prometheusName(label)), dimensions.map { (Self.prometheusName($0.0), $0.1) })
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        let (descriptor, labels) = named(label, dimensions)
        return registry.makeCounter(descriptor: descriptor, labels: labels)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        let (descriptor, labels) = named(label, dimensions)
        return registry.makeCounter(descriptor: descriptor, labels: labels)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        let (descriptor, labels) = named(label, dimensions)
        guard aggregate else { return registry.makeGauge(descriptor: descriptor, labels: labels) }
        return registry.makeValueHistogram(
            descriptor: descriptor, labels: labels,
            buckets: stock.valueHistogramBuckets[descriptor.metricName] ?? stock.defaultValueHistogramBuckets)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        let (descriptor, labels) = named(label, dimensions)
        return registry.makeGauge(descriptor: descriptor, labels: labels)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let (descriptor, labels) = named(label, dimensions)
        return registry.makeDurationHistogram(
            descriptor: descriptor, labels: labels,
            buckets: stock.durationHistogramBuckets[descriptor.metricName] ?? stock.defaultDurationHistogramBuckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) { stock.destroyCounter(handler) }
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        stock.destroyFloatingPointCounter(handler)
    }
    public func destroyRecorder(_ handler: any RecorderHandler) { stock.destroyRecorder(handler) }
    public func destroyMeter(_ handler: any MeterHandler) { stock.destroyMeter(handler) }
    public func destroyTimer(_ handler: any TimerHandler) { stock.destroyTimer(handler) }
}
