import Foundation

/// A real HTTP/1.1 server on loopback (push_endpoint.py beside this file), and what it received.
public final class PushEndpointServer: Sendable {
    public let port: Int
    private let process: ChildProcess
    private let logPath: String

    /// One request as the server saw it.
    public struct Request: Decodable, Sendable {
        public let path: String
        public let headers: [String: String]
        public let body: String
        public let clientPort: Int
        public let inFlight: Int
        public let status: Int
        public let signatureValid: Bool?

        enum CodingKeys: String, CodingKey {
            case path, headers, body, status
            case clientPort = "client_port", inFlight = "in_flight", signatureValid = "signature_valid"
        }

        public var bodyBytes: [UInt8] { Array(Data(base64Encoded: body) ?? Data()) }
        public var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(bodyBytes))) as? [String: Any] }
        public var message: [String: Any]? { json?["message"] as? [String: Any] }
    }

    /// Where its files go: this path with `.port`, `.log` and `.err`.
    private let scratch: String

    /// Whether the server speaks HTTPS (with a certificate no client trusts by default).
    public let isTLS: Bool

    /// - Parameter tls: a certificate and key file to serve HTTPS with.
    public init(secret: String? = nil, tls: (certificate: String, key: String)? = nil) async throws {
        isTLS = tls != nil
        let scratch = FileManager.default.temporaryDirectory.appending(path: "ferry-push-\(UUID().uuidString)").path()
        self.scratch = scratch
        let portFile = scratch + ".port"
        logPath = scratch + ".log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let script = repositoryRoot.appending(path: "Tests/FerryTestSupport/push_endpoint.py").path()
        process = try ChildProcess(
            try executable(named: "python3"), [script, portFile, logPath] + (secret.map { [$0] } ?? []),
            environment: ProcessInfo.processInfo.environment.merging(
                tls.map { ["PUSH_TLS_CERT": $0.certificate, "PUSH_TLS_KEY": $0.key] } ?? [:]
            ) { $1 },
            standardError: scratch + ".err")
        // Generous: a loaded CI (a browser test starting beside it) can take seconds to start Python.
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let port = Int(text) {
                self.port = port
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.signal(SIGKILL)
        throw TestSupportError("the push endpoint did not start; see \(scratch).err")
    }

    public func url(_ path: String = "/") -> String { "\(isTLS ? "https" : "http")://127.0.0.1:\(port)\(path)" }

    public var requests: [Request] {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { try? JSONDecoder().decode(Request.self, from: Data($0.utf8)) }
    }

    /// Stops the server and removes its files (port, request log, standard error), so test
    /// runs do not pile them up in the temporary directory.
    public func stop() async {
        process.signal(SIGKILL)
        _ = await process.waitForExit()
        for suffix in [".port", ".log", ".err"] { try? FileManager.default.removeItem(atPath: scratch + suffix) }
    }
}
