import Foundation

/// A TCP proxy to a Redis on loopback (tcp_proxy.py beside this file) that a test can freeze:
/// the connections of one worker stall, as when its network path does, while other clients of
/// the same Redis carry on.
public final class FreezableProxy: Sendable {
    /// The port clients connect to.
    public let port: Int
    private let process: ChildProcess

    /// Starts relaying 127.0.0.1:`port` to 127.0.0.1:`targetPort`.
    public init(targetPort: Int) async throws {
        let scratch = FileManager.default.temporaryDirectory.appending(path: "ferry-proxy-\(UUID().uuidString)").path()
        let portFile = scratch + ".port"
        let script = repositoryRoot.appending(path: "Tests/FerryTestSupport/tcp_proxy.py").path()
        process = try ChildProcess(
            try executable(named: "python3"), [script, portFile, String(targetPort)], standardError: scratch + ".err")
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let port = Int(text) {
                self.port = port
                try? FileManager.default.removeItem(atPath: portFile)
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.signal(SIGKILL)
        throw TestSupportError("the TCP proxy did not start; see \(scratch).err")
    }

    /// A Redis URL through the proxy.
    public var url: String { "redis://127.0.0.1:\(port)" }

    /// Stops relaying: bytes wait in socket buffers, nothing answers.
    public func freeze() { process.signal(SIGSTOP) }

    /// Relays again, including what waited.
    public func thaw() { process.signal(SIGCONT) }

    public func stop() async {
        process.signal(SIGCONT)
        process.signal(SIGKILL)
        _ = await process.waitForExit()
    }
}
