import ArgumentParser
import Ferry

/// `ferry script NAME`: prints a publish script exactly as this `ferry` runs it, shared parts
/// included, for producers in other languages to `SCRIPT LOAD` (ops/lua/README.md).
///
/// `publish_priority` needs the shared script parts (the lane logic every script that adds a
/// job uses), so it has no file of its own to copy: this command prints the one text there is.
struct ScriptCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "script",
        abstract: "Print a publish script as ferry runs it, for producers in other languages (SCRIPT LOAD).")

    @Argument(help: "publish, publish_priority or schedule.")
    var name: String

    func run() throws {
        guard let source = ProducerScripts.source(named: name) else {
            throw ValidationError(
                "there is no script \(name); ferry script prints \(ProducerScripts.all.map(\.key).joined(separator: ", "))")
        }
        print(source, terminator: "")
    }
}
