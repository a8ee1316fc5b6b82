import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@Suite("Connections survive faults of a real redis-server")
struct RedisConnectionFaultTests {
    @Test("after the server restarts, the next command fails clearly and the one after re-dials and succeeds")
    func reconnectAfterRestart() async throws {
        let server = try await RedisServerProcess()
        let redis = try RedisConnection(url: server.url)
        try await redis.send(RedisCommand("SET", ["k", "before"]))
        try await server.restart()

        var sawConnectionError = false
        var reply: RedisReply?
        for _ in 0..<5 where reply == nil {
            do {
                reply = try await redis.send(RedisCommand("PING"))
            } catch {
                #expect(error.isConnectionProblem, "a restart shows as a connection problem, got \(error)")
                sawConnectionError = true
            }
        }
        #expect(reply == .status("PONG"))
        #expect(sawConnectionError)
        #expect(await redis.dialCount == 2)
    }

    @Test("a server frozen with SIGSTOP gives a timeout error, not a hang; after SIGCONT the connection works")
    func readTimeoutAgainstStoppedServer() async throws {
        let server = try await RedisServerProcess()
        var configuration = try RedisConfiguration(url: server.url)
        configuration.commandTimeout = .milliseconds(300)
        let redis = RedisConnection(configuration: configuration)
        try await redis.send(RedisCommand("PING"))

        server.pause()
        let start = ContinuousClock.now
        await #expect {
            try await redis.send(RedisCommand("PING"))
        } throws: { error in
            (error as? RedisError)?.kind == .timeout
        }
        #expect(ContinuousClock.now - start < .seconds(3))

        server.resume()
        #expect(try await redis.send(RedisCommand("PING")) == .status("PONG"))
    }

    @Test("a blocking command gets a socket timeout above its BLOCK time")
    func blockingReadWithLongerTimeout() async throws {
        let redis = try await TestRedis.connection()
        let stream = uniqueName("block")
        try await redis.send(RedisCommand("XGROUP CREATE", [.string(stream), "g", "$", "MKSTREAM"]))
        let reply = try await redis.send(
            RedisCommand("XREADGROUP", ["GROUP", "g", "c", "BLOCK", "400", "STREAMS", .string(stream), ">"]),
            timeout: .milliseconds(1400))
        #expect(reply == .null)
    }

    @Test("a dial to a dead port backs off between attempts instead of spinning")
    func reconnectBackoff() async throws {
        let port = try freeLoopbackPort()
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(port)")
        configuration.minimumReconnectDelay = .milliseconds(200)
        let redis = RedisConnection(configuration: configuration)
        // The second dial may not start until 200 ms after the first one failed.
        let start = ContinuousClock.now
        _ = try? await redis.send(RedisCommand("PING"))
        _ = try? await redis.send(RedisCommand("PING"))
        #expect(ContinuousClock.now - start >= .milliseconds(200))
        #expect(await redis.dialCount == 0)
    }

    @Test("a host that never answers the connect fails within the connect timeout, naming the problem")
    func connectTimeout() async throws {
        let listener = try SaturatedListener()
        try await Task.sleep(for: .milliseconds(100))

        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(listener.port)")
        configuration.connectTimeout = .milliseconds(300)
        let redis = RedisConnection(configuration: configuration)
        let start = ContinuousClock.now
        let error = await #expect(throws: RedisError.self) { try await redis.connect() }
        withExtendedLifetime(listener) {}
        // A hang would never end; the bound is loose because a loaded CI machine took over 3 s
        // to report a 300 ms timeout.
        #expect(ContinuousClock.now - start < .seconds(20))
        #expect(error?.kind == .connectionFailed)
        #expect(error?.message.contains("cannot connect to Redis") == true, "\(String(describing: error))")
    }
}

@Suite("Authentication")
struct RedisAuthenticationTests {
    @Test("AUTH with an ACL user name and password from the URL")
    func aclUser() async throws {
        let admin = try await TestRedis.connection()
        let user = uniqueName("user")
        try await admin.send(RedisCommand("ACL SETUSER", [.string(user), "on", ">s3cret-pass", "~*", "+@all"]))
        let base = try await TestRedis.sharedURL()
        let authenticated = try RedisConnection(
            url: base.replacingOccurrences(of: "redis://", with: "redis://\(user):s3cret-pass@"))
        #expect(try await authenticated.send(RedisCommand("ACL WHOAMI")).string == user)
    }

    @Test("a wrong password fails with WRONGPASS and the password appears in no message")
    func wrongPassword() async throws {
        let admin = try await TestRedis.connection()
        let user = uniqueName("user")
        try await admin.send(RedisCommand("ACL SETUSER", [.string(user), "on", ">right-one", "~*", "+@all"]))
        let base = try await TestRedis.sharedURL()
        let url = base.replacingOccurrences(of: "redis://", with: "redis://\(user):Wr0ngPassw0rd@")
        let redis = try RedisConnection(url: url)
        #expect(!redis.configuration.redactedURL.contains("Wr0ngPassw0rd"))
        await #expect {
            try await redis.send(RedisCommand("PING"))
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.prefix == .wrongPass && error.message.contains("check the user name and password")
                && !error.description.contains("Wr0ngPassw0rd") && error.description.contains("***")
        }
    }

    @Test("SELECT picks the database named in the URL")
    func selectDatabase() async throws {
        let base = try await TestRedis.sharedURL()
        let redis = try RedisConnection(url: base + "/3")
        let key = uniqueName("db")
        try await redis.send(RedisCommand("SET", [.string(key), "3"]))
        let other = try RedisConnection(url: base + "/0")
        #expect(try await other.send(RedisCommand("EXISTS", [.string(key)])) == .integer(0))
    }
}
