import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `ferry inspect [QUEUE] [--json]`: queues, groups, consumers, backlog and dead letters at a glance.
struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show queues with their groups, consumers, lag, pending entries and jobs by state.",
        discussion: """
            Without a queue, every ferry:{*}:jobs stream is shown (found with SCAN). LENGTH and DLQ are the queue's \
            job and dead-letter streams; per group, LAG counts the jobs not yet delivered, PENDING those delivered \
            and not acknowledged, and RUNNING, RETRYING, SUCCEEDED (kept an hour by default) and DEAD come from the \
            index of job statuses (workers with status off count nowhere). Exits 1 when the named queue does not exist.
            """
    )

    @Argument(help: "The queue name; all queues when omitted.")
    var queue: String?

    @Flag(help: "Print JSON for scripts: durations in milliseconds.")
    var json = false

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let inspector = QueueInspector(connection: try await redis.connect(clientName: "ferry-inspect"))
        let names: [QueueName]
        if let queue { names = [try QueueName(queue)] } else { names = try await inspector.queues() }
        var reports: [QueueInspector.QueueReport] = []
        for name in names {
            if let report = try await inspector.report(name) { reports.append(report) }
        }
        if let queue, reports.isEmpty { throw QueueInspector.unknownQueue(try QueueName(queue)) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(reports), as: UTF8.self))
            return
        }
        if reports.isEmpty {
            print("no queues (no ferry:{*}:jobs streams)")
            return
        }
        var rows = [
            [
                "QUEUE", "LENGTH", "DLQ", "GROUP", "CONSUMERS", "LAG", "PENDING", "RUNNING", "RETRYING", "SUCCEEDED", "DEAD",
                "OLDEST PENDING", "DELIVERIES",
            ]
        ]
        var consumers = [["QUEUE", "GROUP", "CONSUMER", "PENDING", "IDLE"]]
        for report in reports {
            if report.groups.isEmpty {
                rows.append(
                    [report.queue, "\(report.length)", "\(report.deadLetters)"] + Array(repeating: "-", count: 10))
            }
            for group in report.groups {
                let deliveries =
                    group.deliveryCountMin.map { min in
                        let max = group.deliveryCountMax ?? min
                        return min == max ? "\(min)" : "\(min)-\(max)"
                    } ?? "-"
                let count = { (state: JobState) in "\(group.states[state.rawValue] ?? 0)" }
                rows.append([
                    report.queue, "\(report.length)", "\(report.deadLetters)", group.name, "\(group.consumers.count)",
                    group.lag.map(String.init) ?? "10000+", "\(group.pending)", count(.running), count(.retrying),
                    count(.succeeded), count(.dead),
                    group.oldestPendingAgeMilliseconds.map { durationText(milliseconds: $0) } ?? "-", deliveries,
                ])
                for consumer in group.consumers {
                    consumers.append([
                        report.queue, group.name, consumer.name, "\(consumer.pending)",
                        durationText(milliseconds: consumer.idleMilliseconds),
                    ])
                }
            }
        }
        printTable(rows)
        let lanes = reports.flatMap { report in
            report.priorities.map { lane in
                [
                    report.queue, lane.priority, "\(lane.length)", "\(lane.depth)",
                    lane.oldestAgeMilliseconds.map { durationText(milliseconds: $0) } ?? "-",
                ]
            }
        }
        if !lanes.isEmpty {
            print("")
            printTable([["QUEUE", "PRIORITY", "LENGTH", "DEPTH", "OLDEST"]] + lanes)
            print("")
        }
        for report in reports where !report.workflows.isEmpty {
            let counts = Workflows.State.allCases.compactMap { state in
                report.workflows[state.rawValue].map { "\($0) \(state.rawValue)" }
            }
            print("\(report.queue): workflows: \(counts.joined(separator: ", ")) (ferry workflow list \(report.queue) --state S)")
        }
        for report in reports where report.scheduled > 0 {
            print("\(report.queue): \(report.scheduled) scheduled, the next due at \(report.nextDueAt ?? "-")")
        }
        for report in reports where !report.paused.isEmpty {
            let what = report.paused.map { $0 == QueuePause.allGroups ? "every group" : "group \($0)" }.joined(separator: ", ")
            print("\(report.queue): PAUSED (\(what)): no new jobs start; ferry queue resume \(report.queue) goes on")
        }
        for report in reports where !report.blockedOrderingKeys.isEmpty {
            print(
                "\(report.queue): ORDERING BLOCKED (\(report.blockedOrderingKeys.joined(separator: ", "))): a dead letter stopped these keys; ferry ordering list \(report.queue), then ferry ordering resume \(report.queue) KEY --group G"
            )
        }
        if consumers.count > 1 {
            print("")
            printTable(consumers)
        }
    }
}
