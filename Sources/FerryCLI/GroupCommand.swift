import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry group create|delete|seek`: manage subscriptions (consumer groups) of a queue.
struct GroupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group", abstract: "Create, delete or seek a consumer group (a subscription).",
        subcommands: [GroupCreate.self, GroupDelete.self, GroupSeek.self])
}

/// `QUEUE GROUP`, which every `ferry group` subcommand takes.
struct GroupReference: ParsableArguments {
    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The consumer group.")
    var group: String

    /// Sets up logging and connects: what every `ferry group` subcommand does first.
    func open(_ redis: RedisOptions) async throws -> ConsumerGroups {
        LogOutput.text.bootstrap()
        return ConsumerGroups(queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-group"))
    }
}

extension GroupPosition: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }

    public static var defaultCompletionKind: CompletionKind { .default }
}

/// `ferry group create QUEUE GROUP [--to start|end|ID|TIME]`
struct GroupCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a group; it receives every job from --to on (default: the start).")

    @OptionGroup var reference: GroupReference

    @Option(help: "start (every job in the stream), end (only new jobs), an entry ID, or an RFC 3339 time.")
    var to = GroupPosition.start

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        try await reference.open(redis).create(reference.group, at: to)
        print("created group \(reference.group) on \(reference.queue); it delivers \(to.readableDescription)")
    }
}

/// `ferry group delete QUEUE GROUP [--force]`
struct GroupDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a group and its consumers.",
        discussion: "Refuses while the group has pending entries, which would be dropped unfinished, unless --force.")

    @OptionGroup var reference: GroupReference

    @Flag(help: "Delete even with pending entries.")
    var force = false

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        let pending = try await reference.open(redis).delete(reference.group, force: force)
        print(
            "deleted group \(reference.group) of \(reference.queue)\(pending > 0 ? " (\(pending) pending entries dropped)" : "")")
    }
}

/// `ferry group seek QUEUE GROUP --to start|end|ID|TIME`
struct GroupSeek: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seek", abstract: "Move where a group reads from, by time or entry ID (Pub/Sub's seek).",
        discussion: """
            Seeking back delivers again every job after the position (replay); seeking forward skips what lies \
            before it. Entries already pending stay pending and are finished or reclaimed as usual.
            """)

    @OptionGroup var reference: GroupReference

    @Option(help: "start, end, an entry ID, or an RFC 3339 time such as 2026-11-23T09:00:00Z.")
    var to: GroupPosition

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        try await reference.open(redis).seek(reference.group, to: to)
        print("group \(reference.group) of \(reference.queue) now delivers \(to.readableDescription)")
    }
}
