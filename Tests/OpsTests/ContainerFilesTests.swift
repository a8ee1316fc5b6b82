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
}
