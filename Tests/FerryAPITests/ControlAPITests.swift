import Ferry
import FerryAPI
import FerryRedis
import FerryTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The operations that change how a queue runs, against a real `ferry serve` and Redis.
@Suite("HTTP API: pause, bulk operations, cron, limits, workflow control")
struct ControlAPITests {
    /// Runs a worker on `setup`'s queue while `body` runs (one attempt a job).
    func running(_ setup: TestQueue, handler: any JobHandler, body: () async throws -> Void) async throws {
        try await withWorker(setup, handlers: ["a": handler, "b": handler], maxAttempts: 1, body: body)
    }

    @Test(
        "pause and resume; retry, redrive and purge dead letters by filter with dry_run, limit and missing ids; a selection naming nothing is refused"
    )
    func pauseAndBulkDeadLetters() async throws {
        let server = try await APIServerProcess(["--no-auth"])
        let setup = try await TestQueue("api-bulk")
        let base = "/v1/queues/\(setup.name)"
        _ = try await setup.publisher.publish(
            (0..<3).map { JobMessage(type: "a", jobID: "a-\($0)") } + (0..<3).map { JobMessage(type: "b", jobID: "b-\($0)") })
        try await running(setup, handler: JobHandlerClosure { _ in throw PermanentJobError("no") }) {
            #expect(await eventually { try await setup.length(setup.keys.deadLetter) == 6 })
        }

        let refused = try await server.send("POST", base + "/jobs:retry", json: "{}")
        #expect(refused.status == 400 && (refused.json?["detail"] as? String)?.contains("all: true") == true, "\(refused.text)")
        let dry = try await server.send("POST", base + "/jobs:retry", json: #"{"all": true, "type": "a", "dry_run": true}"#)
        #expect(dry.status == 200 && dry.json?["matched"] as? Int == 3 && dry.json?["changed"] as? Int == 0, "\(dry.text)")
        #expect(Set(dry.json?["job_ids"] as? [String] ?? []) == ["a-0", "a-1", "a-2"])
        #expect(try await setup.length(setup.keys.deadLetter) == 6, "a dry run changes nothing")
        let retried = try await server.send("POST", base + "/jobs:retry", json: #"{"all": true, "type": "a"}"#)
        #expect(retried.json?["changed"] as? Int == 3 && retried.json?["more"] as? Bool == false, "\(retried.text)")
        #expect(try await setup.length(setup.keys.deadLetter) == 3)
        let status = try await JobStatus.load(jobID: "a-1", queue: setup.queue, connection: setup.redis)
        #expect(status?.state == .queued, "retried jobs are queued again")

        let purged = try await server.send("POST", base + "/dead-letters:purge", json: #"{"job_ids": ["b-0", "nope"]}"#)
        #expect(purged.json?["changed"] as? Int == 1 && purged.json?["missing"] as? [String] == ["nope"], "\(purged.text)")
        let page = try await server.send(
            "POST", base + "/dead-letters:redrive", json: #"{"all": true, "error_class": "permanent_failure", "limit": 1}"#)
        #expect(page.json?["changed"] as? Int == 1 && page.json?["more"] as? Bool == true, "\(page.text)")
        let none = try await server.send(
            "POST", base + "/dead-letters:redrive", json: #"{"all": true, "error_class": "http_500"}"#)
        #expect(none.json?["matched"] as? Int == 0, "\(none.text)")
        #expect(try await setup.length(setup.keys.deadLetter) == 1)

        let paused = try await server.send("POST", base + ":pause")
        #expect(paused.status == 200 && paused.json?["paused"] as? [String] == ["*"], "\(paused.text)")
        #expect(try await QueuePause(queue: setup.queue, connection: setup.redis).isPaused(group: "workers"))
        let group = try await server.send("POST", base + ":pause?group=reports")
        #expect(group.json?["paused"] as? [String] == ["*", "reports"], "\(group.text)")
        let resumed = try await server.send("POST", base + ":resume")
        #expect(resumed.json?["paused"] as? [String] == ["reports"], "a group paused on its own stays paused")
        #expect(try await !QueuePause(queue: setup.queue, connection: setup.redis).isPaused(group: "workers"))
    }

    @Test("cancel running jobs by filter: a dry run names them and changes nothing, then each is cancelled")
    func bulkCancel() async throws {
        let server = try await APIServerProcess(["--no-auth"])
        let setup = try await TestQueue("api-cancel")
        let started = Mutex(0)
        _ = try await setup.publisher.publish((0..<3).map { JobMessage(type: "a", jobID: "run-\($0)") })
        try await running(
            setup,
            handler: JobHandlerClosure { _ in
                started.withLock { $0 += 1 }
                try await Task.sleep(for: .seconds(120))
            }
        ) {
            #expect(await eventually { started.withLock { $0 } == 3 }, "the jobs started")
            let path = "/v1/queues/\(setup.name)/jobs:cancel"
            #expect(
                await eventually {
                    let dry = try await server.send("POST", path, json: #"{"all": true, "state": "running", "dry_run": true}"#)
                    return dry.json?["matched"] as? Int == 3 && dry.json?["changed"] as? Int == 0
                })
            let bad = try await server.send("POST", path, json: #"{"all": true, "state": "succeeded"}"#)
            #expect(bad.status == 400, "\(bad.text)")
            let cancelled = try await server.send("POST", path, json: #"{"all": true, "type": "a"}"#)
            #expect(cancelled.json?["changed"] as? Int == 3, "\(cancelled.text)")
            for id in 0..<3 {
                #expect(
                    await eventually {
                        try await JobStatus.load(jobID: "run-\(id)", queue: setup.queue, connection: setup.redis)?.state
                            == .cancelled
                    })
            }
        }
    }

    @Test(
        "a pause with wait answers once every live worker confirmed it starts nothing new, naming them; a wait over 60s is refused"
    )
    func pauseWaitsForWorkers() async throws {
        let server = try await APIServerProcess(["--no-auth"])
        let setup = try await TestQueue("api-pause-wait")
        let base = "/v1/queues/\(setup.name)"
        let started = Mutex(0)
        try await running(setup, handler: JobHandlerClosure { _ in started.withLock { $0 += 1 } }) {
            _ = try await setup.publisher.publish(JobMessage(type: "a", jobID: "before"))
            #expect(await eventually { started.withLock { $0 } == 1 }, "the worker is live")
            let paused = try await server.send("POST", base + ":pause?wait=30s")
            #expect(paused.status == 200, "\(paused.text)")
            let confirmed = paused.json?["confirmed"] as? [String] ?? []
            #expect(confirmed.count == 1 && confirmed.first?.hasPrefix("workers/") == true, "\(paused.text)")
            #expect(paused.json?["unconfirmed"] as? [String] == [], "\(paused.text)")
            _ = try await setup.publisher.publish(JobMessage(type: "a", jobID: "after"))
            let status = try await server.send("GET", base + "/jobs/after?wait=1s")
            #expect(status.status == 200 && started.withLock { $0 } == 1, "a confirmed pause starts nothing: \(status.text)")
            let resumed = try await server.send("POST", base + ":resume")
            #expect(resumed.status == 200)
            #expect(await eventually { started.withLock { $0 } == 2 })
        }
        let plain = try await server.send("POST", base + ":pause")
        #expect(plain.json?["confirmed"] == nil, "without wait, nothing is waited for: \(plain.text)")
        let tooLong = try await server.send("POST", base + ":pause?wait=90s")
        #expect(tooLong.status == 400 && (tooLong.json?["detail"] as? String)?.contains("at most 60s") == true, "\(tooLong.text)")
    }

    @Test("cron schedules and limits are set, listed, paused, resumed and deleted; bad ones are 400 and unknown ones 404")
    func cronAndLimits() async throws {
        let server = try await APIServerProcess(["--no-auth"])
        let setup = try await TestQueue("api-cron")
        let base = "/v1/queues/\(setup.name)"
        let set = try await server.send(
            "PUT", base + "/cron/nightly",
            json: #"{"cron": "0 3 * * *", "timezone": "Europe/Paris", "job": {"type": "report", "data": {"full": true}}}"#)
        #expect(set.status == 200 && (set.json?["timing"] as? String)?.contains("0 3 * * *") == true, "\(set.text)")
        #expect(set.json?["next_at"] as? String != nil && set.json?["paused"] as? Bool == false)
        let listed = try await server.send("GET", base + "/cron")
        #expect((listed.json?["schedules"] as? [[String: Any]])?.map { $0["name"] as? String } == ["nightly"])
        #expect(try await server.send("POST", base + "/cron/nightly:pause").json?["paused"] as? Bool == true)
        #expect(try await server.send("POST", base + "/cron/nightly:resume").json?["paused"] as? Bool == false)
        for bad in [
            #"{"cron": "0 3 * * *", "every": "5m", "job": {"type": "r"}}"#,
            #"{"every": "5m", "job": {"type": "r", "job_id": "x"}}"#,
            #"{"cron": "0 25 * * *", "job": {"type": "r"}}"#, #"{"every": "5m", "timezone": "UTC", "job": {"type": "r"}}"#,
        ] {
            let answer = try await server.send("PUT", base + "/cron/bad", json: bad)
            #expect(answer.status == 400 && answer.problem == "invalid-request", "\(bad): \(answer.text)")
        }
        #expect(try await server.send("DELETE", base + "/cron/nightly").status == 204)
        #expect(try await server.send("DELETE", base + "/cron/nightly").status == 404)
        #expect(try await server.send("POST", base + "/cron/nightly:pause").status == 404)

        let concurrency = try await server.send("PUT", base + "/limits/render", json: #"{"concurrency": 2, "type": "render"}"#)
        #expect(concurrency.status == 200 && concurrency.json?["concurrency"] as? Int == 2, "\(concurrency.text)")
        let rate = try await server.send("PUT", base + "/limits/calls", json: #"{"rate": "100/s", "burst": 10, "per_key": true}"#)
        #expect(rate.json?["rate"] as? String == "100/s" && rate.json?["burst"] as? Int == 10, "\(rate.text)")
        let limits = try await server.send("GET", base + "/limits")
        #expect(
            Set((limits.json?["limits"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []) == ["render", "calls"])
        let stored = try await QueueLimits(queue: setup.queue, connection: setup.redis).list().limits
        #expect(stored.count == 2, "the same limits ferry limit shows")
        for bad in [#"{"concurrency": 2, "rate": "1/s"}"#, #"{"rate": "fast"}"#, "{}"] {
            #expect(try await server.send("PUT", base + "/limits/x", json: bad).status == 400, "\(bad)")
        }
        #expect(try await server.send("DELETE", base + "/limits/render").status == 204)
        #expect(try await server.send("DELETE", base + "/limits/render").status == 404)
    }

    @Test(
        "a workflow is cancelled over HTTP; cancelling it again or resuming it is 400, an unknown one 404; a read key may not cancel"
    )
    func workflowControl() async throws {
        let server = try await APIServerProcess()
        let setup = try await TestQueue("api-wf")
        let keys = APIKeys(connection: setup.redis)
        let admin = try await keys.create(name: uniqueName("admin"), scopes: [.admin]).token
        let reader = try await keys.create(name: uniqueName("reader"), scopes: [.read]).token
        let base = "/v1/queues/\(setup.name)/workflows"
        let started = try await server.send(
            "POST", base,
            json:
                #"{"definition": {"name": "two", "steps": [{"name": "a", "type": "t"}, {"name": "b", "type": "t"}]}, "workflow_id": "wf-c"}"#,
            key: admin)
        #expect(started.status == 202, "\(started.text)")
        #expect(try await server.send("POST", base + "/wf-c:cancel", key: reader).status == 403)
        let cancelled = try await server.send("POST", base + "/wf-c:cancel", key: admin)
        #expect(cancelled.status == 202 && cancelled.json?["state"] as? String == "cancelled", "\(cancelled.text)")
        #expect(try await server.send("POST", base + "/wf-c:cancel", key: admin).status == 400)
        #expect(try await server.send("POST", base + "/wf-c:resume", key: admin).status == 400)
        #expect(try await server.send("POST", base + "/nope:resume", key: admin).status == 404)
        #expect(try await server.send("POST", "/v1/queues/\(setup.name):pause", key: reader).status == 403)
    }
}

extension ControlAPITests {
    @Test(
        "queued jobs are listed and cancelled by filter; the cancelled ones are retried by filter and then run once; a succeeded one is not retried"
    )
    func cancelQueuedThenRetryCancelled() async throws {
        let server = try await APIServerProcess(["--no-auth"])
        let setup = try await TestQueue("api-cancel-queued")
        let base = "/v1/queues/\(setup.name)"
        try await ConsumerGroups(queue: setup.queue, connection: setup.redis).create("workers")
        let named = try await setup.publisher.publish((0..<3).map { JobMessage(type: "a", jobID: "q-\($0)") })
        let unnamed = try await setup.publisher.publish((0..<2).map { JobMessage(type: "a", data: "\($0)") })
        _ = try await setup.publisher.publish(JobMessage(type: "b", jobID: "other"))
        let chosen = Set((named + unnamed).map(\.jobID))

        let listed = try await server.send("GET", base + "/jobs?state=queued&type=a&limit=2")
        #expect(listed.status == 200 && listed.json?["next_cursor"] as? String != nil, "\(listed.text)")
        let dry = try await server.send(
            "POST", base + "/jobs:cancel", json: #"{"all": true, "state": "queued", "type": "a", "dry_run": true}"#)
        #expect(dry.json?["matched"] as? Int == 5 && dry.json?["changed"] as? Int == 0, "\(dry.text)")
        #expect(Set(dry.json?["job_ids"] as? [String] ?? []) == chosen)
        let cancelled = try await server.send(
            "POST", base + "/jobs:cancel", json: #"{"all": true, "state": "queued", "type": "a"}"#)
        #expect(cancelled.json?["changed"] as? Int == 5, "\(cancelled.text)")

        let ran = Mutex<[String]>([])
        let handler = JobHandlerClosure { job in ran.withLock { $0.append(job.id) } }
        try await running(setup, handler: handler) {
            #expect(await eventually { ran.withLock { $0 } == ["other"] })
            #expect(await eventually { try await setup.pendingCount() == 0 })
            for id in chosen {
                #expect(
                    await eventually {
                        try await JobStatus.load(jobID: id, queue: setup.queue, connection: setup.redis)?.state == .cancelled
                    }, "\(id)")
            }
        }
        #expect(ran.withLock { $0 } == ["other"], "the cancelled jobs never ran")

        let dryRetry = try await server.send(
            "POST", base + "/jobs:retry", json: #"{"all": true, "state": "cancelled", "dry_run": true}"#)
        #expect(Set(dryRetry.json?["job_ids"] as? [String] ?? []) == chosen, "\(dryRetry.text)")
        let retried = try await server.send("POST", base + "/jobs:retry", json: #"{"all": true, "state": "cancelled"}"#)
        #expect(retried.json?["changed"] as? Int == 5, "\(retried.text)")
        let bad = try await server.send("POST", base + "/jobs:retry", json: #"{"all": true, "state": "running"}"#)
        #expect(bad.status == 400, "\(bad.text)")
        try await running(setup, handler: handler) {
            #expect(await eventually { ran.withLock { $0.count } == 6 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        #expect(Set(ran.withLock { $0 }) == chosen.union(["other"]) && ran.withLock { $0.count } == 6, "each once")
        let twice = try await server.send("POST", base + "/jobs/q-1:retry")
        #expect(twice.status == 409 && twice.text.contains("succeeded"), "\(twice.text)")
    }
}
