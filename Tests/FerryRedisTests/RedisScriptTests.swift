import FerryRedis
import FerryTestSupport
import Testing

@Suite("Lua scripts by EVALSHA")
struct RedisScriptTests {
    let script = RedisScript(name: "echo-sum", source: "return {KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2])}")

    @Test("the SHA1 matches what SCRIPT LOAD computes")
    func sha1MatchesRedis() async throws {
        let redis = try await TestRedis.connection()
        let loaded = try await redis.send(RedisCommand("SCRIPT LOAD", [.string(script.source)]))
        #expect(loaded.string == script.sha1)
    }

    @Test("a script missing from the cache (SCRIPT FLUSH) runs through the EVAL fallback, alone and in a pipeline")
    func noScriptFallback() async throws {
        let server = try await RedisServerProcess()
        let redis = try RedisConnection(url: server.url)
        try await redis.send(RedisCommand("SCRIPT FLUSH"))
        let reply = try await redis.run(script, keys: ["k"], arguments: [2, 3])
        #expect(reply == .array([.bulk(Array("k".utf8)), .integer(5)]))

        try await redis.send(RedisCommand("SCRIPT FLUSH"))
        let replies = try await redis.pipeline([
            script.command(keys: ["a"], arguments: [1, 1]),
            RedisCommand("PING"),
            script.command(keys: ["b"], arguments: [10, 20]),
        ])
        #expect(replies == [.array([.bulk([97]), .integer(2)]), .status("PONG"), .array([.bulk([98]), .integer(30)])])
    }

    @Test("an error raised inside a script keeps its prefix")
    func scriptErrorPrefix() async throws {
        let redis = try await TestRedis.connection()
        let failing = RedisScript(name: "fail", source: "return redis.error_reply('NOGROUP no such group')")
        await #expect {
            try await redis.run(failing, keys: [], arguments: [])
        } throws: { error in
            (error as? RedisError)?.prefix == .noGroup
        }
    }
}
