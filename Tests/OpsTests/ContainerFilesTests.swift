import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// No Docker engine runs here, so the container files are parsed and their promises checked.
@Suite("Container files")
struct ContainerFilesTests {
    @Test("ops/Dockerfile parses; a slim runtime stage runs the release binary as non-root through tini")
    func dockerfile() async throws {
        let script = """
            import json, sys
            from dockerfile_parse import DockerfileParser
            parser = DockerfileParser(path=sys.argv[1])
            print(json.dumps(parser.structure))
            """
        let result = try await runPython(script, [repositoryRoot.appending(path: "ops/Dockerfile").path()])
        #expect(result.status == 0, "\(result.standardError)")
        let instructions = try #require(try JSONSerialization.jsonObject(with: Data(result.outputBytes)) as? [[String: Any]])
        let steps = instructions.map { (($0["instruction"] as? String) ?? "", ($0["value"] as? String) ?? "") }
        let stages = steps.filter { $0.0 == "FROM" }.map(\.1)
        #expect(stages.count == 2, "multi-stage: build, then runtime")
        #expect(stages.first?.hasPrefix("swift:") == true)
        #expect(stages.last?.hasPrefix("debian:bookworm-slim") == true, "the runtime image carries no toolchain")
        let runtime = steps.drop { !($0.0 == "FROM" && $0.1.contains("runtime")) }
        let runtimeRun = runtime.filter { $0.0 == "RUN" }.map(\.1).joined(separator: " ")
        for library in ["libhiredis0.14", "libcurl4", "tini"] {
            #expect(runtimeRun.contains(library), "the runtime installs \(library)")
        }
        #expect(!runtimeRun.contains("-dev"), "no development packages in the runtime image")
        #expect(
            runtime.contains {
                $0.0 == "COPY" && $0.1.contains("--from=build") && $0.1.contains("/usr/local/bin/ferry ")
                    && $0.1.contains("/usr/local/bin/ferry-exec-guard")
            })
        #expect(runtime.contains { $0.0 == "USER" && $0.1 != "root" })
        #expect(runtime.contains { $0.0 == "ENTRYPOINT" && $0.1.contains("tini") && $0.1.contains("ferry") })
        #expect(runtime.contains { $0.0 == "ENV" && $0.1.contains("FERRY_ADMIN_PORT=9090") }, "admin endpoints on in the image")
        #expect(runtime.contains { $0.0 == "EXPOSE" && $0.1 == "9090" })
        let build = steps.prefix { !($0.0 == "FROM" && $0.1.contains("runtime")) }
        #expect(build.contains { $0.0 == "RUN" && $0.1.contains("--product ferry") && $0.1.contains("-c release") })
    }

    @Test(
        "docker-compose.yml: Redis with ops/redis (AOF, noeviction, ACL); scalable workers with a stop grace longer than their shutdown grace; push handler, Prometheus, TLS sidecar"
    )
    func composePromises() async throws {
        let script = """
            import json, sys, yaml
            print(json.dumps(yaml.safe_load(open(sys.argv[1]))))
            """
        let result = try await runPython(script, [repositoryRoot.appending(path: "docker-compose.yml").path()])
        #expect(result.status == 0, "\(result.standardError)")
        let compose = try #require(try JSONSerialization.jsonObject(with: Data(result.outputBytes)) as? [String: Any])
        let services = try #require(compose["services"] as? [String: [String: Any]])
        let redis = try #require(services["redis"])
        #expect((redis["command"] as? [String]) == ["redis-server", "/usr/local/etc/redis/redis.conf"])
        let mounts = (redis["volumes"] as? [String]) ?? []
        #expect(
            mounts.contains { $0.hasPrefix("./ops/redis/redis.conf:") }
                && mounts.contains { $0.hasPrefix("./ops/redis/users.acl:") })
        let redisConf = try String(contentsOf: repositoryRoot.appending(path: "ops/redis/redis.conf"), encoding: .utf8)
        for setting in [
            "appendonly yes", "appendfsync always", "maxmemory-policy noeviction", "aclfile /usr/local/etc/redis/users.acl",
        ] {
            #expect(redisConf.split(separator: "\n").contains { $0 == setting }, "redis.conf has \(setting)")
        }
        func seconds(_ text: Any?) -> Int? { (text as? String).flatMap { Int($0.dropLast()) } }
        for name in ["worker", "push-worker", "worker-tls"] {
            let worker = try #require(services[name], "\(name)")
            #expect(worker["container_name"] == nil && worker["ports"] == nil, "\(name): no fixed name or port, so it scales")
            #expect((worker["build"] as? [String: Any])?["dockerfile"] as? String == "ops/Dockerfile")
            let environment = try #require(worker["environment"] as? [String: Any])
            #expect(
                (environment["FERRY_REDIS_URL"] as? String)?.hasPrefix("redis://worker:") == true,
                "\(name) uses the worker ACL user")
            #expect(environment["FERRY_QUEUE"] != nil && (environment["FERRY_EXEC"] != nil || environment["FERRY_PUSH"] != nil))
            #expect(environment["FERRY_ADMIN_PORT"] as? String == "9090")
            let grace = try #require(seconds(environment["FERRY_SHUTDOWN_GRACE"]))
            let stop = try #require(seconds(worker["stop_grace_period"]))
            #expect(stop > grace, "\(name)")
        }
        let push = try #require(services["push-worker"]?["environment"] as? [String: Any])
        #expect(push["FERRY_PUSH"] as? String == "http://push-handler:8080/jobs" && push["FERRY_GROUP"] as? String == "push")
        #expect(services["push-handler"] != nil)
        let prometheus = try #require(services["prometheus"])
        #expect(((prometheus["volumes"] as? [String]) ?? []).contains { $0.hasPrefix("./ops/prometheus:") })
        #expect(services["stunnel"]?["profiles"] as? [String] == ["tls"])
        #expect(
            services["worker-tls"]?["network_mode"] as? String == "service:stunnel",
            "plain RESP stays inside the sidecar's network")
    }

    @Test(
        "docker-compose.yml's worker and producer run as composed against a Redis with ops/redis/users.acl, and the health check passes (no Docker engine here: the image is not built; this build's ferry runs each service's command and environment)"
    )
    func composeServicesRunAsComposed() async throws {
        let result = try await runPython(
            "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            [repositoryRoot.appending(path: "docker-compose.yml").path()])
        let compose = try #require(try JSONSerialization.jsonObject(with: Data(result.outputBytes)) as? [String: Any])
        let services = try #require(compose["services"] as? [String: [String: Any]])
        let server = try await RedisServerProcess(
            extraArguments: ["--aclfile", repositoryRoot.appending(path: "ops/redis/users.acl").path()])
        defer { Task { await server.stop() } }
        let adminPort = try freeLoopbackPort()
        // What a container sees, moved to this host: Redis at the test server, `$$` unescaped.
        func environment(_ service: String) throws -> [String: String] {
            let composed = try #require(services[service]?["environment"] as? [String: String], "\(service)")
            var environment = ProcessInfo.processInfo.environment
            for (name, value) in composed {
                environment[name] = value.replacingOccurrences(of: "@redis:6379", with: "@127.0.0.1:\(server.port)")
                    .replacingOccurrences(of: "$$", with: "$").replacingOccurrences(of: "9090", with: "\(adminPort)")
            }
            return environment
        }
        let log = FileManager.default.temporaryDirectory.appending(path: uniqueName("compose")).path()
        let worker = try ChildProcess(
            try ferryExecutable(), try #require(services["worker"]?["command"] as? [String]),
            environment: try environment("worker"), standardOutput: log, standardError: log + ".err")
        defer { worker.signal(SIGKILL) }

        let check = try #require((services["worker"]?["healthcheck"] as? [String: Any])?["test"] as? [String])
        #expect(check.first == "CMD")
        let healthy = await eventually(.seconds(20)) {
            let arguments = check.dropFirst(2).map { $0.replacingOccurrences(of: "9090", with: "\(adminPort)") }
            return try await runProcess(try executable(named: check[1]), Array(arguments)).status == 0
        }
        #expect(healthy, "the worker's health check passes: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")

        let producer = try #require(services["producer"])
        let published = try await runProcess(
            try ferryExecutable(), try #require(producer["command"] as? [String]), environment: try environment("producer"))
        #expect(published.status == 0, "\(published.standardError)")
        #expect(published.lines.count == 10)

        let admin = RedisConnection(
            configuration: try RedisConfiguration(url: "redis://ferry-admin:admin-change-me@127.0.0.1:\(server.port)"))
        let jobs = QueueKeys(queue: try QueueName(try environment("worker")["FERRY_QUEUE"] ?? "")).jobs
        #expect(
            await eventually {
                let pending = try await admin.send(RedisCommand("XPENDING", [.string(jobs), "workers"])).array?.first?.integer
                let length = try await admin.send(RedisCommand("XLEN", [.string(jobs)])).integer
                let handled = ((try? String(contentsOfFile: log + ".err", encoding: .utf8)) ?? "").components(
                    separatedBy: "handled send-welcome")
                return pending == 0 && length == 10 && handled.count - 1 == 10
            }, "every example job was handled")
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(!output.contains("NOAUTH") && !output.contains("WRONGPASS") && !output.contains("NOPERM"), "\(output)")
    }
}
