import FerryTestSupport
import Testing

@testable import FerryRedis

@Suite("Errors keep Redis's prefix and tell failures apart")
struct RedisErrorTests {
    private func serverError(_ command: RedisCommand, on redis: RedisConnection) async throws -> RedisError {
        do {
            try await redis.send(command)
        } catch {
            return error
        }
        throw TestSupportError("\(command.name) did not fail")
    }

    @Test("server errors keep their prefix as a matchable value")
    func prefixesAreKept() async throws {
        let redis = try await TestRedis.connection()
        let key = uniqueName("errors")
        try await redis.send(RedisCommand("SET", [.string(key), "x"]))
        try await redis.send(RedisCommand("XGROUP CREATE", [.string(key + ":s"), "g", "0", "MKSTREAM"]))

        let wrongType = try await serverError(RedisCommand("LPUSH", [.string(key), "y"]), on: redis)
        #expect(wrongType.kind == .server)
        #expect(wrongType.prefix == .wrongType)
        #expect(wrongType.command == "LPUSH")

        let busyGroup = try await serverError(RedisCommand("XGROUP CREATE", [.string(key + ":s"), "g", "0"]), on: redis)
        #expect(busyGroup.prefix == .busyGroup)

        let noGroup = try await serverError(
            RedisCommand("XREADGROUP", ["GROUP", "nope", "c", "COUNT", "1", "STREAMS", .string(key + ":s"), ">"]), on: redis)
        #expect(noGroup.prefix == .noGroup)

        let noScript = try await serverError(
            RedisCommand("EVALSHA", [.string(String(repeating: "a", count: 40)), "0"]), on: redis)
        #expect(noScript.prefix == .noScript)

        let unknown = try await serverError(RedisCommand("NOSUCHCOMMAND"), on: redis)
        #expect(unknown.prefix == .err)
        #expect(!unknown.isRetryable)
    }

    @Test("transient server states are retryable and permanent ones are not")
    func retryability() {
        for transient in [
            "LOADING Redis is loading the dataset in memory", "BUSY Redis is busy running a script",
            "READONLY You can't write against a read only replica.", "TRYAGAIN", "MASTERDOWN Link with MASTER is down",
        ] {
            #expect(RedisError.server(transient).isRetryable, "\(transient)")
        }
        for permanent in [
            "WRONGPASS invalid username-password pair", "NOGROUP No such key", "ERR syntax error",
            "OOM command not allowed when used memory > 'maxmemory'.",
        ] {
            #expect(!RedisError.server(permanent).isRetryable, "\(permanent)")
        }
        #expect(RedisError.server("OOM command not allowed").prefix == .oom)
        #expect(RedisError.server("lowercase message").prefix == nil)
        #expect(RedisError(kind: .timeout, message: "t").isRetryable)
        #expect(RedisError(kind: .connectionLost, message: "l").isConnectionProblem)
    }

    @Test("a server that is not running gives connectionFailed at once, naming what to check")
    func connectionRefused() async throws {
        let port = try freeLoopbackPort()
        // A connect timeout far above the bound below: the refusal, not a timeout, ends the call,
        // however loaded the machine (a fresh CI run took 6 s to get there at the suite's start).
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(port)")
        configuration.connectTimeout = .seconds(120)
        let redis = RedisConnection(configuration: configuration)
        let start = ContinuousClock.now
        await #expect {
            try await redis.send(RedisCommand("PING"))
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.kind == .connectionFailed && error.message.contains("Is redis-server running")
                && error.description.contains("127.0.0.1:\(port)")
        }
        #expect(ContinuousClock.now - start < .seconds(60))
    }

    @Test("commands run on the connection's own thread, never on the cooperative pool")
    func dedicatedThread() async throws {
        let redis = try await TestRedis.connection()
        #expect(await redis.executingThreadName() == "ferry-redis")
    }
}
