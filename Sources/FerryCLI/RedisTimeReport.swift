import Ferry
import FerryRedis
import Foundation

/// Redis server time per job, as the benchmarks print it beside their throughput: the command
/// thread's CPU per job (the total), and where it went by command, from `INFO` read before and
/// after a run (``RedisServerUsage``).
struct RedisTimeReport {
    /// What Redis spent during the run.
    let usage: RedisServerUsage
    /// Jobs the run moved through Redis.
    let jobs: Int

    /// Reads the server's counters, runs `body`, reads them again. Ferry's function library is
    /// loaded first, outside the measurement: Redis loads it once, not per job, and a run that
    /// happened to be the first to call a script would otherwise count the load (about 2 ms of
    /// Redis time, 0.1 µs a job over 20,000 jobs) against its jobs.
    static func measure(
        _ connection: RedisConnection, jobs: Int, _ body: () async throws -> Void
    ) async throws -> RedisTimeReport {
        try await loadFerryLibrary(on: connection)
        let before = try await RedisServerUsage.read(from: connection)
        try await body()
        return RedisTimeReport(usage: try await RedisServerUsage.read(from: connection).since(before), jobs: jobs)
    }

    /// The command thread's CPU microseconds per job.
    var microsecondsPerJob: Double { Double(usage.mainThreadCPUMicroseconds) / Double(max(jobs, 1)) }

    /// `12.3`: for a table cell.
    var cell: String { String(format: "%.1f", microsecondsPerJob) }

    /// `evalsha 6.10 µs (1.01/job), xreadgroup 1.20 µs (0.06/job), …`: every command that took
    /// 0.05 µs a job or more, most first; the measurement's own `INFO` left out. A script's
    /// commands have rows of their own, so the next change to a script shows what it costs.
    var breakdown: String { breakdown(top: 20, atLeast: 0.05) }

    /// ``breakdown`` for the `top` commands that took the most, of those that took `atLeast`
    /// microseconds a job.
    func breakdown(top: Int, atLeast: Double = 0) -> String {
        usage.commands.filter { $0.key != "info" && Double($0.value.microseconds) / Double(max(jobs, 1)) >= atLeast }
            .sorted { $0.value.microseconds > $1.value.microseconds }.prefix(top)
            .map { name, command in
                String(format: "%@ %.2f µs", name, Double(command.microseconds) / Double(max(jobs, 1)))
                    + " (\(Self.rate(calls: command.calls, jobs: jobs)))"
            }.joined(separator: ", ")
    }

    /// `1.00/job` for a command called about once a job or more often; `1 per 240 jobs` for one
    /// called once a batch, whose rate would print as `0.00/job` and hide how large its batches are.
    static func rate(calls: Int, jobs: Int) -> String {
        let perJob = Double(calls) / Double(max(jobs, 1))
        return perJob >= 0.1 || calls == 0 ? String(format: "%.2f/job", perJob) : "1 per \(Int((1 / perJob).rounded())) jobs"
    }

    /// Loads ``FerryScripts/library`` unless Redis holds it; a Redis that refuses it (an ACL
    /// without `FUNCTION LOAD`) is left alone, as Ferry's connections then call scripts by
    /// `EVALSHA`.
    static func loadFerryLibrary(on connection: RedisConnection) async throws {
        do {
            _ = try await connection.send(RedisCommand("FUNCTION LOAD", [.string(FerryScripts.library.code)]))
        } catch let error where error.kind == .server {
            // "Library ... already exists", or a refusal: nothing to load here either way.
        }
    }
}
