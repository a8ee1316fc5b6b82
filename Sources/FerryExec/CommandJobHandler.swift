import Ferry
import Foundation
import Subprocess
import SystemPackage

/// Runs each job as a shell command, so handlers can be written in any language: `ferry worker
/// QUEUE --exec CMD`.
///
/// The command runs as `/bin/sh -c CMD` in a process group of its own, so a job timeout or a
/// cancelled job kills everything it started. The job's `data` arrives on standard input, its
/// metadata in the environment (see ``environment(for:)``). The exit status decides the outcome,
/// following sysexits.h:
///
/// | exit status | outcome |
/// | --- | --- |
/// | 0 | acknowledged |
/// | 75 (`EX_TEMPFAIL`) | retried after the backoff; a last standard error line `retry-after: 30s` waits at least that long; `snooze: 30s` runs it again then without spending an attempt |
/// | 65 (`EX_DATAERR`) | dead-lettered at once |
/// | anything else, or killed by a signal | retried until the maximum attempts |
///
/// The last 4 KiB of standard error become the failure's message (`dead_letter.error`, the
/// job's `last_error`); standard output goes to the worker's standard error, keeping the
/// worker's standard output for its own log lines. Progress, and a workflow step's result and
/// decision, go through files in `FERRY_OUTPUT_DIR` (``CommandOutput``).
public struct CommandJobHandler: JobHandler {
    /// The exit status that asks for a retry (`EX_TEMPFAIL`).
    public static let retryStatus: Int32 = 75
    /// The exit status that dead-letters the job at once (`EX_DATAERR`).
    public static let deadLetterStatus: Int32 = 65
    static let stderrTailBytes = 4096

    /// Run with `/bin/sh -c`, so pipes and arguments work as in a shell.
    public let command: String
    /// The `ferry-exec-guard` program that runs each command and kills its process group when
    /// the worker dies (even by `kill -9`); nil runs the command directly, and a handler whose
    /// worker is killed then runs on. `ferry worker` always sets it.
    public let guardExecutable: String?
    /// The names of the worker's environment variables a command also gets, besides the
    /// ``baseEnvironmentNames`` and the job's `FERRY_*` variables (`ferry worker --pass-env`).
    public let passedEnvironment: [String]

    /// The worker's variables every command gets: what a shell and common tools need to run, and
    /// none of the worker's secrets (`FERRY_REDIS_URL` carries the Redis password).
    public static let baseEnvironmentNames = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"]

    /// `command` runs once per job; nothing is started here.
    public init(command: String, guardExecutable: String? = nil, passedEnvironment: [String] = []) {
        self.command = command
        self.guardExecutable = guardExecutable
        self.passedEnvironment = passedEnvironment
    }

