import Foundation

/// What a finished child process left behind.
public struct ProcessResult: Sendable {
    public var status: Int32
    public var standardOutput: String
    public var standardError: String
    public var outputBytes: [UInt8]

    /// Non-empty lines of standard output.
    public var lines: [String] { standardOutput.split(separator: "\n").map(String.init) }
}

/// Runs a real child process to completion without blocking a cooperative thread: output goes
/// to temporary files and the exit is polled (see ``ChildProcess``).
public func runProcess(
    _ executableURL: URL, _ arguments: [String], environment: [String: String] = [:],
    input: [UInt8]? = nil, timeout: Duration = .seconds(120)
) async throws -> ProcessResult {
    let scratch = FileManager.default.temporaryDirectory.appending(path: "ferry-run-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let outURL = scratch.appending(path: "out"), errURL = scratch.appending(path: "err"), inURL = scratch.appending(path: "in")
    _ = FileManager.default.createFile(atPath: inURL.path(), contents: Data(input ?? []))

    let process = try ChildProcess(
        executableURL, arguments, environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
        standardInput: inURL.path(), standardOutput: outURL.path(), standardError: errURL.path())
    let status = await process.waitForExit(killAfter: timeout)
    let output = try Data(contentsOf: outURL)
    return ProcessResult(
        status: status,
        standardOutput: String(decoding: output, as: UTF8.self),
        standardError: String(decoding: try Data(contentsOf: errURL), as: UTF8.self),
        outputBytes: Array(output))
}

/// The `ferry` binary that `swift build` put beside the test bundle (or `FERRY_BIN`).
public func ferryExecutable() throws -> URL {
    if let path = ProcessInfo.processInfo.environment["FERRY_BIN"] { return URL(fileURLWithPath: path) }
    return try builtExecutable("ferry")
}

/// The `ferry-exec-guard` binary that `swift build` put beside the test bundle.
public func execGuardExecutable() throws -> URL {
    try builtExecutable("ferry-exec-guard")
}

private func builtExecutable(_ name: String) throws -> URL {
    let bundleDirectory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    let candidate = bundleDirectory.appending(path: name)
    guard FileManager.default.isExecutableFile(atPath: candidate.path()) else {
        throw TestSupportError("no \(name) binary at \(candidate.path()); run `swift build` first")
    }
    return candidate
}

/// Runs `python3 -c SCRIPT ARGS...`, for interoperability tests with redis-py.
public func runPython(_ script: String, _ arguments: [String] = []) async throws -> ProcessResult {
    try await runProcess(try executable(named: "python3"), ["-c", script] + arguments)
}
