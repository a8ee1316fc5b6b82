/// What Redis spent serving a stretch of work, read from `INFO cpu commandstats` before and
/// after it: the figure that decides how many jobs one Redis carries, since every worker and
/// producer of a queue shares its one command thread, whatever the number of workers.
///
/// Two measures, both server-wide (other clients of the same server count too):
/// - ``mainThreadCPUMicroseconds``: the command thread's CPU time (`used_cpu_user_main_thread`
///   plus `used_cpu_sys_main_thread`), protocol parsing and socket writes included. It counts
///   every command once, so it is the total.
/// - ``commands``: `INFO commandstats` calls and microseconds by command, where the time goes.
///   A script's row (`evalsha`) includes the commands it calls, which Redis also counts on
///   their own rows, so the rows do not add up to a total.
public struct RedisServerUsage: Sendable, Equatable {
    /// One command's row of `INFO commandstats`.
    public struct Command: Sendable, Equatable {
        /// Times it ran (from scripts too).
        public var calls: Int
        /// Microseconds spent running it (a script's includes what it called).
        public var microseconds: Int

        /// A row of counts; public so tests and tools can build expected values.
        public init(calls: Int, microseconds: Int) {
            self.calls = calls
            self.microseconds = microseconds
        }
    }

    /// By command name as Redis writes it, lower case (`evalsha`, `xreadgroup`, `client|setname`).
    public var commands: [String: Command]
    /// CPU time of Redis's command thread.
    public var mainThreadCPUMicroseconds: Int

    /// A usage made of its parts; ``read(from:)`` is the usual way to get one.
    public init(commands: [String: Command], mainThreadCPUMicroseconds: Int) {
        self.commands = commands
        self.mainThreadCPUMicroseconds = mainThreadCPUMicroseconds
    }

    /// The server's counters now.
    ///
    /// - Throws: ``RedisError`` when `INFO` fails (an ACL user without `INFO`, say).
    public static func read(from connection: RedisConnection) async throws(RedisError) -> RedisServerUsage {
        let reply = try await connection.send(RedisCommand("INFO", ["cpu", "commandstats"]))
        return parse(info: reply.string ?? "")
    }

    /// Reads the `cmdstat_<name>:calls=N,usec=N,…` lines and the main thread's CPU seconds of an
    /// `INFO` reply; lines it does not know are skipped.
    public static func parse(info: String) -> RedisServerUsage {
        var commands: [String: Command] = [:]
        var cpuSeconds = 0.0
        for line in info.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon]
            let value = line[line.index(after: colon)...]
            if name == "used_cpu_user_main_thread" || name == "used_cpu_sys_main_thread" {
                cpuSeconds += Double(value) ?? 0
            } else if name.hasPrefix("cmdstat_") {
                var fields: [Substring: Int] = [:]
                for pair in value.split(separator: ",") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    if parts.count == 2, let number = Int(parts[1]) { fields[parts[0]] = number }
                }
                commands[String(name.dropFirst("cmdstat_".count))] = Command(
                    calls: fields["calls"] ?? 0, microseconds: fields["usec"] ?? 0)
            }
        }
        return RedisServerUsage(commands: commands, mainThreadCPUMicroseconds: Int((cpuSeconds * 1_000_000).rounded()))
    }

    /// What was spent between `earlier` and this reading. Commands that did not run are left out.
    public func since(_ earlier: RedisServerUsage) -> RedisServerUsage {
        var spent: [String: Command] = [:]
        for (name, now) in commands {
            let before = earlier.commands[name] ?? Command(calls: 0, microseconds: 0)
            if now.calls > before.calls {
                spent[name] = Command(calls: now.calls - before.calls, microseconds: now.microseconds - before.microseconds)
            }
        }
        return RedisServerUsage(
            commands: spent, mainThreadCPUMicroseconds: mainThreadCPUMicroseconds - earlier.mainThreadCPUMicroseconds)
    }
}
