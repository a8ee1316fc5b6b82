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
        #expect(runtime.contains { $0.0 == "COPY" && $0.1.contains("--from=build") && $0.1.hasSuffix("/usr/local/bin/ferry") })
        #expect(runtime.contains { $0.0 == "USER" && $0.1 != "root" })
        #expect(runtime.contains { $0.0 == "ENTRYPOINT" && $0.1.contains("tini") && $0.1.contains("ferry") })
        let build = steps.prefix { !($0.0 == "FROM" && $0.1.contains("runtime")) }
        #expect(build.contains { $0.0 == "RUN" && $0.1.contains("--product ferry") && $0.1.contains("-c release") })
    }

    @Test("docker-compose.yml: Redis with AOF and noeviction; a scalable worker with a stop grace longer than its shutdown grace")
    func composePromises() async throws {
        let script = """
            import json, sys, yaml
            print(json.dumps(yaml.safe_load(open(sys.argv[1]))))
            """
        let result = try await runPython(script, [repositoryRoot.appending(path: "docker-compose.yml").path()])
        #expect(result.status == 0, "\(result.standardError)")
        let compose = try #require(try JSONSerialization.jsonObject(with: Data(result.outputBytes)) as? [String: Any])
        let services = try #require(compose["services"] as? [String: [String: Any]])
        let redisCommand = (services["redis"]?["command"] as? [String])?.joined(separator: " ") ?? ""
        #expect(redisCommand.contains("--appendonly yes") && redisCommand.contains("--maxmemory-policy noeviction"))
        let worker = try #require(services["worker"])
        #expect(worker["container_name"] == nil && worker["ports"] == nil, "no fixed name or port, so it scales")
        #expect((worker["build"] as? [String: Any])?["dockerfile"] as? String == "ops/Dockerfile")
        let environment = try #require(worker["environment"] as? [String: Any])
        #expect(environment["FERRY_REDIS_URL"] as? String == "redis://redis:6379")
        #expect(environment["FERRY_QUEUE"] != nil && environment["FERRY_EXEC"] != nil)
        func seconds(_ text: Any?) -> Int? { (text as? String).flatMap { Int($0.dropLast()) } }
        let grace = try #require(seconds(environment["FERRY_SHUTDOWN_GRACE"]))
        let stop = try #require(seconds(worker["stop_grace_period"]))
        #expect(stop > grace)
    }
}
