import Ferry
import FerryAPI
import FerryRedis
import FerryTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The HTTP API against a real `ferry serve` process and Redis.
@Suite("HTTP API (ferry serve)")
struct APITests {
    /// An API key with `scopes`, created through the library as `ferry api-key create` does.
    func key(_ scopes: [APIKeys.Scope], queues: [String]? = nil) async throws -> String {
        try await APIKeys(connection: try await TestRedis.connection()).create(
            name: uniqueName("test"), scopes: scopes, queues: queues
        ).token
    }

    /// Runs a worker on `setup`'s queue while `body` runs (one attempt a job).
    func running(_ setup: TestQueue, handler: any JobHandler, body: () async throws -> Void) async throws {
        try await withWorker(setup, handlers: ["t": handler], maxAttempts: 1, body: body)
    }

    @Test(
        "publish answers 202 with the job id, Location and status URL; the status long-polls with ?wait until the job succeeds, with Retry-After while it runs"
    )
    func publishAndFollow() async throws {
        let server = try await APIServerProcess()
        let setup = try await TestQueue("api")
        let admin = try await key([.admin])
        let gate = Mutex(false)
        let started = Mutex(false)
        let published = try await server.send(
            "POST", "/v1/queues/\(setup.name)/jobs", json: #"{"type": "t", "data": {"page": 7}, "job_id": "report-7"}"#,
            key: admin)
        #expect(published.status == 202, "\(published.text)")
        #expect(published.json?["job_id"] as? String == "report-7" && published.json?["state"] as? String == "queued")
        #expect(published.headers["location"] == "/v1/queues/\(setup.name)/jobs/report-7")
        let entry = try #require(
            try await setup.redis.send(RedisCommand("XRANGE", [.string(setup.keys.jobs), "-", "+"])).array?.first)
        #expect(StreamEntry.entries(from: .array([entry])).first?.value(of: "data") == Array(#"{"page":7}"#.utf8))

