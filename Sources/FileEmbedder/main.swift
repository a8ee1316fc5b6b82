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
/// `static let <name> = #"""...."""#`, the raw string's delimiter long enough that no text can end it early.
func constant(_ name: String, _ text: String) -> String {
    var hashes = "#"
    while text.contains("\"" + hashes) { hashes += "#" }
    var literal = "    static let \(name) = \(hashes)\"\"\"\n"
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        literal += line.isEmpty ? "\n" : "    \(line)\n"
    }
    return literal + "    \"\"\"\(hashes)\n\n"
}

var names: [String] = []
var parts: [String: String] = [:]
for url in scripts where url.lastPathComponent.hasPrefix("_") && url.pathExtension == "lua" {
    parts[String(url.deletingPathExtension().lastPathComponent.dropFirst())] = try String(contentsOf: url, encoding: .utf8)
}

// The same scripts as one Redis function library (`FUNCTION LOAD`): the parts once, at the
// library's top level, and each script a function whose body is the script's own text. The
// parts read `KEYS` and `ARGV` as the script's globals; in the library they are upvalues each
// call sets first (with the parts' per-call state, below). `FERRY_LIBRARY_VERSION` stands for
// the version the Swift side derives from this text (its SHA1), so a library's name and its
// functions' names change with its code.
// A script's `-- ferry:function-flags <flags>` line gives its function Redis's script flags.
// A part's top-level variable declared without a value (`local names`) holds one call's state:
// in a script it starts as nil on every call, but a library's top level lives as long as the
// library, so each function sets such variables to nil again before its body runs.
let callState = parts.values.flatMap { text in
    text.split(separator: "\n").filter { line in
        line.hasPrefix("local ") && !line.hasPrefix("local function ") && !line.contains("=")
    }.flatMap { $0.dropFirst("local ".count).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
}.sorted()
var libraryFunctions: [String] = []
/// Whether `line` asks for a part (`-- ferry:prelude`), not a setting (`-- ferry:function-flags x`).
func isPartLine(_ line: Substring) -> Bool { line.hasPrefix("-- ferry:") && !line.dropFirst(9).contains(" ") }

/// The script `name` (its own text, parts not put in) as a function of the library.
func libraryFunction(_ name: String, _ text: String) -> String {
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    let flags =
        lines.first { $0.hasPrefix("-- ferry:function-flags ") }
        .map { $0.dropFirst("-- ferry:function-flags ".count).split(separator: " ").map { "'\($0)'" } } ?? []
    let body = lines.filter { !isPartLine($0) }.joined(separator: "\n")
    return """
        redis.register_function{function_name = 'ferry_\(name)_FERRY_LIBRARY_VERSION', flags = {\(flags.joined(separator: ", "))},
        callback = function(keys, args)
        KEYS, ARGV = keys, args
        \(callState.isEmpty ? "" : callState.joined(separator: ", ") + " = nil\n")\(body)
        end}

        """
}
for url in scripts where !url.lastPathComponent.hasPrefix("_") || url.pathExtension != "lua" {
    let written = try String(contentsOf: url, encoding: .utf8)
    var source = written
    for line in written.split(separator: "\n") where isPartLine(line) {
        let part = String(line.dropFirst("-- ferry:".count))
        guard let text = parts[part] else {
            FileHandle.standardError.write(Data("\(url.path()) asks for _\(part).lua, which is missing\n".utf8))
            exit(1)
        }
        source = source.replacingOccurrences(of: "\n\(line)\n", with: "\n" + text)
    }
    let name = url.deletingPathExtension().lastPathComponent.replacingOccurrences(of: "-", with: "_")
    names.append(name)
    if url.pathExtension == "lua" { libraryFunctions.append(libraryFunction(name, written)) }
    generated += constant(name, source)
}
if !parts.isEmpty {
    let library =
        "#!lua name=ferry_FERRY_LIBRARY_VERSION\n-- Ferry's scripts as one function library, generated from Scripts/*.lua.\nlocal KEYS, ARGV\n"
        + parts.sorted { ($0.key == "prelude" ? "" : $0.key) < ($1.key == "prelude" ? "" : $1.key) }.map(\.value).joined(
            separator: "\n")
        + "\n" + libraryFunctions.joined()
    generated += "    /// Every script as a function of one Redis function library; see `FerryScripts`.\n"
    generated += constant("functionLibrary", library)
}
// Every file by its name: what a benchmark needs to name a script it finds by its SHA1.
generated += "    static let all: [(name: String, text: String)] = [\n"
generated += names.map { "        (\"\($0)\", \($0)),\n" }.joined()
generated += "    ]\n"
generated += "}\n"
try generated.write(toFile: outputPath, atomically: true, encoding: .utf8)
