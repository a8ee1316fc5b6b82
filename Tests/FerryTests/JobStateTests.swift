import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@testable import Ferry

@Suite("Job states")
struct JobStateTests {
    @Test(
        "terminal states move nowhere but a redrive of a dead job and a retry of a cancelled one; the others may always be cancelled or deleted"
    )
    func transitionTable() {
        #expect(Set(JobState.allCases.filter(\.isTerminal)) == [.succeeded, .dead, .cancelled, .deleted])
        for state in JobState.allCases where state.isTerminal {
            #expect(state.successors == (state == .dead || state == .cancelled ? [.queued] : []), "\(state)")
        }
        for state in JobState.allCases where !state.isTerminal {
            #expect(state.mayMove(to: .cancelled) && state.mayMove(to: .deleted) && state.mayMove(to: .dead), "\(state)")
            #expect(state == .scheduled || !state.mayMove(to: .queued), "only a redrive, or coming due, queues a job")
        }
        #expect(JobState.running.mayMove(to: .retrying) && !JobState.queued.mayMove(to: .retrying))
    }

    @Test("every state a script or the worker writes is a JobState, and the wire format documents each")
    func writtenStatesAreKnown() throws {
        let scripts = repositoryRoot.appending(path: "Sources/Ferry/Scripts")
        var written: Set<String> = []
        for name in try FileManager.default.contentsOfDirectory(atPath: scripts.path()) where name.hasSuffix(".lua") {
            let text = try String(contentsOf: scripts.appending(path: name), encoding: .utf8)
            // set_status(key, index, group, job_id, entry_id, '<state>', ...) and outcomes passed as values.
            for match in text.matches(of: /set_status\([^,]+, [^,]+, [^,]+, [^,]+, [^,]+, '(\w+)'/) {
                written.insert(String(match.1))
            }
            for match in text.matches(of: /outcome == '(\w+)'/) { written.insert(String(match.1)) }
            for match in text.matches(of: /\bstate = '(\w+)'/) { written.insert(String(match.1)) }
        }
        #expect(written.isSuperset(of: ["queued", "running", "succeeded", "retrying", "dead", "deleted"]), "\(written)")
        #expect(written.allSatisfy { JobState(rawValue: $0) != nil }, "\(written)")
        let wireFormat = try String(contentsOf: repositoryRoot.appending(path: "docs/wire-format.md"), encoding: .utf8)
        for state in JobState.allCases { #expect(wireFormat.contains("`\(state.rawValue)`"), "\(state) documented") }
    }
}

@Suite("Shared script parts")
struct ScriptPreludeTests {
    @Test(
        "the transitions of a delivered job check ownership through the prelude's one owned() (in the entry's lane), written once"
    )
    func ownershipCheckedOnce() throws {
        let embedded = [
            ("ack", EmbeddedLuaScripts.ack), ("begin", EmbeddedLuaScripts.begin), ("complete", EmbeddedLuaScripts.complete),
            ("deadletter", EmbeddedLuaScripts.deadletter), ("delay", EmbeddedLuaScripts.delay),
        ]
        for (name, source) in embedded {
            #expect(source.contains("local function owned(") && source.contains("owned_lane(KEYS[1]"), "\(name)")
            #expect(!source.contains("\n-- ferry:prelude\n"), "\(name): the marker line is replaced")
            let file = try String(
                contentsOf: repositoryRoot.appending(path: "Sources/Ferry/Scripts/\(name).lua"), encoding: .utf8)
            #expect(
                !file.contains("[2] == ARGV[2]") && !file.contains("[2] ~= ARGV[2]"), "\(name) has no ownership check of its own")
        }
    }
}

extension ScriptPreludeTests {
    @Test("the scripts' table of allowed moves is JobState's, read from the prelude as Redis runs it")
    func transitionTableMatches() async throws {
        let prelude = try String(
            contentsOf: repositoryRoot.appending(path: "Sources/Ferry/Scripts/_prelude.lua"), encoding: .utf8)
        let redis = try await TestRedis.connection()
        let reply = try await redis.send(
            RedisCommand(
                "EVAL",
                [
                    .string(
                        prelude
                            + "\nlocal out = {}\nfor _, from in ipairs(ARGV) do for _, to in ipairs(ARGV) do if may_move(from, to) then out[#out + 1] = from .. '>' .. to end end end\nreturn out"
                    ), 0,
                ] + JobState.allCases.map { .string($0.rawValue) }))
        let lua = Set(reply.array?.compactMap(\.string) ?? [])
        let swift = Set(JobState.allCases.flatMap { from in from.successors.map { "\(from.rawValue)>\($0.rawValue)" } })
        #expect(lua == swift, "only in Lua: \(lua.subtracting(swift)); only in Swift: \(swift.subtracting(lua))")
    }

    @Test(
        "a running record for an entry whose status has moved on is refused and reported; a job id used again by a new entry starts afresh"
    )
    func staleTransitionRefused() async throws {
        let setup = try await TestQueue("refuse")
        let key = setup.keys.jobStatus(jobID: "again")
        try await setup.redis.send(
            RedisCommand("HSET", [.string(key), "workers.state", "succeeded", "entry_id", "1700000000000-0", "job_id", "again"]))
        func start(_ entryID: String) async throws -> RedisReply {
            try await setup.redis.run(
                Worker.startBatchScript, keys: [.string(setup.keys.cancelRequests), .string(key)],
                arguments: [
                    1_700_000_000_500, "c", "workers", .string(setup.keys.statusIndexPrefix), 0, "again", "t", .string(entryID),
                    2, "",
                ])
        }
        let stale = try await start("1700000000000-0")
        #expect(stale.array?.last?.array?.compactMap(\.string) == ["again"], "reported as refused")
        #expect(try await JobStatus.load(jobID: "again", queue: setup.queue, connection: setup.redis)?.state == .succeeded)
        let fresh = try await start("1700000000001-0")
        #expect(fresh.array?.last?.array?.isEmpty == true)
        #expect(try await JobStatus.load(jobID: "again", queue: setup.queue, connection: setup.redis)?.state == .running)
    }
}

extension ScriptPreludeTests {
    @Test(
        "the library's shared parts name each top-level local once, so no part shadows another's function for the scripts loaded after it"
    )
    func partsDoNotShadowEachOther() throws {
        // In the function library every part runs in one scope: a second `local function f` would
        // silently replace the first for every script registered after it (and not under EVAL).
        let scripts = repositoryRoot.appending(path: "Sources/Ferry/Scripts")
        var definedIn: [String: [String]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: scripts.path())
        where name.hasPrefix("_") && name.hasSuffix(".lua") {
            let text = try String(contentsOf: scripts.appending(path: name), encoding: .utf8)
            // `local function f(`, and every name of `local a, b, c = …`.
            for match in text.matches(of: /(?m)^local (?:function )?([A-Za-z_]\w*(?:, *[A-Za-z_]\w*)*)/) {
                for local in match.1.split(separator: ",") {
                    definedIn[local.trimmingCharacters(in: .whitespaces), default: []].append(name)
                }
            }
        }
        #expect(definedIn.count > 10, "the parts were read")
        let repeated = definedIn.filter { $0.value.count > 1 }
        #expect(repeated.isEmpty, "defined more than once: \(repeated)")
    }
}
