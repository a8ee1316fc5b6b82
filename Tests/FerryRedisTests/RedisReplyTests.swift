import FerryRedis
import FerryTestSupport
import Testing

@Suite("Replies are copied into Swift values")
struct RedisReplyTests {
    @Test("every RESP2 reply type arrives as its enum case")
    func everyReplyType() async throws {
        let redis = try await TestRedis.connection()
        let key = uniqueName("reply")
        let replies = try await redis.pipeline([
            RedisCommand("SET", [.string(key), "value"]),
            RedisCommand("INCR", [.string(key + ":n")]),
            RedisCommand("GET", [.string(key)]),
            RedisCommand("GET", [.string(key + ":missing")]),
            RedisCommand("RPUSH", [.string(key + ":list"), "a", "b"]),
            RedisCommand("LRANGE", [.string(key + ":list"), "0", "-1"]),
            RedisCommand("NOSUCHCOMMAND"),
            RedisCommand("SET", [.string(key + ":empty"), ""]),
            RedisCommand("GET", [.string(key + ":empty")]),
            RedisCommand("LRANGE", [.string(key + ":missing"), "0", "-1"]),
        ])
        #expect(replies[0] == .status("OK"))
        #expect(replies[1] == .integer(1))
        #expect(replies[2] == .bulk(Array("value".utf8)))
        #expect(replies[3] == .null)
        #expect(replies[4] == .integer(2))
        #expect(replies[5] == .array([.bulk([97]), .bulk([98])]))
        guard case .error(let message) = replies[6] else {
            Issue.record("expected an error reply, got \(replies[6])")
            return
        }
        #expect(message.hasPrefix("ERR unknown command"))
        #expect(replies[8] == .bulk([]))
        #expect(replies[9] == .array([]))
    }

    @Test("nested arrays (XRANGE) keep their structure")
    func nestedArrays() async throws {
        let redis = try await TestRedis.connection()
        let key = uniqueName("nested")
        let id = try await redis.send(RedisCommand("XADD", [.string(key), "*", "f", "v"])).string
        let reply = try await redis.send(RedisCommand("XRANGE", [.string(key), "-", "+"]))
        #expect(reply == .array([.array([.bulk(Array(id!.utf8)), .array([.bulk([102]), .bulk([118])])])]))
    }

    @Test("arguments and bulk replies are binary safe: NUL, spaces, % and invalid UTF-8 round-trip")
    func binarySafety() async throws {
        let redis = try await TestRedis.connection()
        let key: [UInt8] = Array("bin %s %n {x} ".utf8) + [0, 10, 13] + Array(uniqueName().utf8)
        let value: [UInt8] = (0...255).map(UInt8.init) + [0xFF, 0xFE, 0x00, 0xC3]
        try await redis.send(RedisCommand("SET", [.bytes(key), .bytes(value)]))
        let reply = try await redis.send(RedisCommand("GET", [.bytes(key)]))
        #expect(reply.bytes == value)
        #expect(reply.string == nil, "invalid UTF-8 is not forced into a String")
    }

    @Test("a pipeline of 10,000 commands returns 10,000 replies in order")
    func tenThousandCommandPipeline() async throws {
        let redis = try await TestRedis.connection()
        let key = uniqueName("pipeline")
        let commands = Array(repeating: RedisCommand("INCR", [.string(key)]), count: 10_000)
        let replies = try await redis.pipeline(commands)
        #expect(replies.count == 10_000)
        #expect(replies.enumerated().allSatisfy { $0.element == .integer(Int64($0.offset + 1)) })
    }
}
