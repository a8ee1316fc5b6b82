import FerryRedis
import Foundation
import Synchronization

/// A real, throwaway `redis-server` on a free loopback port, in a temporary directory.
///
/// Fault tests own one each so they can stop, pause (`SIGSTOP`), kill or restart it without
/// disturbing other tests. Everything else shares ``TestRedis/sharedURL()``.
public final class RedisServerProcess: @unchecked Sendable {
    // @unchecked: a test drives its own server from one task at a time.
    public private(set) var port: Int
    public let directory: URL
    public let extraArguments: [String]
    private var process: ChildProcess?

    public var url: String { "redis://127.0.0.1:\(port)" }

    /// Starts a server and waits until it answers PING (or refuses it: the default user may be off).
    public init(extraArguments: [String] = []) async throws {
        self.port = try freeLoopbackPort()
        self.directory = FileManager.default.temporaryDirectory.appending(path: "ferry-redis-\(UUID().uuidString)")
        self.extraArguments = extraArguments
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // Another test may take the free port between our probe and redis-server's bind.
        for _ in 1..<5 {
            do {
                try await start()
                return
            } catch let error as TestSupportError where error.description.contains("Address already in use") {
                port = try freeLoopbackPort()
            }
        }
        try await start()
    }

    deinit {
        process?.signal(SIGCONT)
        process = nil
        try? FileManager.default.removeItem(at: directory)
    }

    public var processIdentifier: Int32? { process?.pid }

    /// Starts (or restarts, on the same port and directory) the server.
    public func start() async throws {
        process = try ChildProcess(
            try executable(named: "redis-server"),
            [
                "--port", String(port), "--bind", "127.0.0.1", "--dir", directory.path(),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", directory.appending(path: "redis.log").path(),
            ] + extraArguments)
        try await waitUntilReady()
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after 10 s).
    public func stop() async {
        guard let process else { return }
        process.signal(SIGCONT)
        process.signal(SIGTERM)
        await process.waitForExit(killAfter: .seconds(10))
    }

    /// SIGKILL: the server vanishes without a word, as on a crash.
    public func kill9() async {
        guard let process else { return }
        process.signal(SIGKILL)
        await process.waitForExit(killAfter: .seconds(10))
    }

    /// SIGSTOP: the socket stays open but nothing answers, like a frozen host.
    public func pause() {
        process?.signal(SIGSTOP)
    }

    public func resume() {
        process?.signal(SIGCONT)
    }

    public func restart() async throws {
        await stop()
        try await start()
    }

    private func waitUntilReady() async throws {
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            let probe = RedisConnection(configuration: try RedisConfiguration(url: url))
            do throws(RedisError) {
                _ = try await probe.send(RedisCommand("PING"))
                return
            } catch {
                // An error reply (NOAUTH when the default user is off) is an answer too.
                if error.prefix != nil { return }
            }
            if let process, !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        let log = (try? String(contentsOf: directory.appending(path: "redis.log"), encoding: .utf8)) ?? ""
        throw TestSupportError("redis-server on port \(port) did not become ready:\n\(log.suffix(2000))")
    }
}

/// The server most tests share: `FERRY_TEST_REDIS_URL` when the test script started one,
/// otherwise one started on first use, so a plain `swift test` works too.
public enum TestRedis {
    private static let fallback = Task {
        let server = try await RedisServerProcess()
        // Statics are never deinitialised, so stop the server when the test process exits.
        fallbackPID.withLock { $0 = server.processIdentifier ?? 0 }
        atexit {
            let pid = TestRedis.fallbackPID.withLock { $0 }
            if pid > 0 { kill(pid, SIGKILL) }
        }
        return server
    }
    private static let fallbackPID = Mutex<pid_t>(0)

    public static func sharedURL() async throws -> String {
        if let url = ProcessInfo.processInfo.environment["FERRY_TEST_REDIS_URL"], !url.isEmpty { return url }
        return try await fallback.value.url
    }

    /// A new connection to the shared server.
    public static func connection() async throws -> RedisConnection {
        try RedisConnection(url: try await sharedURL())
    }
}

/// A name no other test uses, so tests can share one server and run in parallel.
public func uniqueName(_ prefix: String = "t") -> String {
    "\(prefix)-\(UUID().uuidString.prefix(13).lowercased())"
}

public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A free TCP port on 127.0.0.1 for a server a test starts (a child `redis-server`, an HTTP
/// endpoint), chosen below the kernel's ephemeral range and never handed out twice in one run.
///
/// Port 0 would give an ephemeral port, the range every outgoing connection's local port comes
/// from: between this probe and the child's own bind, one of the suite's hundreds of client
/// connections can take it, and the child then fails to bind while the test dials whatever holds
/// the port. Below the range only another test's server can, and this process hands out each port
/// once.
public func freeLoopbackPort() throws -> Int {
    let ephemeralStart =
        (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
        .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32768
    let candidates = 20000..<max(ephemeralStart, 20001)
    for _ in 0..<200 {
        let port = Int.random(in: candidates)
        guard handedOutPorts.withLock({ $0.insert(port).inserted }) else { continue }
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw TestSupportError("socket() failed: errno \(errno)") }
        defer { close(descriptor) }
        var address = loopbackAddress(port: port)
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        if bound { return port }
    }
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard descriptor >= 0 else { throw TestSupportError("socket() failed: errno \(errno)") }
    defer { close(descriptor) }
    return try bindToFreeLoopbackPort(descriptor)
}

/// Every port ``freeLoopbackPort()`` has handed out in this process.
private let handedOutPorts = Mutex<Set<Int>>([])

/// Binds the socket to a free port on 127.0.0.1 and returns the port.
func bindToFreeLoopbackPort(_ descriptor: Int32) throws -> Int {
    var address = loopbackAddress(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
            bind(descriptor, generic, length) == 0 && getsockname(descriptor, generic, &length) == 0
        }
    }
    guard bound else { throw TestSupportError("bind() to a free port failed: errno \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}

func loopbackAddress(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return address
}

/// A loopback port whose listener never accepts and whose accept queue is full, so the kernel
/// drops further SYNs: a connect to it hangs as one to a firewalled or vanished host does.
public final class SaturatedListener {
    /// The port to dial, on 127.0.0.1; valid while the listener lives.
    public let port: Int
    private var descriptors: [Int32] = []

    public init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        descriptors.append(listener)
        port = try bindToFreeLoopbackPort(listener)
        guard listen(listener, 0) == 0 else { throw TestSupportError("listen() failed: errno \(errno)") }
        // A backlog of 0 still queues one connection; two fill it whatever the kernel rounds to.
        var address = loopbackAddress(port: port)
        for _ in 0..<2 {
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            descriptors.append(filler)
            _ = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(filler, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    deinit {
        descriptors.forEach { close($0) }
    }
}

/// Finds an executable on PATH, as a shell would.
public func executable(named name: String) throws -> URL {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = URL(fileURLWithPath: String(directory)).appending(path: name)
        if FileManager.default.isExecutableFile(atPath: candidate.path()) { return candidate }
    }
    for directory in ["/usr/sbin", "/usr/local/bin", "/usr/bin"] {
        let candidate = URL(fileURLWithPath: directory).appending(path: name)
        if FileManager.default.isExecutableFile(atPath: candidate.path()) { return candidate }
    }
    throw TestSupportError("\(name) is not installed; run ops/test.sh, which installs it")
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` now.
public func isListening(port: Int) -> Bool {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    var address = loopbackAddress(port: port)
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}