    public func handle(_ job: Job) async throws {
        var options = PlatformOptions()
        options.processGroupID = 0  // a new group led by the child: killable as a whole
        // Cancelled around the spawn, the group may not exist yet (the child sets it between fork
        // and exec), so a group kill alone can miss: the command is killed by pid too, which
        // stops it before it starts anything. A fresh CI machine once saw a grandchild outlive a
        // timeout this way. Subprocess's own teardown does the same.
        // The group first: a step is skipped once the command itself is gone.
        options.teardownSequence = [
            .send(signal: .kill, toProcessGroup: true, allowedDurationToNextStep: .zero),
            .send(signal: .kill, toProcessGroup: false, allowedDurationToNextStep: .milliseconds(200)),
        ]
        let output = try CommandOutput.make(for: job)
        defer { output.remove() }
        let environment = Environment.custom(
            Dictionary(
                uniqueKeysWithValues: Self.environment(for: job, passing: passedEnvironment).merging(output.environment(for: job))
                {
                    $1
                }.map {
                    (Environment.Key(stringLiteral: $0.key), $0.value)
                }))
        let (executable, arguments): (String, [String]) =
            if let guardExecutable {
                (guardExecutable, [String(getpid()), "/bin/sh", "-c", command])
            } else {
                ("/bin/sh", ["-c", command])
            }
        // The payload goes in through an unlinked temporary file, not a pipe: a command that never
        // reads its standard input must not make the worker's write fail (EPIPE).
        let payload = try Self.payloadFile(job.data)
        let result = try await Subprocess.run(
            .path(FilePath(executable)), arguments: Arguments(arguments), environment: environment, platformOptions: options,
            input: .fileDescriptor(payload, closeAfterSpawningProcess: true), output: .currentStandardError, error: .sequence
        ) { execution in
            try await withTaskCancellationHandler {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    // The command's progress file, followed while it runs.
                    group.addTask { await Self.follow(output, of: job) }
                    defer { group.cancelAll() }
                    var tail: [UInt8] = []
                    for try await buffer in execution.standardError {
                        buffer.withUnsafeBytes { tail.append(contentsOf: $0) }
                        if tail.count > 2 * Self.stderrTailBytes { tail.removeFirst(tail.count - Self.stderrTailBytes) }
                    }
                    return Array(tail.suffix(Self.stderrTailBytes))
                }
            } onCancel: {
                try? execution.send(signal: .kill, toProcessGroup: true)
                try? execution.send(signal: .kill, toProcessGroup: false)
            }
        }
        try Task.checkCancellation()
        if let progress = output.progress() { await job.reportProgress(progress.percent, stage: progress.stage) }
        let stderrTail = String(decoding: result.closureResult, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        switch result.terminationStatus {
        case .exited(0):
            if job.workflow != nil {
                if let result = output.result() { try job.setResult(result) }
                if let decision = try output.decision() { throw decision }
            }
            return
        case .exited(Self.deadLetterStatus):
            throw PermanentJobError(stderrTail.isEmpty ? "the command exited with 65 (EX_DATAERR)" : stderrTail)
        case .exited(Self.retryStatus):
            throw Self.temporaryFailure(standardError: stderrTail)
        case .exited(let status):
            throw CommandFailure(exitStatus: status, standardError: stderrTail)
        case .signaled(let signal):
            throw CommandFailure(signal: signal, standardError: stderrTail)
        }
    }

    /// What exit 75 asks for, read from the last line of standard error: `snooze: <duration>`
    /// (a ``JobSnooze``: again after that long, no attempt spent), `retry-after: <duration>` (a
    /// retry no earlier than that), or neither (a retry after the backoff). Durations are written
    /// as Ferry's flags take them (`500ms`, `30s`, `5m`, `1h`); a line that does not parse is just
    /// part of the message.
    static func temporaryFailure(standardError: String) -> any Error {
        let lines = standardError.split(separator: "\n", omittingEmptySubsequences: false)
        let last = lines.last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        let before = lines.dropLast().joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
        for (prefix, isSnooze) in [("snooze:", true), ("retry-after:", false)] where last.lowercased().hasPrefix(prefix) {
            guard let delay = Duration(ferryText: last.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces))
            else { continue }
            if isSnooze {
                return JobSnooze(for: delay, reason: before.isEmpty ? "the command asked to run again later" : before)
            }
            var failure = CommandFailure(exitStatus: retryStatus, standardError: before)
            failure.retryAfter = delay
            return failure
        }
        return CommandFailure(exitStatus: retryStatus, standardError: standardError)
    }

    /// Reports the progress the command writes to its output directory's `progress` file, each
    /// time it changes, about twice a second, until cancelled.
    static func follow(_ output: CommandOutput, of job: Job) async {
        var reported: (percent: Int, stage: String?)?
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            guard let progress = output.progress(), progress.percent != reported?.percent || progress.stage != reported?.stage
            else { continue }
            reported = progress
            await job.reportProgress(progress.percent, stage: progress.stage)
        }
    }

    /// Writes the payload to a temporary file that is unlinked at once and rewinds it, so the
    /// child reads it as standard input and it vanishes when the descriptor closes.
    static func payloadFile(_ data: [UInt8]) throws -> FileDescriptor {
        let directory = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(directory)/ferry-payload-XXXXXX".utf8CString)
        let raw = mkstemp(&template)
        guard raw >= 0 else {
            throw CommandFailure(
                notStarted: "cannot create a payload file in \(directory): errno \(errno)")
        }
        unlink(template)
        let descriptor = FileDescriptor(rawValue: raw)
        do {
            _ = try descriptor.writeAll(data)
            _ = try descriptor.seek(offset: 0, from: .start)
        } catch {
            try? descriptor.close()
            throw CommandFailure(notStarted: "cannot write the payload file: \(error)")
        }
        return descriptor
    }

    /// What the command finds in its environment: the worker's variables named in
    /// ``baseEnvironmentNames`` and `passing` (those it has), and the job's variables:
    /// `FERRY_JOB_ID`, `FERRY_JOB_TYPE`, `FERRY_QUEUE`, `FERRY_GROUP`, `FERRY_DELIVERY_ATTEMPT`,
    /// `FERRY_JOB_KEY` (its `key`, when it has one), `FERRY_ATTRIBUTES` (a JSON object) and one `FERRY_ATTR_<NAME>` per attribute, the name
    /// upper-cased with every character other than A-Z, 0-9 and `_` turned into `_`; and
    /// `TRACEPARENT` when the job carries one.
    public static func environment(
        for job: Job, passing: [String] = [], from worker: [String: String] = ProcessInfo.processInfo.environment
    ) -> [String: String] {
        var environment: [String: String] = [:]
        for name in baseEnvironmentNames + passing {
            if let value = worker[name] { environment[name] = value }
        }
        environment.merge([
            "FERRY_JOB_ID": job.id, "FERRY_JOB_TYPE": job.type, "FERRY_QUEUE": job.queue.rawValue,
            "FERRY_GROUP": job.group, "FERRY_DELIVERY_ATTEMPT": String(job.deliveryAttempt),
        ]) { $1 }
        if let key = job.message.key { environment["FERRY_JOB_KEY"] = key }
        // The W3C name, which OpenTelemetry SDKs read to continue the producer's trace.
        if let traceparent = job.message.traceparent { environment["TRACEPARENT"] = traceparent }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        environment["FERRY_ATTRIBUTES"] =
            (try? encoder.encode(job.attributes)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        for (name, value) in job.attributes {
            let variable = name.uppercased().unicodeScalars.map { scalar -> String in
                switch scalar {
                case "A"..."Z", "0"..."9", "_": return String(scalar)
                default: return "_"
                }
            }.joined()
            environment["FERRY_ATTR_" + variable] = value
        }
        return environment
    }
}

