import ArgumentParser
import Ferry
import FerryRedis
import Foundation
import Logging

/// The `ferry` command: one thin file per subcommand over the Ferry library.
///
/// Exit codes are the same for every subcommand (``ExitStatus``), so scripts can tell a typo from
/// an outage: 0 ok, 1 not found, 2 bad usage or invalid input, 3 Redis unreachable or refusing.
@main
struct FerryTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "A job queue on Redis Streams.",
        discussion: """
            Exit codes: 0 ok, 1 not found, 2 bad usage or invalid input, 3 Redis unreachable or refusing.
            The Redis URL comes from --redis or FERRY_REDIS_URL (default \(RedisConfiguration.defaultURL)).
            """,
        version: "ferry \(FerryTool.version) (wire format v\(WireFormat.version))",
        subcommands: [
            PublishCommand.self, WorkerCommand.self, JobCommand.self, JobsCommand.self, PeekCommand.self, InspectCommand.self,
            PendingCommand.self, DeadLetterCommand.self, GroupCommand.self, QueueCommand.self, LimitCommand.self,
            OrderingCommand.self,
            CronCommand.self, ScriptCommand.self, WorkflowCommand.self, ServeCommand.self, APIKeyCommand.self,
            BenchCommand.self,
        ]
    )

    /// This release of the `ferry` command and library.
    static let version = "0.1.0"

    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withFailure: error)
        }
    }

    /// Prints the error the way a user can act on it and exits with its ``ExitStatus``.
    static func exit(withFailure error: any Error) -> Never {
        if let status = ExitStatus(error) {
            FileHandle.standardError.writeBestEffort("ferry: error: \(error)\n")
            Foundation.exit(status.rawValue)
        }
        if exitCode(for: error) == .validationFailure {
            FileHandle.standardError.writeBestEffort(fullMessage(for: error) + "\n")
            Foundation.exit(ExitStatus.usage.rawValue)
        }
        exit(withError: error)
    }
}

/// The exit codes every `ferry` subcommand shares.
enum ExitStatus: Int32 {
    case ok = 0
    case notFound = 1
    case usage = 2
    case redis = 3
    case queueFull = 4

    /// The status for a Ferry or Redis error; nil for argument-parser errors, which keep their own handling.
    init?(_ error: any Error) {
        switch error {
        case let error as FerryError:
            switch error.code {
            case .invalidInput: self = .usage
            case .notFound: self = .notFound
            case .queueFull: self = .queueFull
            default: self = .redis
            }
        case let error as RedisError:
            self = error.kind == .invalidConfiguration ? .usage : .redis
        case is InputError:
            self = .usage
        default:
            return nil
        }
    }
}

/// Where a command's log lines go; each command picks one at the start of `run()`, since
/// swift-log can be bootstrapped only once per process. The level comes from `FERRY_LOG_LEVEL`.
enum LogOutput {
    /// Plain text on standard error, warnings and above by default: keeps standard output for
    /// results such as job ids.
    case text
    /// JSON lines on standard output, info and above by default: for long-running workers.
    case json
    /// JSON lines at info and above into /dev/null: what `ferry bench worker --log-format json`
    /// measures, a production worker's logging without its output mixing with the figures.
    case jsonDiscarded

    func bootstrap() {
        let configured = ProcessInfo.processInfo.environment["FERRY_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
        switch self {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = configured ?? .warning
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { _ in JSONLogHandler(logLevel: configured ?? .info) }
        case .jsonDiscarded:
            let sink = FileHandle(forWritingAtPath: "/dev/null") ?? .standardError
            LoggingSystem.bootstrap { _ in JSONLogHandler(logLevel: .info, output: sink) }
        }
    }
}

/// Input the command line could not use (an unreadable file, a malformed `--attr`).
struct InputError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
