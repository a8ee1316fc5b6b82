import FerryTestSupport
import Foundation
import Synchronization
import Testing

/// The examples' tests, one after another: each starts Redis clients, `ferry serve`, workers and
/// stand-ins of its own, and together they would load a 2-core machine past the leases and
/// timeouts they check.
@Suite("Examples", .serialized)
enum Examples {}

/// One example of `examples/` as its test runs it: its `run.sh` with the settings the test
/// chooses (a queue of its own on the test Redis, free ports, the `ferry` just built), so the test
/// drives the same commands its README gives a person.
struct ExampleRun: Sendable {
    /// The example's directory.
    let directory: URL
    /// The environment every `run.sh` command gets: the test's own, and the example's settings.
    var environment: [String: String]
    /// The processes its commands started, stopped together (``stopAll()``).
    private let started = StartedProcesses()

    /// `examples/<name>` on a new queue, with `settings` besides the defaults every test sets.
    init(_ name: String, queue: String, settings: [String: String] = [:]) async throws {
        directory = repositoryRoot.appending(path: "examples/\(name)")
        environment = ProcessInfo.processInfo.environment.merging(
            [
                "FERRY": try ferryExecutable().path(), "REDIS_URL": try await TestRedis.sharedURL(), "QUEUE": queue,
                "PORT": "0", "PARSER_PORT": "0",
            ]
        ) { $1 }
        environment.merge(settings) { $1 }
    }

    var script: URL { directory.appending(path: "run.sh") }

    /// `run.sh ARGUMENTS` to its end.
    func run(_ arguments: String...) async throws -> ProcessResult {
        try await runProcess(script, arguments, environment: environment)
    }

    /// `run.sh COMMAND FILE` with `text` written to a new file, as a person hands an example a
    /// document; a command that fails throws with its output.
    func run(_ command: String, withFile text: String) async throws -> ProcessResult {
        let file = FileManager.default.temporaryDirectory.appending(path: uniqueName(command) + ".txt")
        try Data(text.utf8).write(to: file)
        let result = try await run(command, file.path())
        guard result.status == 0 else {
            throw TestSupportError("run.sh \(command) failed: \(result.standardOutput) \(result.standardError)")
        }
        return result
    }

    /// `run.sh COMMAND` as a server that says where it listens; its URL goes to the commands
    /// after it as `variable`, when given.
    mutating func serve(_ command: String, exporting variable: String? = nil) async throws -> ListeningProcess {
        let server = try await ListeningProcess(script, [command], environment: environment, name: command)
        started.add(server.process)
        if let variable { environment[variable] = server.baseURL }
        return server
    }

    /// Kills (`SIGKILL`) every process the example's commands started.
    func stopAll() {
        for process in started.all { process.signal(SIGKILL) }
    }

    /// `run.sh COMMAND` in the background (a worker), its output in files of its own.
    func start(_ command: String) throws -> ChildProcess { try startLogged(command).process }

    /// `run.sh COMMAND` in the background, and the files its standard output and error go to
    /// (two: each is opened apart, so one file would have the two overwrite each other).
    func startLogged(_ command: String) throws -> (process: ChildProcess, logs: [String]) {
        let output = FileManager.default.temporaryDirectory.appending(path: "\(command)-\(UUID().uuidString)").path()
        let process = try ChildProcess(
            script, [command], environment: environment, standardOutput: output + ".out", standardError: output + ".err")
        started.add(process)
        return (process, [output + ".out", output + ".err"])
    }

    /// The JSON objects among the lines of the files at `paths` (logs), in order per file.
    static func jsonLines(_ paths: [String]) -> [[String: Any]] {
        paths.flatMap { path in
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            }
        }
    }
}

/// The processes an example's commands started, from any task.
final class StartedProcesses: Sendable {
    private let list = Mutex<[ChildProcess]>([])
    func add(_ process: ChildProcess) { list.withLock { $0.append(process) } }
    var all: [ChildProcess] { list.withLock { $0 } }
}
