import Ferry
import Foundation

/// The directory an `--exec` command shares with its worker (`FERRY_OUTPUT_DIR`), so a handler
/// in any language reports what a Swift handler does through ``Job``:
///
/// | file | written by | meaning |
/// | --- | --- | --- |
/// | `progress` | the command, any time | lines `<percent> [stage]`: the last one is the job's progress (read about twice a second, and at the end) |
/// | `result` | the command | a workflow step's result (at most 16 MiB; over 64 KiB it is kept by reference), passed to the steps after it |
/// | `decision` | the command | a workflow step's decision, one line: `proceed`, `block <reason>`, `retry <step> [<duration>]`, `fail <reason>` |
/// | `results/<step>` | the worker, before it runs | the results the workflow's earlier steps kept (`FERRY_RESULTS_DIR`) |
///
/// A workflow step also gets `FERRY_WORKFLOW_ID` and `FERRY_WORKFLOW_STEP`. The directory is
/// removed when the command ends.
struct CommandOutput {
    /// The directory, made for one run.
    let path: String

    /// Makes the directory for `job`'s run, with its workflow's results when it is a step.
    static func make(for job: Job) throws -> CommandOutput {
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/ferry-output-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else {
            throw CommandFailure(notStarted: "cannot create an output directory in \(base): errno \(errno)")
        }
        let output = CommandOutput(
            path: String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        if let workflow = job.workflow {
            let results = output.path + "/results"
            try FileManager.default.createDirectory(atPath: results, withIntermediateDirectories: false)
            for (step, result) in workflow.results {
                _ = FileManager.default.createFile(atPath: results + "/" + step, contents: Data(result))
            }
        }
        return output
    }

    /// The command's variables for it.
    func environment(for job: Job) -> [String: String] {
        var environment = ["FERRY_OUTPUT_DIR": path]
        if let workflow = job.workflow {
            environment["FERRY_WORKFLOW_ID"] = workflow.id
            environment["FERRY_WORKFLOW_STEP"] = workflow.step
            environment["FERRY_RESULTS_DIR"] = path + "/results"
        }
        return environment
    }

    /// The last complete line of `progress`: a percent (clamped to 0-100) and an optional stage.
    func progress() -> (percent: Int, stage: String?)? {
        guard let text = try? String(contentsOfFile: path + "/progress", encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        // A line still being written has no newline yet: only complete ones count.
        let complete = text.hasSuffix("\n") ? lines : lines.dropLast()
        guard let last = complete.last else { return nil }
        let words = last.split(separator: " ", maxSplits: 1)
        guard let first = words.first, let percent = Int(first) else { return nil }
        return (min(max(percent, 0), 100), words.count > 1 ? String(words[1]) : nil)
    }

    /// What the command wrote to `result`, if anything.
    func result() -> [UInt8]? {
        FileManager.default.contents(atPath: path + "/result").map { Array($0) }
    }

    /// The decision the command wrote to `decision`; nil for none or `proceed`.
    ///
    /// - Throws: ``PermanentJobError`` naming a line it cannot read: the step is dead-lettered
    ///   with it rather than guessed at.
    func decision() throws -> WorkflowDecision? {
        guard let data = FileManager.default.contents(atPath: path + "/decision") else { return nil }
        let line = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let words = line.split(separator: " ", maxSplits: 1).map(String.init)
        let rest = words.count > 1 ? words[1].trimmingCharacters(in: .whitespaces) : ""
        switch words.first {
        case nil, "proceed": return nil
        case "block": return .block(reason: rest.isEmpty ? "blocked by the step's command" : rest)
        case "fail": return .fail(reason: rest.isEmpty ? "failed by the step's command" : rest)
        case "retry":
            let parts = rest.split(separator: " ").map(String.init)
            if parts.count == 1 { return .retry(step: parts[0]) }
            if parts.count == 2, let after = Duration(ferryText: parts[1]) { return .retry(step: parts[0], after: after) }
        default: break
        }
        throw PermanentJobError(
            "the decision file says \"\(line.prefix(200))\"; write proceed, block <reason>, retry <step> [<duration>] or fail <reason>"
        )
    }

    /// Removes the directory and what is in it.
    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