/// A command that failed in a way worth retrying: how it ended and the tail of its standard error.
///
/// Its ``errorClass`` (`exit_1`, `signal_SIGKILL`, `not_started`) is what logs, the job status
/// and dead letters report, so dashboards can group failures by how the command ended.
public struct CommandFailure: RetryableJobError, Sendable, CustomStringConvertible {
    /// How the command ended: `exited with 1`, `was killed by signal 9 (SIGKILL)`.
    public var status: String
    /// Short and stable: `exit_<status>`, `signal_<name>`, or `not_started`.
    public var errorClass: String
    /// The end of its standard error (at most 4 KiB): usually where the reason is.
    public var standardError: String
    /// The earliest next attempt the command asked for (exit 75 with `retry-after: 30s` last on
    /// standard error); nil leaves it to the backoff.
    public var retryAfter: Duration?

    /// The command exited with `exitStatus`.
    public init(exitStatus: Int32, standardError: String) {
        status = "exited with \(exitStatus)"
        errorClass = "exit_\(exitStatus)"
        self.standardError = standardError
    }

    /// The command was killed by `signal`.
    public init(signal: Int32, standardError: String) {
        let name = Self.signalName(signal)
        status = "was killed by signal \(signal) (\(name))"
        errorClass = "signal_\(name)"
        self.standardError = standardError
    }

    /// The command could not be started; `reason` says why.
    public init(notStarted reason: String) {
        status = "could not start"
        errorClass = "not_started"
        standardError = reason
    }

    public var description: String {
        standardError.isEmpty ? "the command \(status)" : "the command \(status): \(standardError)"
    }

    /// `SIGKILL` for 9: the names of the signals a handler dies of in practice, else `SIG<n>`.
    static func signalName(_ signal: Int32) -> String {
        let names: [Int32: String] = [
            SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGTRAP: "SIGTRAP",
            SIGABRT: "SIGABRT", SIGBUS: "SIGBUS", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGUSR1: "SIGUSR1",
            SIGSEGV: "SIGSEGV", SIGUSR2: "SIGUSR2", SIGPIPE: "SIGPIPE", SIGALRM: "SIGALRM", SIGTERM: "SIGTERM",
            SIGXCPU: "SIGXCPU", SIGXFSZ: "SIGXFSZ", SIGSYS: "SIGSYS",
        ]
        return names[signal] ?? "SIG\(signal)"
    }
}
