import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// Server-sent events of job transitions against a real `ferry serve`, read by curl as any
/// EventSource client would.
@Suite("HTTP API: server-sent events")
struct EventsAPITests {
    /// One server-sent event as received.
    struct Received: Equatable {
        var id: String?
        var event: String?
        var data: [String: String]
    }

    /// Parses an event stream's text.
    static func parse(_ text: String) -> [Received] {
        text.components(separatedBy: "\n\n").compactMap { block in
            var received = Received(id: nil, event: nil, data: [:])
            var any = false
            for line in block.split(separator: "\n") {
                let (name, value) = (line.prefix { $0 != ":" }, line.drop { $0 != ":" }.dropFirst().drop { $0 == " " })
                any = true
                switch name {
                case "id": received.id = String(value)
                case "event": received.event = String(value)
                case "data":
                    let object = (try? JSONSerialization.jsonObject(with: Data(value.utf8))) as? [String: Any] ?? [:]
                    received.data = object.compactMapValues { $0 as? String }
                default: break
                }
            }
            return any ? received : nil
        }
    }

    /// Reads `path` with curl until it ends (the stream's `timeout`), with `headers`.
    static func curl(_ url: String, headers: [String] = []) async throws -> [Received] {
        let result = try await runProcess(
            URL(fileURLWithPath: "/usr/bin/curl"), ["-sS", "-N", "--max-time", "60"] + headers.flatMap { ["-H", $0] } + [url])
        #expect(result.status == 0, "\(result.standardError)")
        return parse(result.standardOutput)
    }

    @Test(
        "events are off until ferry queue events on; then publish, start and success stream in order, resume after Last-Event-ID, follow live, and a resume from before the oldest kept starts with gap"
    )
    func eventStream() async throws {
        let server = try await APIServerProcess(["--no-auth"])
        let setup = try await TestQueue("api-events")
        let url = server.baseURL + "/v1/queues/\(setup.name)/events"
        let off = try await server.send("GET", "/v1/queues/\(setup.name)/events")
        #expect(off.status == 409 && (off.json?["detail"] as? String)?.contains("ferry queue events") == true, "\(off.text)")
        let on = try await setup.ferry("queue", "events", setup.name, "on")
        #expect(on.status == 0 && on.standardOutput.contains("events on"), "\(on.standardError)")

        _ = try await setup.publisher.publish([JobMessage(type: "t", jobID: "e-0"), JobMessage(type: "t", jobID: "e-1")])
        try await withWorker(setup, handlers: ["t": JobHandlerClosure { _ in }]) {
            #expect(
                await eventually {
                    try await JobStatus.load(jobID: "e-1", queue: setup.queue, connection: setup.redis)?.state == .succeeded
                })
        }
        let all = try await Self.curl(url + "?after=0-0&timeout=1s")
        let jobs = all.filter { $0.event == "job" }
        for job in ["e-0", "e-1"] {
            let states = jobs.filter { $0.data["job_id"] == job }.map { $0.data["state"] ?? "" }
            #expect(states == ["queued", "running", "succeeded"], "\(job): \(states)")
        }
        #expect(jobs.first { $0.data["state"] == "running" }?.data["group"] == "workers")
        #expect(jobs.first { $0.data["state"] == "succeeded" }?.data["from"] == "running")
        #expect(jobs.allSatisfy { $0.id != nil && $0.data["at"] != nil })

        let third = try #require(jobs.dropFirst(2).first?.id)
        let resumed = try await Self.curl(url + "?timeout=1s", headers: ["Last-Event-ID: \(third)"]).filter { $0.event == "job" }
        #expect(resumed.map(\.id) == jobs.dropFirst(3).map(\.id), "resumed after the third event")

