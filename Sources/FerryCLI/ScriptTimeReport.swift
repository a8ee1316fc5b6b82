import Ferry
import FerryRedis
import Foundation

/// Redis server time by script, per job: `INFO commandstats` has one row for every `FCALL`,
/// so the benchmarks time each call with Redis's slowlog instead, set to log every command for
/// one run of their own (the log costs Redis time too, so the run whose totals are printed
/// does not have it). A call's duration there is the one `commandstats` adds up, the script's
/// commands included; each is named by its function's name, or an `EVALSHA` by its SHA1 (``FerryScripts``).
struct ScriptTimeReport {
    /// Microseconds and calls by script name.
    let scripts: [String: (microseconds: Int64, calls: Int)]
    /// Jobs the run moved through Redis.
    let jobs: Int

    /// Runs `body` with every command logged, and reads the log; nil (and `body` run without
    /// it) when the server refuses `CONFIG SET` (a managed Redis may) or the log filled.
    static func measure(
        _ connection: RedisConnection, jobs: Int, _ body: () async throws -> Void
    ) async throws -> ScriptTimeReport? {
        func config(_ name: String) async throws -> RedisArgument? {
            let reply = try? await connection.send(RedisCommand("CONFIG", ["GET", .string(name)]))
            return reply?.array?.dropFirst().first?.string.map { .string($0) }
        }
        guard let threshold = try await config("slowlog-log-slower-than"), let length = try await config("slowlog-max-len")
        else {
            try await body()
            return nil
        }
        // Room for every command of the run: the commands a script calls are logged too, and a
        // job costs about a dozen in all.
        let room = Int64(jobs) * 16 + 10_000
        do {
            try await connection.send(
                RedisCommand("CONFIG", ["SET", "slowlog-log-slower-than", 0, "slowlog-max-len", .integer(room)]))
        } catch {
            try await body()
            return nil
        }
        var report: ScriptTimeReport?
        do {
            try await connection.send(RedisCommand("SLOWLOG", ["RESET"]))
            try await body()
            let logged = try await connection.send(RedisCommand("SLOWLOG", ["GET", -1])).array ?? []
            if logged.count >= room { print("note: the slowlog filled (\(logged.count) entries); no per-script figures") }
            report = logged.count < room ? ScriptTimeReport(logged, jobs: jobs) : nil
        } catch {
            try? await restore(connection, threshold: threshold, length: length)
            throw error
        }
        try await restore(connection, threshold: threshold, length: length)
        return report
    }

    private static func restore(_ connection: RedisConnection, threshold: RedisArgument, length: RedisArgument) async throws {
        try await connection.send(
            RedisCommand("CONFIG", ["SET", "slowlog-log-slower-than", threshold, "slowlog-max-len", length]))
        try await connection.send(RedisCommand("SLOWLOG", ["RESET"]))
    }

    /// Sums the `FCALL`, `EVALSHA` and `EVAL` entries of a `SLOWLOG GET` reply (each `[id, time,
    /// duration µs, [command, args...], ...]`) by script.
    init(_ logged: [RedisReply], jobs: Int) {
        var scripts: [String: (microseconds: Int64, calls: Int)] = [:]
        for entry in logged {
            guard let fields = entry.array, fields.count >= 4, let duration = fields[2].integer,
                let command = fields[3].array, let name = command.first?.string?.uppercased()
            else { continue }
            let script: String
            switch name {
            case "FCALL": script = command.dropFirst().first?.string.flatMap(FerryScripts.name(ofFunction:)) ?? "other function"
            case "EVALSHA": script = command.dropFirst().first?.string.flatMap(FerryScripts.name(ofSHA1:)) ?? "other script"
            case "EVAL": script = "EVAL (a script sent whole after NOSCRIPT)"
            default: continue
            }
            scripts[script, default: (0, 0)].microseconds += duration
            scripts[script, default: (0, 0)].calls += 1
        }
        self.scripts = scripts
        self.jobs = jobs
    }

    /// `ack 6.10 µs (1 per 25 jobs), start_batch 3.20 µs (1 per 25 jobs), …`: per job, most first.
    var breakdown: String {
        let perJob = Double(max(jobs, 1))
        // Scripts of the worker's periodic passes (retention, due jobs) cost nothing per job.
        return scripts.filter { Double($0.value.microseconds) / perJob >= 0.01 }
            .sorted { $0.value.microseconds > $1.value.microseconds }.map { name, time in
                String(format: "%@ %.2f µs", name, Double(time.microseconds) / perJob)
                    + " (\(RedisTimeReport.rate(calls: time.calls, jobs: jobs)))"
            }.joined(separator: ", ")
    }
}
