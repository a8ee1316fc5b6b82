import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry ordering`: ordering keys stopped by a dead-lettered job.
struct OrderingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ordering", abstract: "List the ordering keys a dead letter stopped, and let one go on.",
        discussion: """
            Jobs with the same ordering_key run one at a time, in publish order, in each group. When one is \
            dead-lettered, a worker with --ordering-on-dead block (the default) stops the key in that group: its \
            next jobs wait until ferry ordering resume. Redrive or inspect the dead letter first (ferry dlq show).
            """,
        subcommands: [OrderingListCommand.self, OrderingResumeCommand.self])
}

/// `ferry ordering list QUEUE`.
struct OrderingListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Show the stopped ordering keys.")

    @Argument(help: "The queue name.")
    var queue: String

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let ordering = QueueOrdering(
            queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-ordering"))
        let blocked = try await ordering.blocked()
        if blocked.isEmpty {
            print("\(queue): no ordering key is blocked")
            return
        }
        var rows = [["GROUP", "KEY", "DEAD ENTRY", "BLOCKED SINCE", "WAITING"]]
        for key in blocked {
            rows.append([key.group, key.key, key.deadEntryID ?? "-", key.since?.rfc3339 ?? "-", "\(key.waiting)"])
        }
        printTable(rows)
    }
}

/// `ferry ordering resume QUEUE KEY [--group G]`.
struct OrderingResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume", abstract: "Let a stopped ordering key go on with its next job.")

    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The ordering key.")
    var key: String

    @Option(help: "The consumer group it is stopped in.")
    var group = "workers"

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let ordering = QueueOrdering(
            queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-ordering"))
        guard let dead = try await ordering.resume(key: key, group: group) else {
            throw FerryError(
                .notFound,
                "ordering key \(key) is not blocked in group \(group) of \(queue); ferry ordering list \(queue) shows the blocked ones"
            )
        }
        print("\(queue): ordering key \(key) goes on in group \(group) (it had stopped at dead letter of entry \(dead))")
    }
}
