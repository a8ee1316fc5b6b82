import FerryRedis
import FerryTestSupport
import Synchronization
import Testing

@Suite("A pipeline's first replies handed on early")
struct RedisEarlyRepliesTests {
    /// A script that keeps Redis busy (a server of the test's own) for `ARGV[1]` microseconds; its second argument (64 KB)
    /// makes Redis read it in parts, after it has answered the commands before it.
    static let busy = RedisCommand(
        "EVAL",
        [
            """
            local t0 = redis.call('TIME')
            repeat
              local t = redis.call('TIME')
            until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) >= tonumber(ARGV[1])
            return 1
            """,
            "0", "2000000", .bytes([UInt8](repeating: 120, count: 65_536)),
        ])

    @Test("the first replies arrive while Redis still runs the commands after them; all come back")
    func firstRepliesBeforeTheRest() async throws {
        // A Redis of its own: the script holds it for two seconds, which would stall other tests.
        let server = try await RedisServerProcess()
        defer { Task { await server.stop() } }
        let redis = try RedisConnection(url: server.url)
        let key = uniqueName("early")
        let early = Mutex<(replies: [RedisReply], at: ContinuousClock.Instant)?>(nil)
        let replies = try await redis.pipeline(
            [RedisCommand("SET", [.string(key), "v"]), RedisCommand("GET", [.string(key)]), Self.busy],
            timeout: .seconds(30),
            early: RedisConnection.EarlyReplies(count: 2) { replies in
                early.withLock { $0 = (replies, .now) }
            })
        let returned = ContinuousClock.now
        #expect(replies == [.status("OK"), .bulk(Array("v".utf8)), .integer(1)])
        let delivered = try #require(early.withLock { $0 })
        #expect(delivered.replies == [.status("OK"), .bulk(Array("v".utf8))])
        // The script ran two seconds after Redis answered the first two commands.
        #expect(returned - delivered.at >= .seconds(1))
    }

    @Test("an error among the first replies is not handed on early; the pipeline still returns it")
    func errorNotHandedOn() async throws {
        let redis = try await TestRedis.connection()
        let delivered = Atomic(false)
        let replies = try await redis.pipeline(
            [RedisCommand("NOSUCHCOMMAND"), RedisCommand("PING")],
            early: RedisConnection.EarlyReplies(count: 1) { _ in delivered.store(true, ordering: .relaxed) })
        #expect(replies[0].errorMessage != nil)
        #expect(replies[1] == .status("PONG"))
        let wasDelivered = delivered.load(ordering: .relaxed)
        #expect(!wasDelivered)
    }
}
