import ArgumentParser
import Dispatch
import Ferry
import FerryAdmin
import FerryExec
import FerryHTTP
import FerryRedis
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

/// `ferry worker`: consume a queue with a shell command or an HTTP endpoint as the handler.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Consume a queue, running each job with a shell command or delivering it to an HTTP endpoint.",
        discussion: """
            Every option can also be set from the environment (FERRY_QUEUE, FERRY_GROUP, FERRY_CONSUMER, \
            FERRY_CONCURRENCY, FERRY_LEASE, FERRY_MAX_ATTEMPTS, FERRY_MIN_BACKOFF, FERRY_MAX_BACKOFF, \
            FERRY_JOB_TIMEOUT, FERRY_SHUTDOWN_GRACE, FERRY_IDEMPOTENCY_TTL, FERRY_PRUNE_CONSUMERS_AFTER, FERRY_RETENTION, \
            FERRY_DEAD_LETTER_RETENTION, FERRY_EXEC, FERRY_PASS_ENV (names separated by \
            commas), FERRY_PUSH, FERRY_PUSH_HEADER \
            (one header per line), FERRY_PUSH_SECRET_FILE, FERRY_PUSH_SUBSCRIPTION, FERRY_PUSH_TIMEOUT, FERRY_PUSH_FORMAT, FERRY_NOTIFY, \
            FERRY_NOTIFY_SECRET_FILE, FERRY_ADMIN_PORT, FERRY_ADMIN_HOST, FERRY_SAMPLE_INTERVAL); a flag wins over the environment. \
            Durations are written 500ms, 30s, 5m, 1h or 7d. SIGTERM or SIGINT stops reading, lets running \
            jobs finish within the shutdown grace, and exits 0; a second signal cancels them at once.

            The command runs as /bin/sh -c CMD with the job's data on stdin. Exit 0 acknowledges the job, \
            75 retries it after the backoff, 65 dead-letters it at once, anything else retries it until \
            the maximum attempts. With --push, each job is POSTed to the URL: 102, 200, 201, 202 and 204 \
            acknowledge, 400, 401, 403, 404, 410, 413 and 422 dead-letter at once, anything else retries \
            (429 and 503 no earlier than Retry-After); see docs/push.md. Log lines are JSON on stdout.
            """)

    @Argument(help: "The queue name (or FERRY_QUEUE).")
    var queue: String?

    @Option(help: "Consumer group, the subscription (default workers).")
    var group: String?

    @Option(help: "Consumer name (default host name and pid).")
    var consumer: String?

    @Option(parsing: .unconditional, help: "Jobs run at once, 1 to 1000 (default 16).")
    var concurrency: String?

    @Option(
        parsing: .unconditional,
        help: ArgumentHelp(
            "Most jobs taken beyond --concurrency to start as slots free, 0 to 10000 (default 256).",
            discussion: """
                Only as many as the worker starts in 50 ms at its recent rate (none while jobs run \
                slowly, on a queue with priority lanes, or for jobs under limits or ordering keys); \
                they go back to the group unrun at a stop or a pause. 0 takes only what can start \
                at once.
                """))
    var readAhead: String?

    @Option(parsing: .unconditional, help: "Idle time after which another worker reclaims a job (default 30s).")
    var lease: String?

    @Option(parsing: .unconditional, help: "Deliveries before a failing job is dead-lettered (default 5).")
    var maxAttempts: String?

    @Option(
        parsing: .unconditional, help: "First retry delay, the base of the backoff (default 1s; a job's backoff_ms overrides it)."
    )
    var minBackoff: String?

    @Option(parsing: .unconditional, help: "Largest retry delay (default 60s).")
    var maxBackoff: String?

    @Option(
        parsing: .unconditional,
        help: "How retry delays grow: exponential (min-backoff × factor^(attempt−1), capped) or fixed (default exponential).")
    var backoff: String?

    @Option(parsing: .unconditional, help: "The growth factor of --backoff exponential, 1 to 100 (default 2).")
    var backoffFactor: String?

    @Option(
        parsing: .unconditional,
        help: "Randomness of retry delays: equal (half to all of it), full (zero to all) or none (default equal).")
    var jitter: String?

    @Option(
        parsing: .unconditional,
        help:
            "What a dead-lettered job does to its ordering key: block (its next jobs wait for ferry ordering resume; the default) or skip."
    )
    var orderingOnDead: String?

    @Option(
        parsing: .unconditional,
        help:
            "How jobs of several priorities are taken: strict (the most urgent lane first, always; the default) or weighted (lanes read in proportion to 10 - level: high 10, normal 5, low 1, so no lane starves)."
    )
    var priorityMode: String?

    @Option(parsing: .unconditional, help: "Kill a job's process group after this long and count a failure (default none).")
    var jobTimeout: String?

    @Option(parsing: .unconditional, help: "How long running jobs may take to finish after SIGTERM (default 25s).")
    var shutdownGrace: String?

    @Option(parsing: .unconditional, help: "How long a completed idempotency key is remembered (default 24h).")
    var idempotencyTTL: String?

    @Option(
        parsing: .unconditional,
        help:
            "Delete consumers of the group idle this long and holding nothing, left by killed workers (default 1d; 0 keeps them)."
    )
    var pruneConsumersAfter: String?

    @Option(
        parsing: .unconditional,
        help: "Trim job stream entries older than this that every group has acknowledged (default 1h; 0 keeps them).")
    var retention: String?

    @Option(parsing: .unconditional, help: "Trim dead letters older than this (default 14d; 0 keeps them).")
    var deadLetterRetention: String?

    @Option(help: "Keep a succeeded job's status (ferry job status, ferry jobs list) this long (default 1h).")
    var keepSucceeded: String?

    @Option(help: "Keep the status of a job that died, was cancelled or deleted this long (default 7d).")
    var keepFailed: String?

    @Option(
        name: .customLong("exec"), help: ArgumentHelp("The handler: a shell command run for every job.", valueName: "command"))
    var command: String?

    @Option(
        help: ArgumentHelp(
            "Also give --exec handlers this variable of the worker's environment (repeatable; default only PATH, HOME, LANG, LC_ALL, TZ, TMPDIR and the job's FERRY_* variables).",
            valueName: "name"))
    var passEnv: [String] = []

    @Option(help: ArgumentHelp("The handler: POST every job to this http(s) URL.", valueName: "url"))
    var push: String?

    @Option(help: ArgumentHelp("An extra header on every push request, 'Name: value' (repeatable).", valueName: "header"))
    var pushHeader: [String] = []

    @Option(help: ArgumentHelp("Sign push requests and notifications with the secret in this file.", valueName: "file"))
    var pushSecretFile: String?

    @Option(
        help: ArgumentHelp(
            "The subscription push requests name (default projects/ferry/subscriptions/<queue>.<group>).",
            valueName: "projects/P/subscriptions/S"))
    var pushSubscription: String?

    @Option(parsing: .unconditional, help: "Per push request (default: the lease).")
    var pushTimeout: String?

    @Option(help: "wrapped (a Pub/Sub-style JSON envelope, default) or raw (data as the body, metadata in Ferry-* headers).")
    var pushFormat: String?

    @Option(help: ArgumentHelp("Statuses that dead-letter at once (default 400,401,403,404,410,413,422).", valueName: "codes"))
    var pushPermanentStatuses: String?

    @Option(
        help: ArgumentHelp(
            "POST a signed JSON event here when a job succeeds, is dead-lettered or is cancelled.", valueName: "url"))
    var notify: String?

    @Option(help: ArgumentHelp("Sign notifications with this secret instead of the push secret.", valueName: "file"))
    var notifySecretFile: String?

    @Option(
        parsing: .unconditional, help: "Serve /metrics, /healthz and /readyz on this port (default off; 0 picks a free port).")
    var adminPort: String?

    @Option(
        parsing: .unconditional,
        help: "How often queue gauges on /metrics (length, lag, pending, dead letters) are sampled from Redis (default 15s).")
    var sampleInterval: String?

    @Option(help: "The address the admin endpoints listen on (default 0.0.0.0).")
    var adminHost: String?

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        let signals = await ShutdownSignals.listen()
        let settings = Settings()
        guard let queueText = queue ?? settings.environment["FERRY_QUEUE"], !queueText.isEmpty else {
            throw InputError("name the queue: ferry worker QUEUE, or set FERRY_QUEUE")
        }
        let queueName = try QueueName(queueText)
        let command = settings.string(command, variable: "FERRY_EXEC", default: "")
        let pushURL = settings.string(push, variable: "FERRY_PUSH", default: "")
        if command.isEmpty == pushURL.isEmpty {
            throw InputError(
                command.isEmpty
                    ? "give the handler: --exec CMD (or FERRY_EXEC) for a command, or --push URL (or FERRY_PUSH) for an HTTP endpoint"
                    : "give one handler, --exec or --push, not both")
        }

        var configuration = Worker.Configuration()
        configuration.group = settings.string(group, variable: "FERRY_GROUP", default: configuration.group)
        configuration.consumer = settings.string(consumer, variable: "FERRY_CONSUMER", default: configuration.consumer)
        configuration.concurrency = try settings.integer(
            concurrency, option: "concurrency", variable: "FERRY_CONCURRENCY", default: configuration.concurrency)
        configuration.readAhead = try settings.integer(
            readAhead, option: "read-ahead", variable: "FERRY_READ_AHEAD", default: configuration.readAhead)
        configuration.lease = try settings.duration(lease, option: "lease", variable: "FERRY_LEASE", default: configuration.lease)
        configuration.retry.maxAttempts = try settings.integer(
            maxAttempts, option: "max-attempts", variable: "FERRY_MAX_ATTEMPTS", default: configuration.retry.maxAttempts)
        configuration.retry.minimumBackoff = try settings.duration(
            minBackoff, option: "min-backoff", variable: "FERRY_MIN_BACKOFF", default: configuration.retry.minimumBackoff)
        configuration.retry.maximumBackoff = try settings.duration(
            maxBackoff, option: "max-backoff", variable: "FERRY_MAX_BACKOFF", default: configuration.retry.maximumBackoff)
        configuration.retry.strategy = try backoffStrategy(settings)
        configuration.retry.jitter = try settings.choice(
            jitter, option: "jitter", variable: "FERRY_JITTER", default: configuration.retry.jitter)
        configuration.orderingOnDead = try settings.choice(
            orderingOnDead, option: "ordering-on-dead", variable: "FERRY_ORDERING_ON_DEAD",
            default: configuration.orderingOnDead)
        configuration.priorityMode = try settings.choice(
            priorityMode, option: "priority-mode", variable: "FERRY_PRIORITY_MODE", default: configuration.priorityMode)
        configuration.jobTimeout = try settings.optionalDuration(jobTimeout, option: "job-timeout", variable: "FERRY_JOB_TIMEOUT")
        configuration.shutdownGrace = try settings.duration(
            shutdownGrace, option: "shutdown-grace", variable: "FERRY_SHUTDOWN_GRACE", default: configuration.shutdownGrace)
        configuration.idempotencyTTL = try settings.duration(
            idempotencyTTL, option: "idempotency-ttl", variable: "FERRY_IDEMPOTENCY_TTL", default: configuration.idempotencyTTL)
        let prune = try settings.duration(
            pruneConsumersAfter, option: "prune-consumers-after", variable: "FERRY_PRUNE_CONSUMERS_AFTER",
            default: configuration.pruneIdleConsumersAfter ?? .zero)
        configuration.pruneIdleConsumersAfter = prune == .zero ? nil : prune
        let keepJobs = try settings.duration(
            retention, option: "retention", variable: "FERRY_RETENTION", default: configuration.retention ?? .zero)
        configuration.retention = keepJobs == .zero ? nil : keepJobs
        let keepDeadLetters = try settings.duration(
            deadLetterRetention, option: "dead-letter-retention", variable: "FERRY_DEAD_LETTER_RETENTION",
            default: configuration.deadLetterRetention ?? .zero)
        configuration.deadLetterRetention = keepDeadLetters == .zero ? nil : keepDeadLetters
        configuration.keepSucceeded = try settings.duration(
            keepSucceeded, option: "keep-succeeded", variable: "FERRY_KEEP_SUCCEEDED", default: configuration.keepSucceeded)
        configuration.keepFailed = try settings.duration(
            keepFailed, option: "keep-failed", variable: "FERRY_KEEP_FAILED", default: configuration.keepFailed)
        try configuration.validate()
        let handler: any JobHandler =
            pushURL.isEmpty
            ? CommandJobHandler(
                command: command, guardExecutable: try Self.execGuardPath(),
                passedEnvironment: passEnv.isEmpty
                    ? settings.string(nil, variable: "FERRY_PASS_ENV", default: "").split(separator: ",").map(String.init)
                    : passEnv)
            : PushJobHandler(
                endpoint: try pushEndpoint(url: pushURL, settings: settings, lease: configuration.lease),
                concurrency: configuration.concurrency)
        let notifyURL = settings.string(notify, variable: "FERRY_NOTIFY", default: "")
        var notifier: WebhookNotifier?
        if !notifyURL.isEmpty {
            try PushEndpoint.validateURL(notifyURL, purpose: "--notify")
            let secretFile = settings.string(
                notifySecretFile ?? pushSecretFile, variable: "FERRY_NOTIFY_SECRET_FILE", default: "")
            let fallbackFile = settings.string(pushSecretFile, variable: "FERRY_PUSH_SECRET_FILE", default: "")
            let secret = try readSecret(secretFile.isEmpty ? fallbackFile : secretFile)
            notifier = WebhookNotifier(url: notifyURL, secret: secret)
        }

        // Parsed as Int, then made optional: a parser returning Int? here would turn an
        // out-of-range port into "no admin port" instead of an error.
        let adminPortNumber: Int? = try settings.value(
            adminPort, option: "admin-port", variable: "FERRY_ADMIN_PORT", default: nil
        ) { text -> Int?? in
            guard let port = Int(text), (0...65535).contains(port) else { return nil }
            return .some(port)
        }

        let sampleInterval = try settings.duration(
            sampleInterval, option: "sample-interval", variable: "FERRY_SAMPLE_INTERVAL", default: .seconds(15))
        guard sampleInterval >= .milliseconds(100) else {
            throw InputError("--sample-interval must be at least 100ms: every sample reads Redis")
        }

        LogOutput.json.bootstrap()
        let registry = PrometheusCollectorRegistry()
        if adminPortNumber != nil {
            MetricsSystem.bootstrap(FerryMetricsFactory(registry: registry))
            Gauge(label: "ferry_worker_start_time_seconds").record(Date().timeIntervalSince1970)
        }
        let redisConfiguration = try redis.configuration()
        try await RedisConnection(configuration: redisConfiguration).connect()
        let worker = Worker(
            queue: queueName, redis: redisConfiguration, handlers: [:], configuration: configuration,
            fallbackHandler: handler, observer: KillAfterOutcome.wrapping(notifier))
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        let adminHost = settings.string(adminHost, variable: "FERRY_ADMIN_HOST", default: "0.0.0.0")
        if let port = adminPortNumber {
            // Listed first, shut down last: probes and metrics answer while the worker drains.
            // Their failing (a port in use, say) drains the worker and ends the command: probes
            // and metrics that silently do not exist are worse than a restart with a clear reason.
            let logger = Logger(label: "ferry.admin")
            services += [
                .init(
                    service: AdminServer(
                        host: adminHost, port: port, worker: worker, redis: redisConfiguration, registry: registry),
                    successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(
                    service: QueueSampler(queue: queueName, redis: redisConfiguration, interval: sampleInterval, logger: logger),
                    successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore),
            ]
        }
        services.append(.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup))
        var groupConfiguration = ServiceGroupConfiguration(services: services, logger: Logger(label: "ferry.services"))
        groupConfiguration.logger.logLevel = .warning
        let group = ServiceGroup(configuration: groupConfiguration)
        await signals.attach(group, worker: worker)
        do {
            try await group.run()
        } catch let error as FerryError {
            throw error
        } catch {
            let port = adminPortNumber ?? 0
            if "\(error)".contains(String(cString: strerror(EADDRINUSE))) {
                throw FerryError(
                    .invalidInput,
                    "the admin port \(port) is in use on \(adminHost): another process listens on it; pick another --admin-port (0 picks a free one)"
                )
            }
            throw FerryError(.invalidInput, "the admin endpoints could not run on port \(port): \(error)")
        }
    }

    /// `ferry-exec-guard` beside this binary: every `--exec` handler runs under it, so it dies
    /// with the worker. Refused when missing, rather than running handlers that can outlive it.
    static func execGuardPath() throws -> String {
        let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let path = binary.deletingLastPathComponent().appending(path: "ferry-exec-guard").path()
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw InputError(
                "ferry-exec-guard is not installed beside \(binary.path()): install it with ferry (swift build makes both); --exec handlers run under it so they die with the worker"
            )
        }
        return path
    }

    /// The push endpoint from flags and environment, checked before anything is read.
    private func pushEndpoint(url: String, settings: Settings, lease: Duration) throws -> PushEndpoint {
        var headers = pushHeader
        if headers.isEmpty, let fromEnvironment = settings.environment["FERRY_PUSH_HEADER"] {
            headers = fromEnvironment.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
        }
        let formatText = settings.string(pushFormat, variable: "FERRY_PUSH_FORMAT", default: "wrapped")
        guard let format = PushEndpoint.Format(rawValue: formatText) else {
            throw InputError("invalid value \"\(formatText)\" for --push-format: write wrapped or raw")
        }
        var endpoint = PushEndpoint(
            url: url, headers: headers,
            secret: try readSecret(settings.string(pushSecretFile, variable: "FERRY_PUSH_SECRET_FILE", default: "")),
            format: format,
            timeout: try settings.duration(pushTimeout, option: "push-timeout", variable: "FERRY_PUSH_TIMEOUT", default: lease))
        let subscription = settings.string(pushSubscription, variable: "FERRY_PUSH_SUBSCRIPTION", default: "")
        if !subscription.isEmpty { endpoint.subscription = subscription }
        if let pushPermanentStatuses {
            let codes = pushPermanentStatuses.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard codes.allSatisfy({ $0.map { (400..<600).contains($0) } ?? false }) else {
                throw InputError(
                    "invalid value \"\(pushPermanentStatuses)\" for --push-permanent-statuses: write status codes such as 400,410,422"
                )
            }
            endpoint.permanentStatuses = Set(codes.compactMap { $0 })
        }
        try endpoint.validate()
        return endpoint
    }

    /// The secret in `path` (a trailing newline is not part of it), or nil for no path.
    private func readSecret(_ path: String) throws -> [UInt8]? {
        if path.isEmpty { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw InputError("cannot read the secret file \(path): check that it exists and this user may read it")
        }
        var secret = Array(data)
        while let last = secret.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") { secret.removeLast() }
        guard !secret.isEmpty else { throw InputError("the secret file \(path) is empty") }
        return secret
    }
}

/// The values of `--backoff`.
enum BackoffKind: String, CaseIterable {
    case exponential, fixed
}

extension WorkerCommand {
    /// `--backoff` and `--backoff-factor` (or `FERRY_BACKOFF`, `FERRY_BACKOFF_FACTOR`) as a strategy.
    func backoffStrategy(_ settings: Settings) throws -> RetryPolicy.Backoff {
        let kind = try settings.choice(backoff, option: "backoff", variable: "FERRY_BACKOFF", default: BackoffKind.exponential)
        let factor: Double
        do {
            factor = try settings.value(backoffFactor, option: "backoff-factor", variable: "FERRY_BACKOFF_FACTOR", default: 2.0) {
                Double($0).flatMap { (1...100).contains($0) ? $0 : nil }
            }
        } catch {
            throw InputError("\(error): write a number from 1 to 100, such as 2 or 1.5")
        }
        if kind == .fixed {
            if backoffFactor != nil { throw InputError("--backoff-factor applies to --backoff exponential, not fixed") }
            return .fixed
        }
        return .exponential(factor: factor)
    }
}
