import ArgumentParser
import Dispatch
import Ferry
import FerryExec
import FerryRedis
import Foundation
import Logging
import Synchronization

/// `ferry worker`: consume a queue with a shell command as the handler.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Consume a queue, running each job with a shell command.",
        discussion: """
            Every option can also be set from the environment (FERRY_QUEUE, FERRY_GROUP, FERRY_CONSUMER, \
            FERRY_CONCURRENCY, FERRY_LEASE, FERRY_MAX_ATTEMPTS, FERRY_MIN_BACKOFF, FERRY_MAX_BACKOFF, \
            FERRY_JOB_TIMEOUT, FERRY_SHUTDOWN_GRACE, FERRY_IDEMPOTENCY_TTL, FERRY_EXEC); a flag wins over the environment. \
            Durations are written 500ms, 30s, 5m or 1h. SIGTERM or SIGINT stops reading, lets running \
            jobs finish within the shutdown grace, and exits 0; a second signal cancels them at once.

            The command runs as /bin/sh -c CMD with the job's data on stdin. Exit 0 acknowledges the job, \
            75 retries it after the backoff, 65 dead-letters it at once, anything else retries it until \
            the maximum attempts. Log lines are JSON on stdout.
            """)

    @Argument(help: "The queue name (or FERRY_QUEUE).")
    var queue: String?

    @Option(help: "Consumer group, the subscription (default workers).")
    var group: String?

    @Option(help: "Consumer name (default host name and pid).")
    var consumer: String?

    @Option(help: "Jobs run at once, 1 to 1000 (default 16).")
    var concurrency: String?

    @Option(help: "Idle time after which another worker reclaims a job (default 30s).")
    var lease: String?

    @Option(help: "Deliveries before a failing job is dead-lettered (default 5).")
    var maxAttempts: String?

    @Option(help: "First retry delay (default 1s).")
    var minBackoff: String?

    @Option(help: "Largest retry delay (default 60s).")
    var maxBackoff: String?

    @Option(help: "Kill a job's process group after this long and count a failure (default none).")
    var jobTimeout: String?

    @Option(help: "How long running jobs may take to finish after SIGTERM (default 25s).")
    var shutdownGrace: String?

    @Option(help: "How long a completed idempotency key is remembered (default 24h).")
    var idempotencyTTL: String?

    @Option(
        name: .customLong("exec"), help: ArgumentHelp("The handler: a shell command run for every job.", valueName: "command"))
    var command: String?

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        let settings = Settings()
        guard let queueText = queue ?? settings.environment["FERRY_QUEUE"], !queueText.isEmpty else {
            throw InputError("name the queue: ferry worker QUEUE, or set FERRY_QUEUE")
        }
        let queueName = try QueueName(queueText)
        let command = settings.string(command, variable: "FERRY_EXEC", default: "")
        if command.isEmpty { throw InputError("give the handler command with --exec CMD or FERRY_EXEC") }

        var configuration = Worker.Configuration()
        configuration.group = settings.string(group, variable: "FERRY_GROUP", default: configuration.group)
        configuration.consumer = settings.string(consumer, variable: "FERRY_CONSUMER", default: configuration.consumer)
        configuration.concurrency = try settings.integer(
            concurrency, option: "concurrency", variable: "FERRY_CONCURRENCY", default: configuration.concurrency)
        configuration.lease = try settings.duration(lease, option: "lease", variable: "FERRY_LEASE", default: configuration.lease)
        configuration.retry.maxAttempts = try settings.integer(
            maxAttempts, option: "max-attempts", variable: "FERRY_MAX_ATTEMPTS", default: configuration.retry.maxAttempts)
        configuration.retry.minimumBackoff = try settings.duration(
            minBackoff, option: "min-backoff", variable: "FERRY_MIN_BACKOFF", default: configuration.retry.minimumBackoff)
        configuration.retry.maximumBackoff = try settings.duration(
            maxBackoff, option: "max-backoff", variable: "FERRY_MAX_BACKOFF", default: configuration.retry.maximumBackoff)
        configuration.jobTimeout = try settings.optionalDuration(jobTimeout, option: "job-timeout", variable: "FERRY_JOB_TIMEOUT")
        configuration.shutdownGrace = try settings.duration(
            shutdownGrace, option: "shutdown-grace", variable: "FERRY_SHUTDOWN_GRACE", default: configuration.shutdownGrace)
        configuration.idempotencyTTL = try settings.duration(
            idempotencyTTL, option: "idempotency-ttl", variable: "FERRY_IDEMPOTENCY_TTL", default: configuration.idempotencyTTL)
        try configuration.validate()

        LogOutput.json.bootstrap()
        let redisConfiguration = try RedisConfiguration(url: redis.resolvedURL)
        try await RedisConnection(configuration: redisConfiguration).connect()
        let worker = Worker(
            queue: queueName, redis: redisConfiguration, handlers: [:], configuration: configuration,
            fallbackHandler: CommandJobHandler(command: command))
        let running = Task { try await worker.run() }
        let received = Mutex(0)
        let signals = [SIGTERM, SIGINT].map { signalNumber in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                let count = received.withLock { count in
                    count += 1
                    return count
                }
                if count == 1 { worker.stop() } else { running.cancel() }
            }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        try await running.value
    }
}
