import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// ops/redis/users.acl loaded into a real redis-server: each user can do exactly what it must.
@Suite("ops/redis/users.acl")
struct RedisACLTests {
    static let aclPath = repositoryRoot.appending(path: "ops/redis/users.acl").path()

    func url(_ server: RedisServerProcess, user: String, password: String) -> String {
        "redis://\(user):\(password)@127.0.0.1:\(server.port)"
    }

    /// Sends one command as `user`; returns the error prefix Redis answered, or nil on success.
    func refusal(_ connection: RedisConnection, _ name: String, _ arguments: [RedisArgument]) async -> String? {
        do {
            _ = try await connection.send(RedisCommand(name, arguments))
            return nil
        } catch {
            return error.prefix?.rawValue ?? "\(error)"
        }
    }

    @Test("the producer publishes (plain, idempotent and scheduled, by ferry publish) and can do nothing else")
    func producer() async throws {
        let server = try await RedisServerProcess(extraArguments: ["--aclfile", Self.aclPath])
        defer { Task { await server.stop() } }
        let producerURL = url(server, user: "producer", password: "producer-change-me")
        let queue = uniqueName("acl")
        for arguments in [
            ["--type", "t", "--data", "x"], ["--type", "t", "--data", "y", "--idempotency-key", "k-1"],
            ["--type", "t", "--data", "z", "--delay", "1h"],
        ] {
            let result = try await runProcess(try ferryExecutable(), ["publish", queue] + arguments + ["--redis", producerURL])
            #expect(result.status == 0, "\(result.standardError)")
        }
        // A bounded queue (set by an operator) takes the producer's publishes through its script.
        let admin = url(server, user: "ferry-admin", password: "admin-change-me")
        #expect(
            try await runProcess(try ferryExecutable(), ["queue", "set", queue, "--max-depth", "100", "--redis", admin]).status
                == 0)
        let bounded = try await runProcess(
            try ferryExecutable(), ["publish", queue, "--type", "t", "--data", "b", "--count", "2", "--redis", producerURL])
        #expect(bounded.status == 0, "\(bounded.standardError)")
        // So does a quota per key, up to its refusal (which looks through the key's jobs).
        #expect(
            try await runProcess(
                try ferryExecutable(), ["queue", "set", queue, "--max-pending-per-key", "1", "--redis", admin]
            ).status == 0)
        for expected: Int32 in [0, 4] {
            let keyed = try await runProcess(
                try ferryExecutable(), ["publish", queue, "--type", "t", "--key", "u", "--redis", producerURL])
            #expect(keyed.status == expected, "\(keyed.standardError)")
        }
        let producer = RedisConnection(configuration: try RedisConfiguration(url: producerURL))
        let jobs = QueueKeys(queue: try QueueName(queue)).jobs
        #expect(await refusal(producer, "XADD", ["not-ferry", "*", "type", "t"]) == "NOPERM", "only ferry:* keys")
        #expect(await refusal(producer, "XREADGROUP", ["GROUP", "g", "c", "STREAMS", .string(jobs), ">"]) == "NOPERM")
        #expect(await refusal(producer, "XRANGE", [.string(jobs), "-", "+"]) == "NOPERM")
        #expect(await refusal(producer, "DEL", [.string(jobs)]) == "NOPERM")
        #expect(await refusal(producer, "FLUSHALL", []) == "NOPERM")
        #expect(await refusal(producer, "CONFIG", ["GET", "*"]) == "NOPERM")
        #expect(
            await refusal(producer, "EVAL", ["return redis.call('DEL', KEYS[1])", "1", .string(jobs)]) != nil,
            "scripts run with the caller's rights")

        let anonymous = RedisConnection(configuration: try RedisConfiguration(url: server.url))
        #expect(await refusal(anonymous, "PING", []) != nil, "the default user is off")
    }

    @Test("the worker runs jobs, retries, dead-letters and keeps status with its user, and can do nothing else")
    func worker() async throws {
        let server = try await RedisServerProcess(extraArguments: ["--aclfile", Self.aclPath])
        defer { Task { await server.stop() } }
        let queue = uniqueName("acl")
        let adminURL = url(server, user: "ferry-admin", password: "admin-change-me")
        for (data, key) in [("ok", "once"), ("ok", "once"), ("poison", ""), ("flaky", "")] {
            var arguments = [
                "publish", queue, "--type", "t", "--data", data, "--redis",
                url(server, user: "producer", password: "producer-change-me"),
            ]
            if !key.isEmpty { arguments += ["--idempotency-key", key] }
            #expect(try await runProcess(try ferryExecutable(), arguments).status == 0)
        }
        // Limits the jobs wait on (concurrency 1, 20 a second): the worker takes, releases and
        // hands on slots with its user.
        for limit in [["one", "--concurrency", "1"], ["rate", "--rate", "20/s"]] {
            let set = try await runProcess(try ferryExecutable(), ["limit", "set", queue] + limit + ["--redis", adminURL])
            #expect(set.status == 0, "\(set.standardError)")
        }
        let scratch = FileManager.default.temporaryDirectory.appending(path: uniqueName("acl")).path()
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        // poison: exit 65 (dead-letter at once); flaky: fails once (a retry), then succeeds.
        let exec =
            #"d=$(cat); [ "$d" = poison ] && exit 65; if [ "$d" = flaky ] && [ ! -e "$S/f" ]; then touch "$S/f"; exit 75; fi; echo "$d" >> "$S/done""#
        let log = scratch + "/worker.log"
        let worker = try ChildProcess(
            try ferryExecutable(),
            [
                "worker", queue, "--exec", exec, "--pass-env", "S", "--min-backoff", "100ms", "--max-backoff", "100ms", "--lease",
                "2s",
            ],
            environment: ProcessInfo.processInfo.environment.merging([
                "FERRY_REDIS_URL": url(server, user: "worker", password: "worker-change-me"), "S": scratch,
            ]) { $1 }, standardOutput: log, standardError: log + ".err")
        defer { worker.signal(SIGKILL) }
        let admin = RedisConnection(configuration: try RedisConfiguration(url: adminURL))
        let keys = QueueKeys(queue: try QueueName(queue))
        #expect(
            await eventually(.seconds(15)) {
                let done = (try? String(contentsOfFile: scratch + "/done", encoding: .utf8)) ?? ""
                let dead = try await admin.send(RedisCommand("XLEN", [.string(keys.deadLetter)])).integer
                return done.split(separator: "\n").sorted() == ["flaky", "ok"] && dead == 1
            })
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
        let logText = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(!logText.contains("NOPERM"), "no command of the worker was refused")
        // A command refused inside a script fails the script, with an ERR rather than NOPERM, after
        // its earlier writes: every Redis failure shows in the log as redis.error.
        #expect(
            !logText.contains("redis.error"),
            "no Redis failure at all: \(logText.split(separator: "\n").filter { $0.contains("redis.error") }.prefix(2))")
        let counts = try await JobIndex(queue: try QueueName(queue), connection: admin).counts(group: "workers")
        #expect(counts.filter { $0.value > 0 } == [.succeeded: 2, .dead: 1], "every outcome recorded with its status: \(counts)")

        let workerConnection = RedisConnection(
            configuration: try RedisConfiguration(url: url(server, user: "worker", password: "worker-change-me")))
        #expect(await refusal(workerConnection, "SET", ["elsewhere", "x"]) == "NOPERM")
        #expect(await refusal(workerConnection, "FLUSHALL", []) == "NOPERM")
        #expect(await refusal(workerConnection, "KEYS", ["*"]) == "NOPERM")
        #expect(await refusal(workerConnection, "CONFIG", ["SET", "appendonly", "no"]) == "NOPERM")
        #expect(await refusal(workerConnection, "ACL", ["LIST"]) == "NOPERM")
        #expect(await refusal(workerConnection, "XGROUP", ["DESTROY", .string(keys.jobs), "workers"]) == "NOPERM")

        // The operator's user runs the inspection and dead-letter tools.
        let inspect = try await runProcess(try ferryExecutable(), ["inspect", queue, "--redis", adminURL])
        #expect(inspect.status == 0, "\(inspect.standardError)")
        let list = try await runProcess(try ferryExecutable(), ["dlq", "list", queue, "--redis", adminURL])
        #expect(list.status == 0, "\(list.standardError)")
        #expect(list.standardOutput.contains("permanent_failure"))
        #expect(await refusal(admin, "FLUSHALL", []) == "NOPERM")
    }

    @Test("KEDA's user runs every command of KEDA's redis-streams scaler (INFO first) and nothing that writes")
    func keda() async throws {
        let server = try await RedisServerProcess(extraArguments: ["--aclfile", Self.aclPath])
        defer { Task { await server.stop() } }
        let queue = uniqueName("keda")
        let jobs = QueueKeys(queue: try QueueName(queue)).jobs
        let admin = RedisConnection(
            configuration: try RedisConfiguration(url: url(server, user: "ferry-admin", password: "admin-change-me")))
        try await admin.send(RedisCommand("XADD", [.string(jobs), "*", "type", "t", "v", "1"]))
        try await admin.send(RedisCommand("XGROUP", ["CREATE", .string(jobs), "workers", "0"]))
        let keda = RedisConnection(
            configuration: try RedisConfiguration(url: url(server, user: "keda", password: "keda-change-me")))
        // What the scaler sends, in its order (HELLO with RESP2 here, which this client reads): go-redis's handshake (its CLIENT SETINFO, new in
        // Redis 7.2, may fail: go-redis ignores that), PING, then per poll INFO
        // (Redis 7 or later for lag), XINFO GROUPS, and XLEN or XPENDING by the trigger's mode.
        for (name, arguments) in [
            ("HELLO", ["2", "AUTH", "keda", "keda-change-me"]), ("PING", []), ("INFO", []), ("XINFO", ["GROUPS", .string(jobs)]),
            ("XLEN", [.string(jobs)]),
            ("XPENDING", [.string(jobs), "workers"]),
        ] as [(String, [RedisArgument])] {
            #expect(await refusal(keda, name, arguments) == nil, "\(name)")
        }
        let info = try await keda.send(RedisCommand("INFO", ["server"]))
        #expect(info.string?.contains("redis_version:7") == true || info.string?.contains("redis_version:8") == true)
        for (name, arguments) in [
            ("XADD", [.string(jobs), "*", "type", "t"]),
            ("XREADGROUP", ["GROUP", "workers", "k", "STREAMS", .string(jobs), ">"]),
            ("XACK", [.string(jobs), "workers", "0-1"]), ("DEL", [.string(jobs)]), ("XLEN", ["elsewhere"]),
            ("CONFIG", ["GET", "*"]), ("KEYS", ["*"]), ("EVAL", ["return 1", "0"]),
        ] as [(String, [RedisArgument])] {
            #expect(await refusal(keda, name, arguments) == "NOPERM", "\(name)")
        }
    }
}