        let output = FileManager.default.temporaryDirectory.appending(path: uniqueName("sse")).path()
        let live = try ChildProcess(
            URL(fileURLWithPath: "/usr/bin/curl"),
            ["-sS", "-N", "--max-time", "60", url + "?timeout=30s&job_id=e-2&after=\(jobs.last?.id ?? "0-0")"],
            standardOutput: output)
        defer { live.signal(SIGKILL) }
        _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "e-2"))
        try await withWorker(setup, handlers: ["t": JobHandlerClosure { _ in }]) {
            #expect(
                await eventually {
                    let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
                    return Self.parse(text).contains { $0.data["job_id"] == "e-2" && $0.data["state"] == "succeeded" }
                }, "a live client sees the job succeed")
        }
        let seen = Self.parse((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
        #expect(seen.allSatisfy { $0.data["job_id"] == "e-2" || $0.event == "ping" }, "only the job asked for")

        try await setup.redis.send(RedisCommand("XTRIM", [.string(setup.keys.events), "MAXLEN", "1"]))
        let gapped = try await Self.curl(url + "?timeout=500ms", headers: ["Last-Event-ID: \(third)"])
        #expect(gapped.first?.event == "gap", "\(gapped)")
        // Three streams have ended (1 s, 1 s, 500 ms): each counted, and timed to its end.
        let labels = #"{route="/v1/queues/{queue}/events",method="GET",status="200"}"#
        var timed: (count: Double, seconds: Double) = (0, 0)
        #expect(
            await eventually {
                let scrape = try await server.send("GET", "/metrics").text
                func value(_ name: String) -> Double {
                    scrape.split(separator: "\n").first { $0.hasPrefix(name + labels + " ") }
                        .flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
                }
                timed = (value("ferry_api_requests_total"), value("ferry_api_request_duration_seconds_sum"))
                return timed.count >= 3
            }, "\(timed)")
        #expect(timed.seconds >= 2.4, "a stream is timed when it ends, not when its handler returns: \(timed)")
        let bad = try await server.send("GET", "/v1/queues/\(setup.name)/events", headers: ["Last-Event-ID": "yesterday"])
        #expect(bad.status == 400, "\(bad.text)")

        #expect(try await setup.ferry("queue", "events", setup.name, "off").status == 0)
        #expect(try await setup.redis.send(RedisCommand("EXISTS", [.string(setup.keys.events)])).integer == 0)
        #expect(try await server.send("GET", "/v1/queues/\(setup.name)/events").status == 409)
    }

    @Test(
        "with events on, each job's history is queued, running, succeeded in that order, with a worker already waiting: the publish writes its queued record and event in the step that adds the entry"
    )
    func queuedComesFirst() async throws {
        let setup = try await TestQueue("api-events-order")
        try await QueueEvents(queue: setup.queue, connection: setup.redis).enable()
        let done = Mutex(0)
        try await withWorker(setup, handlers: ["t": JobHandlerClosure { _ in done.withLock { $0 += 1 } }]) {
            for batch in 0..<10 {
                // Ids of their own (a status hash each) and entry-ID jobs (no hash, an event only).
                _ = try await setup.publisher.publish(
                    (0..<10).map { JobMessage(type: "t", jobID: "o-\(batch)-\($0)") }
                        + (0..<10).map { _ in JobMessage(type: "t") })
            }
            #expect(await eventually { done.withLock { $0 } == 200 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        let events = try await QueueEvents(queue: setup.queue, connection: setup.redis).read(after: "0-0", count: 5000)
        let byJob = Dictionary(grouping: events, by: \.jobID)
        #expect(byJob.count == 200)
        for (jobID, history) in byJob {
            #expect(history.map { $0.state?.rawValue ?? "?" } == ["queued", "running", "succeeded"], "\(jobID)")
        }
        let record = try await JobStatusRecord.load(jobID: "o-3-4", queue: setup.queue, connection: setup.redis)
        #expect(record?.shared["queued_at"] != nil && record?.shared["type"] == "t", "\(String(describing: record))")
    }

    @Test("with events off (the default) a worker's jobs write no event stream")
    func offByDefault() async throws {
        let setup = try await TestQueue("api-events-off")
        _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "quiet"))
        try await withWorker(setup, handlers: ["t": JobHandlerClosure { _ in }]) {
            #expect(
                await eventually {
                    try await JobStatus.load(jobID: "quiet", queue: setup.queue, connection: setup.redis)?.state == .succeeded
                })
        }
        #expect(try await setup.redis.send(RedisCommand("EXISTS", [.string(setup.keys.events)])).integer == 0)
    }
}
