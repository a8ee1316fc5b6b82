import Foundation

// Usage: FileEmbedder [--enum NAME] OUTPUT.swift FILE...
// Writes `enum EmbeddedLuaScripts { static let <name> = "<source>" }` (or `enum NAME`), one
// constant per file, named after it (`publish.lua` -> `publish`; also for `openapi.yaml`). Raw string delimiters are chosen long enough
// that no script text can end the literal early. A file whose name starts with `_` is a part,
// no script of its own: `_<part>.lua`'s text replaces the line `-- ferry:<part>` of the scripts
// that have one (shared functions: `_prelude.lua` for every transition, `_workflow.lua` for the
// scripts that end a workflow's steps, after the prelude it builds on).
var arguments = CommandLine.arguments.dropFirst()
var enumName = "EmbeddedLuaScripts"
if arguments.first == "--enum", arguments.count > 1 {
    enumName = arguments.dropFirst().first ?? enumName
    arguments = arguments.dropFirst(2)
}
guard let outputPath = arguments.first else {
    FileHandle.standardError.write(Data("usage: FileEmbedder OUTPUT.swift SCRIPT.lua...\n".utf8))
    exit(2)
}

var generated = """
    // Generated at build time by FileEmbedder (the EmbedLuaScripts or EmbedOpenAPIDocument plugin). Do not edit.

    /// Source files of this target, embedded at build time.
    enum \(enumName) {

    """
let scripts = arguments.dropFirst().map { URL(fileURLWithPath: $0) }
var names: [String] = []
var parts: [String: String] = [:]
for url in scripts where url.lastPathComponent.hasPrefix("_") && url.pathExtension == "lua" {
    parts[String(url.deletingPathExtension().lastPathComponent.dropFirst())] = try String(contentsOf: url, encoding: .utf8)
}
for url in scripts where !url.lastPathComponent.hasPrefix("_") || url.pathExtension != "lua" {
    var source = try String(contentsOf: url, encoding: .utf8)
    for line in source.split(separator: "\n") where line.hasPrefix("-- ferry:") && !line.dropFirst(9).contains(" ") {
        let part = String(line.dropFirst("-- ferry:".count))
        guard let text = parts[part] else {
            FileHandle.standardError.write(Data("\(url.path()) asks for _\(part).lua, which is missing\n".utf8))
            exit(1)
        }
        source = source.replacingOccurrences(of: "\n\(line)\n", with: "\n" + text)
    }
    let name = url.deletingPathExtension().lastPathComponent.replacingOccurrences(of: "-", with: "_")
    names.append(name)
    var hashes = "#"
    while source.contains("\"" + hashes) { hashes += "#" }
    generated += "    static let \(name) = \(hashes)\"\"\"\n"
    for line in source.split(separator: "\n", omittingEmptySubsequences: false) {
        generated += line.isEmpty ? "\n" : "    \(line)\n"
    }
    generated += "    \"\"\"\(hashes)\n\n"
}
// Every file by its name: what a benchmark needs to name a script it finds by its SHA1.
generated += "    static let all: [(name: String, text: String)] = [\n"
generated += names.map { "        (\"\($0)\", \($0)),\n" }.joined()
generated += "    ]\n"
generated += "}\n"
try generated.write(toFile: outputPath, atomically: true, encoding: .utf8)
