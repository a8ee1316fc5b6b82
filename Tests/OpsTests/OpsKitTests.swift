import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// Prometheus, Grafana and Kubernetes files, validated offline with the tools their users run.
@Suite("Ops kit: Prometheus, Grafana, Kubernetes, example handler")
struct OpsKitTests {
    /// Every metric name the worker emits, read from the sources that register them.
    static func emittedMetricNames() throws -> Set<String> {
        var names: Set<String> = []
        for file in [
            "Sources/Ferry/WorkerMetrics.swift", "Sources/FerryAdmin/QueueSampler.swift", "Sources/FerryCLI/WorkerCommand.swift",
        ] {
            let text = try String(contentsOf: repositoryRoot.appending(path: file), encoding: .utf8)
            for match in text.matches(of: /label: "(ferry_[a-z_]+)"/) { names.insert(String(match.output.1)) }
        }
        return names
    }

    /// The metric names a PromQL expression uses (histogram suffixes removed).
    static func metricNames(in expression: String) -> Set<String> {
        Set(
            expression.matches(of: /ferry_[a-z_]+/).map { match in
                var name = String(match.output)
                for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) { name.removeLast(suffix.count) }
                return name
            })
    }

    func promtool(_ arguments: [String]) async throws -> ProcessResult {
        try await runProcess(try executable(named: "promtool"), arguments)
    }

    @Test("prometheus.yml and alerts.yml pass promtool; the alert unit tests pass")
    func promtoolChecks() async throws {
        let directory = repositoryRoot.appending(path: "ops/prometheus").path()
        for arguments in [
            ["check", "config", directory + "/prometheus.yml"], ["check", "rules", directory + "/alerts.yml"],
            ["test", "rules", directory + "/alerts.test.yml"],
        ] {
            let result = try await promtool(arguments)
            #expect(
                result.status == 0,
                "promtool \(arguments.joined(separator: " ")): \(result.standardOutput)\(result.standardError)")
        }
    }

    @Test("the alert rules cover error rate, backlog, p95 latency, restarts and dead-letter growth, on metrics the worker emits")
    func alertRulesUseRealMetrics() async throws {
        let rules = try String(contentsOf: repositoryRoot.appending(path: "ops/prometheus/alerts.yml"), encoding: .utf8)
        for alert in [
            "FerryJobErrorRateHigh", "FerryBacklogHigh", "FerryJobLatencyHigh", "FerryWorkerRestarting",
            "FerryDeadLettersGrowing", "FerryOrderingKeyBlocked",
        ] {
            #expect(rules.contains("alert: \(alert)"))
        }
        #expect(rules.contains("> 0.05") && rules.contains("> 100") && rules.contains("for: 10m") && rules.contains("> 300"))
        let used = Self.metricNames(in: rules)
        let emitted = try Self.emittedMetricNames()
        #expect(!used.isEmpty && used.isSubset(of: emitted), "unknown metrics: \(used.subtracting(emitted))")
    }

    @Test("the Grafana dashboard parses and every panel queries metrics the worker emits")
    func grafanaDashboard() throws {
        let data = try Data(contentsOf: repositoryRoot.appending(path: "ops/grafana/ferry-dashboard.json"))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        #expect(panels.count >= 8)
        let expressions = panels.flatMap { ($0["targets"] as? [[String: Any]]) ?? [] }.compactMap { $0["expr"] as? String }
        #expect(expressions.count >= panels.count)
        let emitted = try Self.emittedMetricNames()
        for expression in expressions {
            let used = Self.metricNames(in: expression)
            #expect(!used.isEmpty && used.isSubset(of: emitted), "\(expression)")
        }
        let covered = expressions.reduce(into: Set<String>()) { $0.formUnion(Self.metricNames(in: $1)) }
        #expect(covered == emitted, "every metric has a panel; missing: \(emitted.subtracting(covered))")
    }

    /// The Kubernetes documents, parsed.
    func kubernetesDocuments() async throws -> [[String: Any]] {
        let files = ["worker.yaml", "pdb.yaml", "keda.yaml"].map { repositoryRoot.appending(path: "ops/k8s/\($0)").path() }
        let result = try await runPython(
            "import json, sys, yaml\nprint(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))",
            files)
        #expect(result.status == 0, "\(result.standardError)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.outputBytes)) as? [[String: Any]])
    }

    @Test("the Kubernetes manifests pass kubernetes-validate --strict")
    func kubernetesValidate() async throws {
        let files = ["worker.yaml", "pdb.yaml", "keda.yaml"].map { repositoryRoot.appending(path: "ops/k8s/\($0)").path() }
        let result = try await runProcess(try executable(named: "kubernetes-validate"), ["--strict"] + files)
        #expect(result.status == 0, "\(result.standardOutput)\(result.standardError)")
        #expect(result.standardOutput.contains("passed for resource deployment/ferry-worker"))
        #expect(result.standardOutput.contains("passed for resource poddisruptionbudget/ferry-worker"))
    }

    @Test("Deployment, PDB and KEDA agree: probes on the admin port, grace above the shutdown grace, lag scaling, TLS sidecar")
    func kubernetesPromises() async throws {
        let documents = try await kubernetesDocuments()
        func find(_ kind: String) throws -> [String: Any] {
            try #require(documents.first { $0["kind"] as? String == kind }, "\(kind)")
        }
        let deployment = try find("Deployment")
        let podSpec = try #require(
            ((deployment["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any])
        let worker = try #require((podSpec["containers"] as? [[String: Any]])?.first)
        let environment = Dictionary(
            ((worker["env"] as? [[String: Any]]) ?? []).compactMap { item in (item["name"] as? String).map { ($0, item["value"]) }
            }
        ) { first, _ in first }
        let shutdownGrace = try #require((environment["FERRY_SHUTDOWN_GRACE"] as? String).flatMap { Int($0.dropLast()) })
        #expect((podSpec["terminationGracePeriodSeconds"] as? Int ?? 0) > shutdownGrace)
        let adminPort = try #require((environment["FERRY_ADMIN_PORT"] as? String).flatMap(Int.init))
        #expect((worker["ports"] as? [[String: Any]])?.first?["containerPort"] as? Int == adminPort)
        let liveness = (worker["livenessProbe"] as? [String: Any])?["httpGet"] as? [String: Any]
        let readiness = (worker["readinessProbe"] as? [String: Any])?["httpGet"] as? [String: Any]
        #expect(liveness?["path"] as? String == "/healthz" && readiness?["path"] as? String == "/readyz")

        let sidecar = try #require((podSpec["initContainers"] as? [[String: Any]])?.first)
        #expect(sidecar["restartPolicy"] as? String == "Always", "a native sidecar outlives the draining worker")
        let configMap = try find("ConfigMap")
        let stunnel = try #require((configMap["data"] as? [String: String])?["ferry-redis.conf"])
        for setting in ["client = yes", "accept = 127.0.0.1:6379", "verifyChain = yes", "sslVersionMin = TLSv1.2"] {
            #expect(stunnel.contains(setting), "\(setting)")
        }
        let secret = try find("Secret")
        let secretData = try #require(secret["stringData"] as? [String: String])
        #expect(secretData["worker-url"]?.hasSuffix("@127.0.0.1:6379") == true, "the worker talks to the sidecar")

        let budget = try #require(try find("PodDisruptionBudget")["spec"] as? [String: Any])
        #expect(budget["maxUnavailable"] as? Int == 1)

        let scaled = try #require(try find("ScaledObject")["spec"] as? [String: Any])
        #expect(
            (scaled["scaleTargetRef"] as? [String: Any])?["name"] as? String == (deployment["metadata"] as? [String: Any])?[
                "name"] as? String)
        let trigger = try #require((scaled["triggers"] as? [[String: Any]])?.first)
        let metadata = try #require(trigger["metadata"] as? [String: String])
        #expect(trigger["type"] as? String == "redis-streams" && metadata["lagCount"] != nil, "scales on consumer-group lag")
        let queue = try #require(environment["FERRY_QUEUE"] as? String)
        #expect(metadata["stream"] == QueueKeys(queue: try QueueName(queue)).jobs)
        #expect(metadata["consumerGroup"] == "workers")
        let authentication = try find("TriggerAuthentication")
        let reference = try #require((authentication["spec"] as? [String: Any])?["secretTargetRef"] as? [[String: String]])
        #expect(reference.allSatisfy { secretData[$0["key"] ?? ""] != nil }, "KEDA reads a key the Secret has")
        #expect(metadata["username"] == "keda", "KEDA uses its own least-privilege user")
    }

    @Test("the example push handler in ops/examples verifies Ferry's signatures and acknowledges jobs")
    func examplePushHandler() async throws {
        let scratch = FileManager.default.temporaryDirectory.appending(path: uniqueName("handler")).path()
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let secretFile = repositoryRoot.appending(path: "ops/examples/push-secret.txt").path()
        let port = try freeLoopbackPort()
        let handler = try ChildProcess(
            try executable(named: "python3"), [repositoryRoot.appending(path: "ops/examples/push_handler.py").path()],
            environment: ProcessInfo.processInfo.environment.merging(["PUSH_SECRET_FILE": secretFile, "PORT": "\(port)"]) { $1 },
            standardOutput: scratch + "/handler.log", standardError: scratch + "/handler.err")
        defer { handler.signal(SIGKILL) }
        let url = try await TestRedis.sharedURL()
        let queue = uniqueName("example")
        _ = try await Publisher(queue: try QueueName(queue), connection: try await TestRedis.connection())
            .publish(JobMessage(type: "welcome", data: "{\"to\": \"ada\"}", jobID: "ex-1"))
        let worker = try ChildProcess(
            try ferryExecutable(),
            ["worker", queue, "--push", "http://127.0.0.1:\(port)/jobs", "--push-secret-file", secretFile],
            environment: ProcessInfo.processInfo.environment.merging(["FERRY_REDIS_URL": url]) { $1 },
            standardOutput: scratch + "/worker.log", standardError: scratch + "/worker.err")
        defer { worker.signal(SIGKILL) }
        #expect(
            await eventually(.seconds(15)) {
                ((try? String(contentsOfFile: scratch + "/handler.log", encoding: .utf8)) ?? "").contains(
                    "job ex-1 (welcome), attempt")
            })
        let connection = try await TestRedis.connection()
        #expect(
            await eventually {
                try await JobStatus.load(jobID: "ex-1", queue: try QueueName(queue), connection: connection)?.state == .succeeded
            })
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)
    }
}
