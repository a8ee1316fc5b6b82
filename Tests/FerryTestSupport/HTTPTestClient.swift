import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// An HTTP answer as tests read it: status, headers (lower-cased names) and the body, parsed
/// when JSON.
public struct HTTPAnswer: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: Data
    public var json: [String: any Sendable]? {
        (try? JSONSerialization.jsonObject(with: body)) as? [String: any Sendable]
    }
    /// A Ferry problem's `type` without its prefix (`conflict`, `forbidden`, ...).
    public var problem: String? { (json?["type"] as? String).map { String($0.dropFirst("urn:ferry:problem:".count)) } }
    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// Sends a request to a real server on loopback (URLSession, libcurl underneath on Linux), with
/// `body` as its JSON text (or `bytes` as it is, its type in `headers`) and `bearer` as its
/// `Authorization`.
public func sendHTTP(
    _ method: String, _ url: String, json body: String? = nil, bytes: Data? = nil, bearer: String? = nil,
    headers: [String: String] = [:]
) async throws -> HTTPAnswer {
    guard let target = URL(string: url) else { throw TestSupportError("not a URL: \(url)") }
    var request = URLRequest(url: target)
    request.httpMethod = method
    request.timeoutInterval = 120
    if let body {
        request.httpBody = Data(body.utf8)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    }
    if let bytes { request.httpBody = bytes }
    if let bearer { request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
    for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
    let (data, response) = try await URLSession.shared.data(for: request)
    guard let http = response as? HTTPURLResponse else { throw TestSupportError("no HTTP answer from \(url)") }
    var fields: [String: String] = [:]
    for (name, value) in http.allHeaderFields {
        if let name = name as? String, let value = value as? String { fields[name.lowercased()] = value }
    }
    return HTTPAnswer(status: http.statusCode, headers: fields, body: data)
}

/// A server started as a child process that prints `listening on <base URL>` as its first such
/// line of standard output once it accepts connections (`ferry serve --port 0`, the examples'
/// stand-ins), and that base URL.
public struct ListeningProcess: Sendable {
    public let process: ChildProcess
    public let baseURL: String
    /// Its standard output (the `listening on` line, then whatever it prints).
    public let outputPath: String
    /// Its standard error, for a failure's message.
    public let errorPath: String

    /// Starts `executable ARGUMENTS` and waits (up to a minute) until it says where it listens.
    public init(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil, name: String) async throws {
        let output = FileManager.default.temporaryDirectory.appending(path: "\(name)-\(UUID().uuidString).out").path()
        outputPath = output
        errorPath = output + ".err"
        let process = try ChildProcess(
            executable, arguments, environment: environment, standardOutput: output, standardError: errorPath)
        var base: String?
        _ = await eventually(.seconds(60)) {
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            base = text.split(separator: "\n").first { $0.hasPrefix("listening on ") }.map { String($0.dropFirst(13)) }
            return base != nil || !process.isRunning
        }
        guard let base else {
            process.signal(SIGKILL)
            let errors = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
            throw TestSupportError("\(name) did not start: \(errors)")
        }
        self.process = process
        baseURL = base
    }
}
