import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry workflow`: start, show, list, cancel and resume a queue's workflows.
struct WorkflowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workflow", abstract: "Start and follow multi-step workflows whose steps run as the queue's jobs.",
        discussion: """
            A workflow document is JSON: {"name": "ingest", "steps": [{"name": "parse", "type": "parse-doc", \
            "max_attempts": 3, "timeout_ms": 60000, "weight": 2}, {"name": "embed", "type": "embed", "after": \
            ["parse"], "on_failure": "block"}]}. A step without "after" runs after the step before it. See \
            docs/wire-format.md, "Workflows".
            """,
        subcommands: [
            WorkflowStartCommand.self, WorkflowShowCommand.self, WorkflowListCommand.self, WorkflowCancelCommand.self,
            WorkflowResumeCommand.self, WorkflowCheckCommand.self,
        ])
}

/// The store of a command's queue, on a connection named for `ferry workflow`.
private func workflows(_ queue: String, _ redis: RedisOptions) async throws -> Workflows {
    Workflows(queue: try QueueName(queue), connection: try await redis.connect(clientName: "ferry-workflow"))
}

/// `ferry workflow start QUEUE FILE [--data D] [--id ID] [--idempotency-key K] [--group G]`.
struct WorkflowStartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start", abstract: "Start a workflow from a JSON document; prints its id.")

    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The workflow document (JSON), or - for standard input.")
    var file: String

    @Option(help: "The workflow's input: every step's job carries it as its data.")
    var data = ""

    @Option(help: "Its id (letters, digits, '.', '_', '-'); a new UUID by default.")
    var id: String?

    @Option(help: "Start it at most once per key within 24 hours; a repeat prints the first one's id.")
    var idempotencyKey: String?

    @Option(help: "The consumer group whose workers run its steps.")
    var group = "workers"

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let handle = file == "-" ? FileHandle.standardInput : FileHandle(forReadingAtPath: file)
        guard let handle else {
            throw InputError("cannot read \(file): \(String(cString: strerror(errno))); check the path and permissions")
        }
        let definition = try WorkflowDefinition(json: Array(handle.readDataToEndOfFile()))
        let receipt = try await workflows(queue, redis).start(
            definition, data: Array(data.utf8), id: id, idempotencyKey: idempotencyKey, group: group)
        print(receipt.isDuplicate ? "\(receipt.id) (already started; nothing new)" : receipt.id)
    }
}

/// `ferry workflow show QUEUE ID [--json]`.
struct WorkflowShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show a workflow: its state, progress, each step and its history.")

    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The workflow id.")
    var id: String

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let store = try await workflows(queue, redis)
        guard let status = try await store.status(id) else {
            throw FerryError(.notFound, "queue \(queue) has no workflow \(id) (never started, or expired after it ended)")
        }
        let history = try await store.history(id)
        if json {
            struct Shown: Encodable {
                let workflow: Workflows.Status
                let history: [Workflows.Event]
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(Shown(workflow: status, history: history)), as: UTF8.self))
            return
        }
        print("\(status.id) (\(status.name)): \(status.state.rawValue.uppercased()), \(status.progress)%")
        if let reason = status.reason { print("  \(reason)\(status.atStep.map { " (step \($0))" } ?? "")") }
        var rows = [["STEP", "STATE", "JOB", "RUNS", "JOB STATE", "ATTEMPTS", "PROGRESS", "LAST ERROR"]]
        for step in status.steps {
            let job = step.job ?? [:]
            rows.append([
                step.name, step.state, step.jobID ?? "-", "\(step.runs)", job["state"] ?? "-", job["attempts"] ?? "-",
                job["progress"].map { "\($0)%" + (job["stage"].map { " \($0)" } ?? "") } ?? "-",
                job["last_error"].map { String($0.prefix(60)) } ?? "-",
            ])
        }
        printTable(rows)
        print("")
        printTable(
            [["AT", "EVENT", "STEP", "DETAIL"]]
                + history.map { [Date(millisecondsSince1970: $0.at).rfc3339, $0.event, $0.step, $0.detail] })
    }
}

/// `ferry workflow list QUEUE [--state S] [--limit N]`.
struct WorkflowListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List workflows in a state, most recently moved there first.")

    @Argument(help: "The queue name.")
    var queue: String

    @Option(help: "running, blocked, succeeded, failed or cancelled.")
    var state = "running"

    @Option(help: "How many at most.")
    var limit = 100

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        guard let wanted = Workflows.State(rawValue: state) else {
            throw InputError(
                "--state \(state) is not a workflow state: use \(Workflows.State.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        let store = try await workflows(queue, redis)
        var rows = [["WORKFLOW", "NAME", "STATE", "PROGRESS", "REASON"]]
        for id in try await store.list(state: wanted, limit: limit) {
            guard let status = try await store.status(id) else { continue }
            rows.append([id, status.name, status.state.rawValue, "\(status.progress)%", status.reason ?? "-"])
        }
        printTable(rows)
    }
}

/// `ferry workflow cancel QUEUE ID`.
struct WorkflowCancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Cancel a workflow: its queued steps are cancelled, nothing after them starts.")

    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The workflow id.")
    var id: String

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        try await workflows(queue, redis).cancel(id)
        print("\(id): cancelled")
    }
}

/// `ferry workflow resume QUEUE ID [--from STEP]`.
struct WorkflowResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Resume a blocked workflow, where it stopped or from a named step (run again with every step after it).")

    @Argument(help: "The queue name.")
    var queue: String

    @Argument(help: "The workflow id.")
    var id: String

    @Option(help: "The step to run again from.")
    var from: String?

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        try await workflows(queue, redis).resume(id, from: from)
        print("\(id): running again\(from.map { " from step \($0)" } ?? "")")
    }
}

/// `ferry workflow check QUEUE`: exits 1 when a running workflow can no longer move.
struct WorkflowCheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Find running workflows that can no longer move (a step whose job is gone); exit 1 when there are any.")

    @Argument(help: "The queue name.")
    var queue: String

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let stuck = try await workflows(queue, redis).check()
        if stuck.isEmpty {
            print("\(queue): no stuck workflow")
            return
        }
        printTable([["WORKFLOW", "STEP", "WHY"]] + stuck.map { [$0.id, $0.step.isEmpty ? "-" : $0.step, $0.why] })
        throw ExitCode(1)
    }
}