        try await running(
            setup,
            handler: JobHandlerClosure { _ in
                started.withLock { $0 = true }
                while !gate.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
            }
        ) {
            #expect(await eventually { started.withLock { $0 } })
            #expect(
                await eventually {
                    let running = try await server.send("GET", "/v1/queues/\(setup.name)/jobs/report-7", key: admin)
                    return (running.json?["groups"] as? [[String: Any]])?.first?["state"] as? String == "running"
                        && running.headers["retry-after"] != nil
                })
            let waiting = Task { try await server.send("GET", "/v1/queues/\(setup.name)/jobs/report-7?wait=30s", key: admin) }
            try await Task.sleep(for: .milliseconds(300))
            gate.withLock { $0 = true }
            let done = try await waiting.value
            #expect(done.status == 200 && done.json?["finished"] as? Bool == true, "\(done.text)")
            #expect((done.json?["groups"] as? [[String: Any]])?.first?["state"] as? String == "succeeded")
            #expect(done.headers["retry-after"] == nil)
        }
        let missing = try await server.send("GET", "/v1/queues/\(setup.name)/jobs/nope", key: admin)
        #expect(missing.status == 404 && missing.problem == "not-found")
        #expect(missing.headers["content-type"] == "application/problem+json")
    }

    @Test(
        "an Idempotency-Key with the same body replays the first answer; with another body it is 409 naming the first job; one entry either way"
    )
    func idempotentPublish() async throws {
        let server = try await APIServerProcess()
        let setup = try await TestQueue("api-idem")
        let publisher = try await key([.publish])
        let path = "/v1/queues/\(setup.name)/jobs"
        let first = try await server.send(
            "POST", path, json: #"{"type": "t", "data": "a"}"#, key: publisher, headers: ["Idempotency-Key": "order-42"])
        let again = try await server.send(
            "POST", path, json: #"{"type": "t", "data": "a"}"#, key: publisher, headers: ["Idempotency-Key": "order-42"])
        let other = try await server.send(
            "POST", path, json: #"{"type": "t", "data": "b"}"#, key: publisher, headers: ["Idempotency-Key": "order-42"])
        #expect(first.status == 202 && first.headers["idempotent-replayed"] == nil)
        #expect(again.status == 202 && again.headers["idempotent-replayed"] == "true")
        #expect(again.json?["job_id"] as? String == first.json?["job_id"] as? String)
        #expect(other.status == 409 && other.problem == "conflict")
        #expect(other.json?["job_id"] as? String == first.json?["job_id"] as? String)
        #expect(try await setup.length(setup.keys.jobs) == 1)
    }

    @Test("with --reject-duplicates, the same Idempotency-Key and body again is 409 naming the first job; one entry")
    func rejectedDuplicate() async throws {
        let server = try await APIServerProcess(["--reject-duplicates"])
        let setup = try await TestQueue("api-dup")
        let publisher = try await key([.publish])
        let path = "/v1/queues/\(setup.name)/jobs"
        let send = {
            try await server.send(
                "POST", path, json: #"{"type": "t", "data": "a"}"#, key: publisher, headers: ["Idempotency-Key": "doc-1"])
        }
        let first = try await send()
        let again = try await send()
        #expect(first.status == 202, "\(first.text)")
        #expect(again.status == 409 && again.problem == "conflict", "\(again.text)")
        #expect(again.json?["job_id"] as? String == first.json?["job_id"] as? String)
        #expect(try await setup.length(setup.keys.jobs) == 1)
    }

    @Test("a full queue answers 503 and a key at its quota 429, both with Retry-After; nothing is written")
    func saturation() async throws {
        let server = try await APIServerProcess()
        let setup = try await TestQueue("api-full")
        let publisher = try await key([.publish])
        let settings = QueueSettings(queue: setup.queue, connection: setup.redis)
        try await settings.setMaxPendingPerKey(1)
        let path = "/v1/queues/\(setup.name)/jobs"
        #expect(try await server.send("POST", path, json: #"{"type": "t", "key": "user-1"}"#, key: publisher).status == 202)
        let quota = try await server.send("POST", path, json: #"{"type": "t", "key": "user-1"}"#, key: publisher)
        #expect(quota.status == 429 && quota.problem == "quota-reached" && quota.headers["retry-after"] != nil, "\(quota.text)")
        try await settings.setMaxPendingPerKey(nil)
        try await settings.setMaxDepth(1)
        // Publishers read the bounds at most once a second: until then, publishes still pass.
        let passed = Mutex(0)
        #expect(
            await eventually {
                let full = try await server.send("POST", path, json: #"{"type": "t"}"#, key: publisher)
                if full.status == 202 { passed.withLock { $0 += 1 } }
                return full.status == 503 && full.problem == "queue-full" && full.headers["retry-after"] != nil
            })
        #expect(try await setup.length(setup.keys.jobs) == 1 + passed.withLock { $0 }, "a refused publish writes nothing")
    }

    @Test(
        "bad requests are 400 problems naming what is wrong, a batch with one bad job writes none, a body over the limit is 413")
    func badRequests() async throws {
        let server = try await APIServerProcess(["--max-body-bytes", "4096"])
        let setup = try await TestQueue("api-bad")
        let publisher = try await key([.publish])
        let path = "/v1/queues/\(setup.name)/jobs"
        let cases: [(body: String, says: String)] = [
            (#"{"data": "x"}"#, "type"),
            (#"{"type": "t", "data": "x", "data_base64": "eA=="}"#, "data or data_base64"),
            (#"{"type": "t", "delay": "soon"}"#, "not a duration"),
            (#"{"type": "t", "priority": "urgent"}"#, "priority"),
            (#"{"type": "t", "colour": "red"}"#, "colour"),
            ("{not json", "the request does not match"),
        ]
        for (body, says) in cases {
            let answer = try await server.send("POST", path, json: body, key: publisher)
            #expect(answer.status == 400 && answer.problem == "invalid-request", "\(answer.text)")
            let detail = answer.json?["detail"] as? String ?? ""
            #expect(detail.contains(says), "\(answer.text)")
        }
        let batch = try await server.send(
            "POST", path + ":batch", json: #"{"jobs": [{"type": "t"}, {"type": "t", "max_attempts": 0}]}"#, key: publisher)
        #expect(batch.status == 400, "\(batch.text)")
        let tooLarge = try await server.send(
            "POST", path, json: #"{"type": "t", "data": "\#(String(repeating: "x", count: 5000))"}"#, key: publisher)
        #expect(tooLarge.status == 413 && tooLarge.problem == "payload-too-large", "\(tooLarge.text)")
        let badQueue = try await server.send("POST", "/v1/queues/a%20b/jobs", json: #"{"type": "t"}"#, key: publisher)
        #expect(badQueue.status == 400, "\(badQueue.text)")
        #expect(try await setup.length(setup.keys.jobs) == 0, "nothing was written")
        let good = try await server.send(
            "POST", path + ":batch", json: #"{"jobs": [{"type": "t"}, {"type": "t"}]}"#, key: publisher)
        #expect(good.status == 202 && (good.json?["jobs"] as? [Any])?.count == 2)
    }

    @Test(
        "API keys: none is 401, a read key cannot publish, a key for queue a cannot see b, a revoked key stops working, admin may cancel"
    )
    func keysAndScopes() async throws {
        let server = try await APIServerProcess()
        let a = try await TestQueue("api-a")
        let b = try await TestQueue("api-b")
        let reader = try await key([.read])
        let publisherOfA = try await key([.publish, .read], queues: [a.name])
        let admin = try await key([.admin])
        let jobs = { (queue: TestQueue) in "/v1/queues/\(queue.name)/jobs" }

        let anonymous = try await server.send("POST", jobs(a), json: #"{"type": "t"}"#)
        #expect(anonymous.status == 401 && anonymous.problem == "unauthenticated")
        #expect(anonymous.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
        #expect(
            try await server.send("GET", "/v1/queues", key: "ferry_0000000000000000_" + String(repeating: "0", count: 64)).status
                == 401)
        let readOnly = try await server.send("POST", jobs(a), json: #"{"type": "t"}"#, key: reader)
        #expect(readOnly.status == 403 && readOnly.problem == "forbidden")
        #expect(try await server.send("POST", jobs(a), json: #"{"type": "t", "job_id": "j1"}"#, key: publisherOfA).status == 202)
        #expect(try await server.send("POST", jobs(b), json: #"{"type": "t"}"#, key: publisherOfA).status == 403)
        #expect(try await server.send("GET", "/v1/queues/\(b.name)", key: publisherOfA).status == 403)
        _ = try await b.publisher.publish(JobMessage(type: "t"))
        let listed = try await server.send("GET", "/v1/queues", key: publisherOfA)
        #expect((listed.json?["queues"] as? [String]) == [a.name], "\(listed.text)")
        #expect(try await server.send("POST", jobs(a) + "/j1:cancel", key: publisherOfA).status == 403)
        let cancelled = try await server.send("POST", jobs(a) + "/j1:cancel", key: admin)
        #expect(cancelled.status == 202 && cancelled.json?["state"] as? String == "queued", "\(cancelled.text)")

        let keys = APIKeys(connection: a.redis)
        let id = try #require(reader.split(separator: "_").dropFirst().first.map(String.init))
        #expect(try await server.send("GET", "/v1/queues", key: reader).status == 200)
        #expect(try await keys.revoke(id: id))
        #expect(try await server.send("GET", "/v1/queues", key: reader).status == 401)
        let secretless = try await keys.list()
        #expect(!secretless.isEmpty)
        let stored = try await a.redis.send(RedisCommand("HGETALL", [.string(APIKeys.redisKey)])).array ?? []
        let secret = String(admin.suffix(64))
        #expect(!stored.contains { ($0.string ?? "").contains(secret) }, "only the secret's hash is stored")
    }

    @Test("without authentication ferry serve listens on loopback only, unless --insecure-no-auth says so")
    func noAuthIsLoopbackOnly() async throws {
        let refused = try await runProcess(
            try ferryExecutable(),
            ["serve", "--no-auth", "--host", "0.0.0.0", "--port", "0", "--redis", try await TestRedis.sharedURL()])
        #expect(refused.status != 0 && refused.standardError.contains("loopback only"), "\(refused.standardError)")
        let server = try await APIServerProcess(["--no-auth"])
        #expect(try await server.send("GET", "/v1/queues").status == 200)
        let insecure = try await APIServerProcess(["--no-auth", "--insecure-no-auth", "--host", "0.0.0.0"])
        #expect(try await insecure.send("GET", "/v1/queues").status == 200)
    }

    @Test("listing pages with a cursor; a dead letter is listed and retried by job id; a workflow starts and reads back")
    func listDeadLettersAndWorkflows() async throws {
        let server = try await APIServerProcess(["--no-auth"])
        let setup = try await TestQueue("api-list")
        _ = try await setup.publisher.publish((0..<7).map { JobMessage(type: "t", data: [], jobID: "job-\($0)") })
        try await running(setup, handler: JobHandlerClosure { job in if job.id == "job-3" { throw PermanentJobError("no") } }) {
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        var seen: [String] = []
        var cursor: String?
        repeat {
            let page = try await server.send(
                "GET",
                "/v1/queues/\(setup.name)/jobs?limit=3"
                    + (cursor.map { "&cursor=\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)" } ?? ""))
            #expect(page.status == 200, "\(page.text)")
            seen += (page.json?["jobs"] as? [[String: Any]] ?? []).compactMap { $0["job_id"] as? String }
            cursor = page.json?["next_cursor"] as? String
        } while cursor != nil
        #expect(Set(seen) == Set((0..<7).map { "job-\($0)" }) && seen.count == 7, "\(seen)")
        let dead = try await server.send("GET", "/v1/queues/\(setup.name)/jobs?state=dead")
        #expect((dead.json?["jobs"] as? [[String: Any]])?.compactMap { $0["job_id"] as? String } == ["job-3"])

        let letters = try await server.send("GET", "/v1/queues/\(setup.name)/dead-letters")
        let letter = try #require((letters.json?["dead_letters"] as? [[String: Any]])?.first)
        #expect(letter["job_id"] as? String == "job-3" && letter["error_class"] as? String == "permanent_failure")
        let retried = try await server.send("POST", "/v1/queues/\(setup.name)/jobs/job-3:retry")
        #expect(retried.status == 202, "\(retried.text)")
        #expect(try await setup.length(setup.keys.deadLetter) == 0)
        let twice = try await server.send("POST", "/v1/queues/\(setup.name)/jobs/job-3:retry")
        #expect(twice.status == 409 && twice.text.contains("workers: queued"), "queued again, not dead: \(twice.text)")
        #expect(try await server.send("POST", "/v1/queues/\(setup.name)/jobs/no-such-job:retry").status == 404)

        let started = try await server.send(
            "POST", "/v1/queues/\(setup.name)/workflows",
            json:
                #"{"definition": {"name": "two", "steps": [{"name": "a", "type": "t"}, {"name": "b", "type": "t"}]}, "data": {"doc": 1}, "workflow_id": "wf-1"}"#
        )
        #expect(started.status == 202 && started.json?["workflow_id"] as? String == "wf-1", "\(started.text)")
        let workflow = try await server.send("GET", "/v1/queues/\(setup.name)/workflows/wf-1")
        #expect(workflow.json?["state"] as? String == "running")
        #expect((workflow.json?["steps"] as? [[String: Any]])?.map { $0["state"] as? String } == ["queued", "waiting"])
        let queue = try await server.send("GET", "/v1/queues/\(setup.name)")
        #expect(queue.status == 200 && queue.json?["dead_letters"] as? Int == 0, "\(queue.text)")
    }

    @Test(
        "rate limits: shared by two ferry serve processes, per caller, per job for polls, 429 rate-limited with Retry-After until the window lets the next in; a bad value stops serve"
    )
    func rateLimits() async throws {
        let limits = ["--rate-limit", "read=3/1m", "--rate-limit", "poll=2/1m", "--rate-limit", "publish=2/10s"]
        let first = try await APIServerProcess(limits)
        let second = try await APIServerProcess(limits)
        let setup = try await TestQueue("api-rate")
        let one = try await key([.admin])
        let other = try await key([.admin])

        for server in [first, second, first] {
            #expect(try await server.send("GET", "/v1/queues", key: one).status == 200)
        }
        let refused = try await second.send("GET", "/v1/queues", key: one)
        #expect(refused.status == 429 && refused.problem == "rate-limited", "\(refused.text)")
        let retryAfter = Int(refused.headers["retry-after"] ?? "") ?? 0
        #expect((1...60).contains(retryAfter), "\(refused.headers)")
        #expect((refused.json?["detail"] as? String)?.contains("3/m read requests") == true, "\(refused.text)")
        #expect(try await first.send("GET", "/v1/queues", key: other).status == 200, "another caller has its own window")

        let job = "/v1/queues/\(setup.name)/jobs/"
        #expect(try await first.send("GET", job + "j1", key: other).status == 404)
        #expect(try await second.send("GET", job + "j1", key: other).status == 404)
        #expect(try await first.send("GET", job + "j1", key: other).status == 429)
        #expect(try await first.send("GET", job + "j2", key: other).status == 404, "polls are counted per job")

        let publish = { () async throws -> Int in
            try await first.send("POST", String(job.dropLast()), json: #"{"type": "t"}"#, key: one).status
        }
        #expect(try await publish() == 202)
        #expect(try await publish() == 202)
        #expect(try await publish() == 429)
        #expect(await eventually(.seconds(60)) { try await publish() == 202 }, "the window lets the next in once it has passed")
        #expect(try await setup.length(setup.keys.jobs) == 3)

        // A batch counts each of its jobs: two jobs fill the window another caller has to itself.
        let third = try await key([.publish])
        let batch = { (count: Int) async throws -> HTTPAnswer in
            let jobs = (0..<count).map { _ in #"{"type": "t"}"# }.joined(separator: ", ")
            return try await first.send("POST", job.dropLast() + ":batch", json: #"{"jobs": [\#(jobs)]}"#, key: third)
        }
        let tooMany = try await batch(3)
        #expect(tooMany.status == 429 && tooMany.text.contains("never fit"), "\(tooMany.text)")
        #expect(try await batch(2).status == 202)
        let full = try await batch(1)
        #expect(full.status == 429 && full.headers["retry-after"] != nil, "the window is full: \(full.text)")
        #expect(try await setup.length(setup.keys.jobs) == 5, "only the batch that fit was published")
        let windows = try await setup.redis.scanKeys(matching: "ferry:api:rate:*")
        #expect(!windows.isEmpty)
        for window in windows {
            let ttl = try await setup.redis.send(RedisCommand("PTTL", [.bytes(window)])).integer ?? -1
            #expect(ttl != -1, "every window expires (-2: expired already)")
        }

        let bad = try await runProcess(
            try ferryExecutable(),
            ["serve", "--port", "0", "--redis", try await TestRedis.sharedURL(), "--rate-limit", "fetch=1/s"])
        #expect(bad.status != 0 && bad.standardError.contains("route class"), "\(bad.standardError)")
    }

    @Test(
        "/readyz is ready while Redis answers and 503 naming Redis when it is gone; /metrics counts requests by route template and promtool accepts it"
    )
    func probesAndMetrics() async throws {
        let redis = try await RedisServerProcess()
        let server = try await APIServerProcess(["--no-auth", "--max-body-bytes", "4096"], redis: redis.url)
        let ready = try await server.send("GET", "/readyz")
        #expect(ready.status == 200 && ready.text == "ready\n", "\(ready.text)")
        #expect(try await server.send("GET", "/healthz").status == 200)
        #expect(try await server.send("GET", "/v1/queues/q-1/jobs/j-1").status == 404)
        #expect(try await server.send("GET", "/v1/queues/q-2/jobs/j-2").status == 404)
        // A publish taken before the router, and one the router resolves (a trailing slash): one
        // route; and one refused by the body limit before any handler.
        for path in ["/v1/queues/q-3/jobs", "/v1/queues/q-3/jobs/"] {
            let published = try await server.send("POST", path, json: #"{"type": "t"}"#)
            #expect(published.status == 202, "\(path): \(published.text)")
        }
        let tooLarge = try await server.send(
            "POST", "/v1/queues/q-3/jobs", json: #"{"type": "t", "data": "\#(String(repeating: "x", count: 5000))"}"#)
        #expect(tooLarge.status == 413, "\(tooLarge.text)")
        var scrape = ""
        #expect(
            await eventually {
                scrape = try await server.send("GET", "/metrics").text
                return scrape.contains(
                    #"ferry_api_requests_total{route="/v1/queues/{queue}/jobs/{job_id}",method="GET",status="404"} 2"#)
                    && scrape.contains(#"ferry_api_requests_total{route="/v1/queues/{queue}/jobs",method="POST",status="202"} 2"#)
                    && scrape.contains(#"ferry_api_requests_total{route="/v1/queues/{queue}/jobs",method="POST",status="413"} 1"#)
            }, "\(scrape)")
        #expect(scrape.contains("ferry_api_request_duration_seconds_bucket"))
        #expect(!scrape.contains("q-1"), "route templates, not the queues and jobs asked for")
        let checked = try await runProcess(
            URL(fileURLWithPath: "/bin/sh"), ["-c", #"printf '%s\n' "$1" | promtool check metrics"#, "sh", scrape])
        #expect(checked.status == 0, "\(checked.standardOutput)\(checked.standardError)")

        await redis.stop()
        var down = try await server.send("GET", "/readyz")
        #expect(
            await eventually {
                down = try await server.send("GET", "/readyz")
                return down.status == 503
            })
        #expect(down.text.contains("Redis"), "\(down.text)")
        #expect(try await server.send("GET", "/healthz").status == 200, "alive, only not ready")
    }

    @Test("the OpenAPI document is served at /v1/openapi.json as the same document, and it validates (openapi-spec-validator)")
    func documentServedAndValid() async throws {
        let server = try await APIServerProcess(["--no-auth"])
        let served = try await server.send("GET", "/v1/openapi.json")
        #expect(served.status == 200 && served.json?["openapi"] as? String == "3.1.0")
        let paths = try #require(served.json?["paths"] as? [String: Any])
        #expect(paths.keys.contains("/v1/queues/{queue}/jobs/{job_id}:retry"))
        let document = try documentPath()
        let validated = try await runProcess(
            URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-m", "openapi_spec_validator", document])
        #expect(validated.status == 0, "\(validated.standardOutput)\(validated.standardError)")
    }

    @Test("schemathesis's generated requests against a live ferry serve: no 5xx, every answer matches the document")
    func schemathesis() async throws {
        let server = try await APIServerProcess(["--no-auth"])
        let setup = try await TestQueue("api-st")
        _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "known"))
        let run = try await runProcess(
            URL(fileURLWithPath: "/usr/bin/env"),
            [
                // Niced: its hundreds of requests must not starve the timing-sensitive tests beside it.
                "nice", "-n", "10", "python3", "-m", "schemathesis.cli", "run", try documentPath(), "--url", server.baseURL,
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
                "--max-examples", "15", "--seed", "7", "--request-timeout", "70",
                // The document declares no links, so the stateful phase adds little but minutes.
                "--phases", "examples,coverage,fuzzing",
            ], timeout: .seconds(480))
        #expect(run.status == 0, "\(run.standardOutput.suffix(6000))\(run.standardError.suffix(2000))")
    }

    func documentPath() throws -> String {
        var directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: directory.appending(path: "docs/openapi.yaml").path()) {
            guard directory.path() != "/" else { throw APITestError("docs/openapi.yaml not found above the tests") }
            directory = directory.deletingLastPathComponent()
        }
        return directory.appending(path: "docs/openapi.yaml").path()
    }
}
