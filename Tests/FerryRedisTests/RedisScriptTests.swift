import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@Suite("Lua scripts by EVALSHA, and function libraries by FCALL")
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
        let own = try await OwnRedis()
        let redis = own.connection
        try await redis.send(RedisCommand("SCRIPT FLUSH"))
        let reply = try await redis.run(script, keys: ["k"], arguments: [2, 3])
        #expect(reply == .array([.bulk(Array("k".utf8)), .integer(5)]))

        try await redis.send(RedisCommand("SCRIPT FLUSH"))
        try await expectPipelineRuns(script, on: redis)
    }

    /// Two calls of `script` in one pipeline around a `PING` each answer as they would alone.
    func expectPipelineRuns(_ script: RedisScript, on redis: RedisConnection) async throws {
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

    /// A Redis server for one test (its scripts and functions flushed or loaded by the test
    /// alone), and a connection to it; the server stops when the test lets go of it.
    struct OwnRedis {
        let server: RedisServerProcess
        let connection: RedisConnection

        init() async throws {
            server = try await RedisServerProcess()
            connection = try RedisConnection(url: server.url)
        }
    }

    /// The script above as the function of `library` (``library(family:salt:)``).
    func echoSum(in library: RedisFunctionLibrary) -> RedisScript {
        RedisScript(name: "echo_sum", source: script.source, library: library)
    }

    /// A library of one function, `<family>_echo_sum_<version>`, as the script above; `salt`
    /// makes another version of it.
    static func library(family: String, salt: String = "") -> RedisFunctionLibrary {
        RedisFunctionLibrary(
            family: family,
            template: """
                #!lua name=\(family)_V
                -- \(salt)
                local function sum(a, b) return tonumber(a) + tonumber(b) end
                redis.register_function{function_name = '\(family)_echo_sum_V', flags = {'allow-oom'},
                callback = function(keys, args) return {keys[1], sum(args[1], args[2])} end}
                """,
            placeholder: "V")
    }

    @Test(
        "a library's script is called with FCALL; a missing library (a first call, FUNCTION FLUSH) is loaded and the call goes again, alone and in a pipeline"
    )
    func functionLibraryLoadedOnDemand() async throws {
        let own = try await OwnRedis()
        let redis = own.connection
        let library = Self.library(family: "lib")
        let script = echoSum(in: library)
        #expect(script.command(keys: ["k"], arguments: [2, 3]).name == "FCALL")
        #expect(library.scriptName(ofFunction: script.functionName ?? "") == "echo_sum")
        #expect(try await redis.run(script, keys: ["k"], arguments: [2, 3]) == .array([.bulk(Array("k".utf8)), .integer(5)]))

        try await redis.send(RedisCommand("FUNCTION FLUSH"))
        try await expectPipelineRuns(script, on: redis)
        let stats = try await redis.send(RedisCommand("INFO", ["commandstats"])).string ?? ""
        // Three calls met a missing library (the first, and both in the pipeline), and went again.
        #expect(stats.contains("cmdstat_fcall:calls=6,") && stats.contains("failed_calls=3"), "\(stats)")
        #expect(stats.contains("cmdstat_function|load:calls=2,"), "one load for the pipeline's two calls: \(stats)")
        #expect(!stats.contains("cmdstat_eval"), "no script went by EVAL: \(stats)")
    }

    @Test(
        "a connection that loads its library leaves at most four of its family in Redis, its own among them, and no other family's"
    )
    func oldLibrariesPruned() async throws {
        let own = try await OwnRedis()
        let redis = own.connection
        let other = Self.library(family: "other")
        try await redis.send(RedisCommand("FUNCTION LOAD", [.string(other.code)]))
        var last = other
        for release in 1...6 {
            last = Self.library(family: "lib", salt: "release \(release)")
            let script = echoSum(in: last)
            #expect(try await redis.run(script, keys: ["k"], arguments: [1, 2]).array?.last == .integer(3))
        }
        let listed = try await redis.send(RedisCommand("FUNCTION LIST")).array ?? []
        let names = listed.compactMap { $0.array?[1].string }
        #expect(names.filter { $0.hasPrefix("lib_") }.count == RedisFunctionLibrary.keptVersions, "\(names)")
        #expect(names.contains(last.name) && names.contains(other.name), "\(names)")
    }

    @Test(
        "a user whose ACL allows EVALSHA but neither FCALL nor FUNCTION LOAD still runs a library's scripts, by EVAL then EVALSHA"
    )
    func refusedLibraryFallsBackToScripts() async throws {
        let server = try await RedisServerProcess()
        let admin = try RedisConnection(url: server.url)
        for (user, commands) in [("no-load", ["+fcall"]), ("no-fcall", ["+function|load", "+function|list"])] {
            try await admin.send(
                RedisCommand(
                    "ACL SETUSER",
                    [.string(user), "on", ">pw", "~*", "resetchannels", "-@all", "+evalsha", "+eval", "+info"]
                        + commands.map { .string($0) }))
            let redis = try RedisConnection(url: server.url.replacingOccurrences(of: "redis://", with: "redis://\(user):pw@"))
            let script = echoSum(in: Self.library(family: user))
            for round in 1...3 {
                #expect(
                    try await redis.run(script, keys: ["k"], arguments: [.integer(Int64(round)), 1]).array?.last
                        == .integer(Int64(round + 1)))
            }
        }
        // A key the user may not touch is refused as a key, not taken for a refused library.
        try await admin.send(
            RedisCommand("ACL SETUSER", ["keys-a", "on", ">pw", "~a*", "resetchannels", "-@all", "+fcall", "+function|load"]))
        let limited = try RedisConnection(url: server.url.replacingOccurrences(of: "redis://", with: "redis://keys-a:pw@"))
        let keyed = echoSum(in: Self.library(family: "keys"))
        await #expect {
            try await limited.run(keyed, keys: ["b"], arguments: [1, 1])
        } throws: { ($0 as? RedisError)?.prefix == .noPerm }
        #expect(try await limited.run(keyed, keys: ["a"], arguments: [1, 1]).array?.last == .integer(2))
        let stats = try await admin.send(RedisCommand("INFO", ["commandstats"])).string ?? ""
        // Each user: the refused call, EVAL once, then EVALSHA for the other two rounds.
        #expect(stats.contains("cmdstat_evalsha:calls=4,"), "\(stats)")
        #expect(stats.contains("cmdstat_eval:calls=2,"), "\(stats)")
        // Run: no-load's first call (its library missing), keys-a's call on `a` and its retry after
        // the load. Refused by the ACL before running: no-fcall's call, keys-a's call on `b`.
        #expect(stats.contains("cmdstat_fcall:calls=3,") && stats.contains("rejected_calls=2"), "\(stats)")

    }
}
