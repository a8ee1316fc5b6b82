import Foundation

/// A child process started with `posix_spawn` and reaped with `waitpid(WNOHANG)`.
///
/// Foundation's `Process` on Linux did not notice a child's exit promptly here (`isRunning` stayed
/// true for seconds), which made every fault test slow; owning the pid and reaping it ourselves
/// is exact, and waiting polls with `Task.sleep` so no cooperative thread blocks.
public final class ChildProcess: @unchecked Sendable {
    // @unchecked: `exitStatus` is written only by the task that waits for the child.
    public let pid: pid_t
    private var exitStatus: Int32?

    /// Starts `executable` with `arguments`; standard streams go to the given files (or /dev/null).
    public init(
        _ executable: URL, _ arguments: [String], environment: [String: String]? = nil,
        standardInput: String = "/dev/null", standardOutput: String = "/dev/null", standardError: String = "/dev/null"
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, standardInput, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, standardOutput, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, standardError, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        // Nothing else of this process goes with the child: a socket another test holds open at
        // this moment (a port just probed, a server's listener, a Redis connection) would stay
        // bound for the child's whole life, and a server later started on that port fails.
        closeInheritedDescriptors(&actions)

        // The child must start with every signal unblocked and at its default action: a spawned
        // process inherits the calling thread's mask, and test threads may block SIGTERM.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t(), allSignals = sigset_t()
        sigemptyset(&noSignals)
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let environment = environment ?? ProcessInfo.processInfo.environment
        let argv = ([executable.path()] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable.path(), &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw TestSupportError("cannot start \(executable.path()): \(String(cString: strerror(result)))")
        }
        self.pid = pid
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    /// True until the child has exited and been reaped.
    public var isRunning: Bool {
        if exitStatus != nil { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            // WIFEXITED / WEXITSTATUS, WTERMSIG written out: the macros do not import into Swift.
            let signal = status & 0x7F
            exitStatus = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
            return false
        }
        return true
    }

    public func signal(_ signal: Int32) {
        if exitStatus == nil { kill(pid, signal) }
    }

    /// Waits for the child to exit and returns its status (128 + N when killed by signal N);
    /// sends SIGKILL once `limit` has passed.
    @discardableResult
    public func waitForExit(killAfter limit: Duration = .seconds(120)) async -> Int32 {
        let deadline = ContinuousClock.now + limit
        var killed = false
        while isRunning {
            if !killed, ContinuousClock.now > deadline {
                signal(SIGCONT)
                signal(SIGKILL)
                killed = true
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return exitStatus ?? -1
    }
}

/// Adds a close of every descriptor from 3 up: glibc's `posix_spawn_file_actions_addclosefrom_np`
/// (2.34+, not imported into Swift, so found by name), else each descriptor open now.
private func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
        _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
        return
    }
    let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    for descriptor in open.compactMap({ Int32($0) }) where descriptor > 2 {
        posix_spawn_file_actions_addclose(&actions, descriptor)
    }
}
