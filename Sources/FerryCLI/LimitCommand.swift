import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry limit`: global rate and concurrency limits, kept in Redis for every worker.
struct LimitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "limit", abstract: "Set, list or delete a queue's rate and concurrency limits.",
        discussion: """
            Limits are global: every worker of every group enforces them, however many run, and reads a change \
            within a second. A job over a limit does not run and does not fail: it waits (status waiting, with the \
            limit's name) without spending an attempt, and starts when it can. A running job holds a concurrency \
            slot as a lease: a crashed worker's slots free within one lease.
            """,
        subcommands: [LimitSetCommand.self, LimitListCommand.self, LimitDeleteCommand.self])
}

/// `ferry limit set QUEUE NAME --rate R [--burst N] | --concurrency N [--type T] [--per-key]`.
struct LimitSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Add or change a limit.",
        discussion: """
            --rate N/s|N/m|N/h|N/d|N/<duration> spaces starts evenly (100/s: one every 10ms); --burst B lets up to B \
            start at once after a quiet time (default 1). --concurrency N: at most N running at once. --type limits \
            only jobs of that type; --per-key limits each value of the jobs' key field apart (jobs without a key are \
            not limited by it). Jobs waiting on the limit are woken so the new setting decides for them at once.
            """)

    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The limit's name (A-Z a-z 0-9 . _ -): what the status of a waiting job names.")
    var name: String

    @Option(help: "At most this many starts per period: 100/s, 10/m, 30/d, 5/10s.")
    var rate: String?

    @Option(help: "With --rate: how many may start at once after a quiet time.")
    var burst: Int?

    @Option(help: "At most this many running at once.")
    var concurrency: Int?

    @Option(help: "Only jobs of this type (default: every type).")
    var type: String?

    @Flag(help: "Limit each value of the jobs' key field separately (\"2 running jobs per user\").")
    var perKey = false

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        guard (rate == nil) != (concurrency == nil) else {
            throw ValidationError("give one of --rate and --concurrency")
        }
        if burst != nil && rate == nil { throw ValidationError("--burst goes with --rate") }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let kind: QueueLimit.Kind
        if let rate {
            let (count, period) = try QueueLimit.parseRate(rate)
            kind = .rate(count: count, period: period, burst: burst ?? 1)
        } else {
            kind = .concurrency(concurrency ?? 0)
        }
        let limit = QueueLimit(name: name, kind: kind, type: type, perKey: perKey)
        let limits = QueueLimits(queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-limit"))
        try await limits.set(limit)
        print("\(queue): limit \(name) is \(limit.summary); workers apply it within a second")
    }
}

/// `ferry limit list QUEUE`.
struct LimitListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Show a queue's limits, with the slots held and the jobs waiting on each.")

    @Argument(help: "The queue name.")
    var queue: String

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let limits = QueueLimits(queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-limit"))
        let (found, unreadable) = try await limits.list()
        if found.isEmpty && unreadable.isEmpty {
            print("\(queue): no limits")
            return
        }
        var rows = [["NAME", "LIMIT", "RUNNING", "WAITING"]]
        for limit in found {
            let usage = try await limits.usage(of: limit)
            let holding: String
            if case .concurrency = limit.kind { holding = "\(usage.holding)" } else { holding = "-" }
            rows.append([limit.name, limit.summary, holding, "\(usage.waiting)"])
        }
        for name in unreadable { rows.append([name, "(not a limit Ferry can read: set it again)", "-", "-"]) }
        printTable(rows)
    }
}

/// `ferry limit delete QUEUE NAME`.
struct LimitDeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Remove a limit; the jobs waiting on it start as they can.")

    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The limit's name.")
    var name: String

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let limits = QueueLimits(queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-limit"))
        guard try await limits.delete(name: name) else {
            throw FerryError(.notFound, "\(queue) has no limit named \(name); ferry limit list \(queue) shows its limits")
        }
        print("\(queue): limit \(name) deleted")
    }
}
