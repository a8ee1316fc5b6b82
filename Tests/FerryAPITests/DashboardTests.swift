import Ferry
import FerryAPI
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// The dashboard in a real headless Chromium (Debian's `chromium`, driven over the DevTools
/// protocol by dashboard_browser.py) against a real `ferry serve` and Redis.
@Suite("Dashboard in headless Chromium")
struct DashboardTests {
    /// One step's report from the browser driver.
    struct Report: Decodable {
        var url: String
        var errors: [String]
        var missing: [String]
        var value: Int?
    }

    /// Runs `steps` (dashboard_browser.py's format) in a fresh Chromium, screenshots into
    /// docs/screenshots.
    static func browse(_ server: APIServerProcess, _ steps: [[String: Any]]) async throws -> [Report] {
        let script = repositoryRoot.appending(path: "Tests/FerryAPITests/dashboard_browser.py").path()
        let shots = repositoryRoot.appending(path: "docs/screenshots").path()
        let result = try await runProcess(
            URL(fileURLWithPath: "/usr/bin/env"), ["python3", script, server.baseURL, shots],
            input: Array(try JSONSerialization.data(withJSONObject: steps)), timeout: .seconds(300))
        #expect(result.status == 0, "\(result.standardError.suffix(3000))")
        let reports = try result.lines.map { try JSONDecoder().decode(Report.self, from: Data($0.utf8)) }
        #expect(reports.count == steps.count, "\(result.standardOutput)\(result.standardError.suffix(3000))")
        return reports
    }

