import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// The Redis time the benchmarks print comes from real `INFO` deltas of a real server.
@Suite("Redis server usage from INFO")
struct RedisServerUsageTests {
    @Test("a delta of INFO counts exactly the commands run between two readings, scripts and what they call included")
    func deltaCountsTheCommandsRun() async throws {
        // A server of its own: INFO counts every client's commands.
        let server = try await RedisServerProcess()
        defer { Task { await server.stop() } }
        let redis = RedisConnection(configuration: try RedisConfiguration(url: server.url))
        let before = try await RedisServerUsage.read(from: redis)
        _ = try await redis.pipeline((0..<500).map { RedisCommand("XADD", ["s", "*", "n", .integer(Int64($0))]) })
        for _ in 0..<10 { try await redis.send(RedisCommand("EVAL", ["return redis.call('XLEN', KEYS[1])", "1", "s"])) }
        let spent = try await RedisServerUsage.read(from: redis).since(before)
        #expect(spent.commands["xadd"]?.calls == 500)
        #expect(spent.commands["eval"]?.calls == 10)
        #expect(spent.commands["xlen"]?.calls == 10, "commands a script calls have rows of their own")
        #expect((spent.commands["xadd"]?.microseconds ?? 0) > 0)
        #expect(spent.mainThreadCPUMicroseconds > 0, "the command thread worked")
        #expect(
            (spent.commands["eval"]?.microseconds ?? 0) >= (spent.commands["xlen"]?.microseconds ?? 0),
            "a script's time includes what it called")
    }

    @Test("INFO text is read line by line: command rows, the main thread's CPU, anything else skipped")
    func parsesInfo() {
        let usage = RedisServerUsage.parse(
            info: """
                # CPU\r
                used_cpu_sys:1.500000\r
                used_cpu_user_main_thread:0.250000\r
                used_cpu_sys_main_thread:0.125000\r
                # Commandstats\r
                cmdstat_evalsha:calls=3,usec=120,usec_per_call=40.00,rejected_calls=0,failed_calls=1\r
                cmdstat_client|setname:calls=1,usec=2,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r
                """)
        #expect(usage.mainThreadCPUMicroseconds == 375_000)
        #expect(usage.commands["evalsha"] == RedisServerUsage.Command(calls: 3, microseconds: 120))
        #expect(usage.commands["client|setname"] == RedisServerUsage.Command(calls: 1, microseconds: 2))
        #expect(usage.commands.count == 2)
    }
}
