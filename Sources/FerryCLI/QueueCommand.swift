import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry queue`: settings of a whole queue, kept in Redis for every worker.
struct QueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue", abstract: "Pause or resume a queue's workers, bound its depth, or turn its events on.",
        subcommands: [QueueSetCommand.self, QueuePauseCommand.self, QueueResumeCommand.self, QueueEventsCommand.self])
}

/// `ferry queue events QUEUE on|off|status`.
struct QueueEventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Turn the queue's event stream on or off, or say whether it is on.",
        discussion: """
            On, every change of a job's state is appended to ferry:{Q}:events (capped at about 10,000) by the \
            script that makes it: what ferry serve's GET /v1/queues/QUEUE/events streams. Costs Redis one XADD a \
            change; off (the default) costs nothing. Off deletes the events kept.
            """)

    /// What to do.
    enum Action: String, ExpressibleByArgument, CaseIterable {
        case on, off, status
    }

    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "on, off or status.")
    var action: Action = .status

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let events = QueueEvents(queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-queue"))
        switch action {
        case .on: print("\(queue): events \(try await events.enable() ? "on" : "were on already")")
        case .off: print("\(queue): events \(try await events.disable() ? "off" : "were off already")")
        case .status: print("\(queue): events \(try await events.isEnabled() ? "on" : "off")")
        }
    }
}

/// `QUEUE [--group G]`: what `ferry queue pause|resume` act on.
struct QueueTarget: ParsableArguments {
    @Argument(help: "The queue name.")
    var queue: String

    @Option(help: "Only this consumer group (default: every group).")
    var group: String?

    /// `group workers` or `every group`, for messages.
    var what: String { group.map { "group \($0)" } ?? "every group" }
}

/// `ferry queue pause QUEUE [--group G]`.
struct QueuePauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Stop the workers starting jobs; running ones finish, publishing goes on.",
        discussion: """
            Stored in Redis (ferry:{Q}:paused): every worker of the queue (or of --group) stops taking jobs within \
            a quarter second, and so does one started while the pause lasts. With --wait, returns once every live \
            worker has confirmed it starts nothing new (exits 1, naming the others, after --wait-timeout): for a \
            script that goes on to a migration or a deploy. ferry inspect shows the pause, and /metrics as \
            ferry_queue_paused.
            """)

    @OptionGroup var target: QueueTarget
    @Flag(help: "Wait until every live worker confirms it starts nothing new.")
    var wait = false
    @Option(help: "How long --wait waits (such as 30s).")
    var waitTimeout = "30s"
    @OptionGroup var redis: RedisOptions

    func validate() throws {
        guard Duration(ferryText: waitTimeout) != nil else {
            throw ValidationError("--wait-timeout \(waitTimeout) is not a duration such as 30s or 2m")
        }
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let pause = QueuePause(queue: try QueueName(target.queue), connection: try await redis.connect(clientName: "ferry-queue"))
        let changed = try await pause.pause(group: target.group)
        print(
            "\(target.queue): \(target.what) \(changed ? "paused" : "was paused already"); ferry queue resume \(target.queue) goes on"
        )
        guard wait else { return }
        let confirmation = try await pause.waitUntilConfirmed(
            group: target.group, timeout: Duration(ferryText: waitTimeout) ?? .seconds(30))
        guard confirmation.unconfirmed.isEmpty else {
            throw FerryError(
                .invalidInput,
                "\(confirmation.unconfirmed.count) live worker(s) did not confirm the pause within \(waitTimeout) and may still start a job: \(confirmation.unconfirmed.joined(separator: ", "))"
            )
        }
        print("\(confirmation.confirmed.count) live worker(s) confirmed: no new job starts")
    }
}

/// `ferry queue resume QUEUE [--group G]`.
struct QueueResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume", abstract: "Let the workers start jobs again.",
        discussion:
            "Without --group, lifts the pause of every group; a group paused on its own stays paused until resumed with --group.")

    @OptionGroup var target: QueueTarget
    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let pause = QueuePause(queue: try QueueName(target.queue), connection: try await redis.connect(clientName: "ferry-queue"))
        let changed = try await pause.resume(group: target.group)
        let still = try await pause.paused().keys.sorted()
        var message = "\(target.queue): \(target.what) \(changed ? "resumed" : "was not paused")"
        if !still.isEmpty {
            message +=
                "; still paused: "
                + still.map { $0 == QueuePause.allGroups ? "every group" : "group \($0)" }.joined(separator: ", ")
        }
        print(message)
    }
}

/// `ferry queue set QUEUE [--max-depth N|none] [--max-pending-per-key N|none]`.
struct QueueSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract:
            "Bound a queue's depth, or each key's unfinished jobs: publishing past it is refused (exit 4), nothing written.",
        discussion: """
            The depth is the backlog of the slowest consumer group: jobs it has not read, has not acknowledged, or \
            waits to retry (the stream's length before any group exists). A key's unfinished jobs are those \
            published with that key field (ferry publish --key) since the quota was set that some group has not \
            finished. Stored in Redis (ferry:{Q}:settings); every publisher reads them within a second. none \
            removes a bound.
            """)

    @Argument(help: "The queue name.")
    var queue: String

    @Option(parsing: .unconditional, help: "The most unfinished jobs the queue takes, or none.")
    var maxDepth: String?

    @Option(parsing: .unconditional, help: "The most unfinished jobs of one key (the jobs' key field), or none.")
    var maxPendingPerKey: String?

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        if maxDepth == nil && maxPendingPerKey == nil {
            throw ValidationError("give --max-depth, --max-pending-per-key, or both")
        }
    }

    /// A whole number of at least 1, or none (nil).
    private func count(_ text: String, _ option: String) throws -> Int? {
        if text == "none" { return nil }
        guard let parsed = Int(text), parsed >= 1 else {
            throw InputError("invalid value \"\(text)\" for --\(option): write a whole number of at least 1, or none")
        }
        return parsed
    }

    func run() async throws {
        LogOutput.text.bootstrap()
        let depth = try maxDepth.map { try count($0, "max-depth") }
        let perKey = try maxPendingPerKey.map { try count($0, "max-pending-per-key") }
        let settings = QueueSettings(queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-queue"))
        if let depth {
            try await settings.setMaxDepth(depth)
            print(
                depth.map { "\(queue): at most \($0) unfinished jobs; publishing past it is refused" }
                    ?? "\(queue): no maximum depth")
        }
        if let perKey {
            try await settings.setMaxPendingPerKey(perKey)
            print(
                perKey.map { "\(queue): at most \($0) unfinished jobs per key; publishing past it is refused" }
                    ?? "\(queue): no quota per key")
        }
    }
}