    @Test(
        "each page loads with no console errors and shows what the test put in Redis; a read-only user cannot redrive, an admin can through the UI, and both are in the audit log"
    )
    func pagesAndActions() async throws {
        let setup = try await TestQueue("dash")
        // An hour of history, as ferry serve's sampler writes it, for the charts (before the queue
        // has jobs, so no ferry serve's sampler appends the present first): a busy
        // half-hour, a quiet one, and a burst of failures.
        let now = Date().millisecondsSince1970
        var (published, finished, dead) = (0, 0, 0)
        for minute in 0..<60 {
            let rate = 40 + Int(30 * sin(Double(minute) / 5))
            (published, finished, dead) = (
                published + rate + 2, finished + rate, dead + (minute > 40 && minute < 46 ? 9 : minute % 11 == 0 ? 2 : 0)
            )
            try await setup.redis.send(
                RedisCommand(
                    "XADD",
                    [
                        .string(setup.keys.prefix + ":history"), .string("\(now - Int64(60 - minute) * 60_000)-0"), "published",
                        .integer(Int64(published)), "finished", .integer(Int64(finished)), "dead", .integer(Int64(dead)),
                    ]))
        }

        let keys = APIKeys(connection: setup.redis)
        let adminName = uniqueName("admin")
        let admin = try await keys.create(name: adminName, scopes: [.admin]).token
        let reader = try await keys.create(name: uniqueName("reader"), scopes: [.read]).token
        try await QueueEvents(queue: setup.queue, connection: setup.redis).enable()
        _ = try await setup.publisher.publish(
            (0..<5).map { JobMessage(type: "t", data: Array(#"{"page": \#($0)}"#.utf8), jobID: "ok-\($0)") }
                + (0..<3).map { JobMessage(type: "t", jobID: "bad-\($0)") })
        try await withWorker(
            setup,
            handlers: [
                "t": JobHandlerClosure { job in if job.id.hasPrefix("bad") { throw PermanentJobError("the PDF is encrypted") } }
            ],
            maxAttempts: 1
        ) {
            #expect(await eventually { try await setup.length(setup.keys.deadLetter) == 3 })
            #expect(await eventually { try await setup.pendingCount() == 0 })
        }
        let definition = WorkflowDefinition("ingest") {
            WorkflowStep("extract", type: "extract")
            WorkflowStep("summarize", type: "summarize")
        }
        _ = try await Workflows(queue: setup.queue, connection: setup.redis).start(definition, id: "wf-dash")
        try await QueueLimits(queue: setup.queue, connection: setup.redis).set(QueueLimit(name: "render", kind: .concurrency(2)))
        try await CronSchedules(queue: setup.queue, connection: setup.redis).set(
            CronSchedule(name: "nightly", timing: .every(.seconds(3600)), job: JobMessage(type: "report")))
        let server = try await APIServerProcess()
        let queue = "/queues/\(setup.name)"
        let readerSteps: [[String: Any]] = [
            ["login": reader],
            ["visit": "/", "expect": [setup.name], "screenshot": "queues.png"],
            ["visit": queue, "expect": ["Groups", "render", "nightly", "workers"], "screenshot": "queue.png"],
            ["visit": queue + "/jobs", "expect": ["ok-0", "bad-2", "succeeded"], "screenshot": "jobs.png"],
            ["visit": queue + "/jobs/ok-3", "expect": ["ok-3", "succeeded", #"{"page": 3}"#], "screenshot": "job.png"],
            [
                "visit": queue + "/dead-letters", "expect": ["permanent_failure", "bad-1", "the PDF is encrypted"],
                "screenshot": "dead-letters.png",
            ],
            ["evaluate": "document.querySelectorAll('form[action$=\"redrive\"]').length"],
            [
                "evaluate":
                    "fetch('\(queue)/dead-letters/redrive', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'csrf=' + document.cookie.match(/ferry_csrf=([0-9a-f]+)/)[1] + '&error_class=permanent_failure'}).then(r => r.status)"
            ],
            ["visit": queue + "/workflows", "expect": ["wf-dash", "running"], "screenshot": "workflows.png"],
            [
                "visit": queue + "/workflows/wf-dash", "expect": ["extract", "summarize", "started"],
                "screenshot": "workflow.png",
            ],
            ["visit": "/audit?queue=\(setup.name)", "expect": ["refused: not an admin"], "screenshot": "audit.png"],
            ["click": "header form button"],
        ]
        let read = try await Self.browse(server, readerSteps)
        try #require(read.count == readerSteps.count)
        for (step, report) in zip(readerSteps, read) where step["visit"] != nil {
            #expect(report.errors.isEmpty, "\(step): \(report.errors)")
            #expect(report.missing.isEmpty, "\(step): missing \(report.missing)")
        }
        #expect(read[0].url.hasSuffix("/"), "signed in, back to the start: \(read[0].url)")
        #expect(read[6].value == 0, "a read-only user sees no redrive button")
        #expect(read[7].value == 403, "and a redrive it posts anyway is refused")
        #expect(read[11].url.contains("/login"), "signed out")
        #expect(try await setup.length(setup.keys.deadLetter) == 3)

        let adminSteps: [[String: Any]] = [
            ["login": admin],
            ["visit": queue + "/dead-letters", "expect": ["Redrive all 3"]],
            ["click": "form[action$=\"redrive\"] button", "expect": ["3 redriven"]],
        ]
        let acted = try await Self.browse(server, adminSteps)
        try #require(acted.count == adminSteps.count)
        #expect(acted[1].errors.isEmpty && acted[1].missing.isEmpty, "\(acted[1])")
        #expect(acted[2].missing.isEmpty && acted[2].errors.isEmpty, "\(acted[2])")
        #expect(try await setup.length(setup.keys.deadLetter) == 0)
        let log = try await AuditLog(connection: setup.redis).recent(limit: 1000).filter { $0.queue == setup.name }
        #expect(
            log.contains { $0.actor == "API key \(adminName)" && $0.action == "redrive" && $0.outcome == "3 redriven" }, "\(log)")
        #expect(log.contains { $0.action == "redrive" && $0.outcome == "refused: not an admin" })
    }

    @Test(
        "a page without a session redirects to the sign-in page; a wrong key is refused there; the API refuses the cookie for writes"
    )
    func signInRequired() async throws {
        let server = try await APIServerProcess()
        let page = try await runProcess(
            URL(fileURLWithPath: "/usr/bin/curl"),
            ["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", server.baseURL + "/queues/x"])
        #expect(page.standardOutput.hasPrefix("303 ") && page.standardOutput.contains("/login?next="), "\(page.standardOutput)")
        let steps: [[String: Any]] = [
            ["login": "ferry_0000000000000000_" + String(repeating: "0", count: 64), "expect": ["not one this server knows"]]
        ]
        let reports = try await Self.browse(server, steps)
        #expect(reports.first?.missing.isEmpty == true, "\(reports)")

        // A sign-in goes back only to a page of this server, never to another host.
        let key = try await APIKeys(connection: try await TestRedis.connection()).create(name: uniqueName("r"), scopes: [.read])
            .token
        let jar = FileManager.default.temporaryDirectory.appending(path: uniqueName("jar")).path()
        let curl = URL(fileURLWithPath: "/usr/bin/curl")
        _ = try await runProcess(curl, ["-s", "-o", "/dev/null", "-c", jar, server.baseURL + "/login"])
        let cookies = try String(contentsOfFile: jar, encoding: .utf8)
        let csrf = try #require(cookies.split(separator: "\n").first { $0.contains("ferry_csrf") }?.split(separator: "\t").last)
        for (next, expected) in [("//evil.example/x", "/"), ("/\\evil.example", "/"), ("/queues/a:b", "/queues/a:b")] {
            let signIn = try await runProcess(
                curl,
                [
                    "-s", "-o", "/dev/null", "-w", "%{http_code} %header{location}", "-b", jar, "--data-urlencode",
                    "csrf=\(csrf)",
                    "--data-urlencode", "token=\(key)", "--data-urlencode", "next=\(next)", server.baseURL + "/login",
                ])
            #expect(signIn.standardOutput == "303 \(expected)", "next \(next): \(signIn.standardOutput)")
        }
    }

    @Test("with --secure-cookies every dashboard cookie is Secure (sent over HTTPS only); without it, none is")
    func secureCookies() async throws {
        let curl = URL(fileURLWithPath: "/usr/bin/curl")
        let key = try await APIKeys(connection: try await TestRedis.connection()).create(name: uniqueName("r"), scopes: [.read])
            .token
        for secure in [true, false] {
            let server = try await APIServerProcess(secure ? ["--secure-cookies"] : [])
            let page = try await runProcess(curl, ["-s", "-o", "/dev/null", "-D", "-", server.baseURL + "/login"])
            let csrfCookie = try #require(
                page.standardOutput.split(separator: "\r\n").first { $0.lowercased().hasPrefix("set-cookie: ferry_csrf=") },
                "\(page.standardOutput)")
            #expect(csrfCookie.contains("; Secure") == secure, "\(csrfCookie)")
            let csrf = try #require(csrfCookie.split(separator: "=", maxSplits: 1).last?.split(separator: ";").first)
            let signIn = try await runProcess(
                curl,
                [
                    "-s", "-o", "/dev/null", "-D", "-", "-H", "Cookie: ferry_csrf=\(csrf)", "--data-urlencode", "csrf=\(csrf)",
                    "--data-urlencode", "token=\(key)", server.baseURL + "/login",
                ])
            let session = try #require(
                signIn.standardOutput.split(separator: "\r\n").first { $0.lowercased().hasPrefix("set-cookie: ferry_session=") },
                "\(signIn.standardOutput)")
            #expect(session.contains("; HttpOnly") && session.contains("; SameSite=Strict"), "\(session)")
            #expect(session.contains("; Secure") == secure, "\(session)")
        }
    }
}
