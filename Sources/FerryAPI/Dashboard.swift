import Ferry
import FerryRedis
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Mustache
import ServiceLifecycle

/// `ferry serve`'s dashboard: server-rendered pages (swift-mustache templates embedded at build
/// time) over the same library calls as the API, with no script, font or style from elsewhere.
/// Every page works without JavaScript; `live.js` only refreshes a page when its queue's events
/// say something changed.
///
/// Who may do what follows the API: a session made from an API key or JWT (`/login`), or
/// everyone with `--no-auth`. `read` sees; actions (pause, cancel, retry, redrive, purge) need
/// `admin`, are plain form posts carrying a CSRF token that must equal the `ferry_csrf` cookie
/// (double submit, with `SameSite=Strict` cookies and an `Origin` check besides), and each is
/// recorded in the audit log, refused or done.
struct Dashboard: Sendable {
    let pool: RedisConnectionPool
    var connection: RedisConnection { pool.next }
    let authenticator: Authenticator
    var audit: AuditLog { AuditLog(connection: pool.next) }
    let library: MustacheLibrary
    let logger: Logger

    static let csrfCookie = "ferry_csrf"

    /// Whether cookies carry `Secure`, so a browser sends them over HTTPS only (`ferry serve
    /// --secure-cookies`, for a dashboard served behind TLS; off by default so the dashboard
    /// works over plain HTTP on loopback).
    let secureCookies: Bool

    init(pool: RedisConnectionPool, authenticator: Authenticator, secureCookies: Bool = false, logger: Logger) throws {
        self.pool = pool
        self.authenticator = authenticator
        self.secureCookies = secureCookies
        self.logger = logger
        var library = MustacheLibrary()
        let templates: [(String, String)] = [
            ("layout", EmbeddedAPIFiles.layout), ("login", EmbeddedAPIFiles.login), ("queues", EmbeddedAPIFiles.queues),
            ("queue", EmbeddedAPIFiles.queue), ("jobs", EmbeddedAPIFiles.jobs), ("job", EmbeddedAPIFiles.job),
            ("dead_letters", EmbeddedAPIFiles.dead_letters), ("workflows", EmbeddedAPIFiles.workflows),
            ("workflow", EmbeddedAPIFiles.workflow), ("audit", EmbeddedAPIFiles.audit), ("message", EmbeddedAPIFiles.message),
        ]
        for (name, text) in templates { try library.register(text, named: name) }
        self.library = library
    }

    /// Adds the dashboard's routes.
    func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/dashboard/style.css") { _, _ in Self.asset(EmbeddedAPIFiles.style, type: "text/css; charset=utf-8") }
        router.get("/dashboard/live.js") { _, _ in Self.asset(EmbeddedAPIFiles.live, type: "text/javascript; charset=utf-8") }
        router.get("/login") { request, _ in try await login(request, error: nil) }
        router.post("/login") { request, _ in try await signIn(request) }
        router.post("/logout") { request, _ in try await signOut(request) }
        router.get("/") { request, _ in try await page(request) { visit in try await queues(visit) } }
        router.get("/audit") { request, _ in try await page(request) { visit in try await auditPage(visit) } }
        router.get("/queues/:queue") { request, context in
            try await page(request) { visit in try await queue(visit, try Self.queue(context)) }
        }
        router.get("/queues/:queue/jobs") { request, context in
            try await page(request) { visit in try await jobs(visit, try Self.queue(context)) }
        }
        router.get("/queues/:queue/jobs/:job") { request, context in
            try await page(request) { visit in try await job(visit, try Self.queue(context), Self.parameter(context, "job")) }
        }
        router.get("/queues/:queue/dead-letters") { request, context in
            try await page(request) { visit in try await deadLetters(visit, try Self.queue(context)) }
        }
        router.get("/queues/:queue/workflows") { request, context in
            try await page(request) { visit in try await workflows(visit, try Self.queue(context)) }
        }
        router.get("/queues/:queue/workflows/:workflow") { request, context in
            try await page(request) { visit in
                try await workflow(visit, try Self.queue(context), Self.parameter(context, "workflow"))
            }
        }
        for action in ["pause", "resume"] {
            router.post("/queues/:queue/\(action)") { request, context in
                try await act(request, context, action: action, target: "") { queue, _ in
                    let pause = QueuePause(queue: queue, connection: connection)
                    let changed = action == "pause" ? try await pause.pause() : try await pause.resume()
                    return changed ? "queue \(action)d" : "nothing to do"
                }
            }
        }
        for action in ["redrive", "purge"] {
            router.post("/queues/:queue/dead-letters/\(action)") { request, context in
                let form = try await Self.form(request)
                return try await act(request, context, action: action, target: form["error_class"] ?? "", form: form) {
                    queue, form in
                    var selection = DeadLetters.Selection()
                    selection.errorClass = form["error_class"].flatMap { $0.isEmpty ? nil : $0 }
                    let deadLetters = DeadLetters(queue: queue, connection: connection)
                    let letters = try await deadLetters.select(selection, limit: 10_000).letters
                    if action == "purge" { return "\(try await deadLetters.purge(ids: letters.map(\.id))) purged" }
                    var redriven = 0
                    for letter in letters where try await deadLetters.redrive(letter) != nil { redriven += 1 }
                    return "\(redriven) redriven"
                }
            }
        }
        router.post("/queues/:queue/jobs/:job/cancel") { request, context in
            let jobID = Self.parameter(context, "job")
            return try await act(request, context, action: "cancel", target: jobID) { queue, _ in
                guard let before = try await JobStatus.requestCancellation(jobID: jobID, queue: queue, connection: connection)
                else {
                    return "no such job"
                }
                return before.isTerminal ? "already \(before.rawValue)" : "cancel requested"
            }
        }
        router.post("/queues/:queue/jobs/:job/retry") { request, context in
            let jobID = Self.parameter(context, "job")
            return try await act(request, context, action: "retry", target: jobID) { queue, _ in
                let deadLetters = DeadLetters(queue: queue, connection: connection)
                guard let letter = try await deadLetters.letter(jobID: jobID), try await deadLetters.redrive(letter) != nil else {
                    return "not in the dead-letter stream"
                }
                return "redriven"
            }
        }
    }

    // MARK: Visits

    /// Who is looking, and the CSRF token their forms carry.
    struct Visit: Sendable {
        var client: APIClient
        var csrf: String
        var newCSRF: Bool
        var request: Request
        var signedIn: Bool

        var isAdmin: Bool { client.may(.admin) }
        func query(_ name: String) -> String? {
            request.uri.queryParameters.get(name).flatMap { $0.isEmpty ? nil : $0 }
        }
    }

    /// Runs a page for a signed-in visitor; sends others to `/login`.
    func page(_ request: Request, _ body: (Visit) async throws -> Response) async throws -> Response {
        let client: APIClient?
        do {
            client = try await authenticator.client(of: request.head, cookies: true)
        } catch is APIProblem {
            client = nil
        }
        guard let client else {
            let next = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
            return Self.redirect("/login?next=" + (next.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "/"))
        }
        let cookie = Authenticator.cookie(Self.csrfCookie, in: request.head)
        let visit = Visit(
            client: client, csrf: cookie ?? APIKeys.randomHex(bytes: 16), newCSRF: cookie == nil, request: request,
            signedIn: !authenticator.isOpen)
        do {
            return try await body(visit)
        } catch let problem as APIProblem {
            return render(
                "message", ["heading": problem.kind.rawValue, "message": problem.detail], visit, status: problem.kind.status)
        } catch let error as FerryError {
            let problem = APIProblem(error)
            return render(
                "message", ["heading": problem.kind.rawValue, "message": problem.detail], visit, status: problem.kind.status)
        }
    }

    /// A `Set-Cookie` for the whole site, `SameSite=Strict`, `Secure` with ``secureCookies``;
    /// `maxAge` nil for a cookie that ends with the browser session.
    func setCookie(_ name: String, _ value: String, httpOnly: Bool = false, maxAge: Int64? = nil) -> HTTPField {
        var text = "\(name)=\(value); Path=/; SameSite=Strict"
        if httpOnly { text += "; HttpOnly" }
        if secureCookies { text += "; Secure" }
        if let maxAge { text += "; Max-Age=\(maxAge)" }
        return HTTPField(name: .setCookie, value: text)
    }

    /// Renders `template` inside the layout, with what every page shows.
    func render(_ template: String, _ values: [String: Any], _ visit: Visit, status: HTTPResponse.Status = .ok) -> Response {
        var context = values
        context["who"] = visit.client.name
        context["readOnly"] = !visit.isAdmin
        context["admin"] = visit.isAdmin
        context["signedIn"] = visit.signedIn
        context["csrf"] = visit.csrf
        context["notice"] = visit.query("notice")
        let html = library.render(Self.unwrapped(context) ?? [:], withTemplate: template) ?? "template \(template) is missing"
        var headers = Self.pageHeaders
        headers[.contentType] = "text/html; charset=utf-8"
        if visit.newCSRF {
            headers.append(setCookie(Self.csrfCookie, visit.csrf))
        }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// `value` with every optional unwrapped and every nil left out, through arrays and
    /// dictionaries: a template shows an absent value as absent (a missing key is false),
    /// where a nil wrapped in `Any` would read as present, and print as "nil".
    static func unwrapped(_ value: Any) -> Any? {
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional {
            guard let wrapped = mirror.children.first?.value else { return nil }
            return unwrapped(wrapped)
        }
        if let dictionary = value as? [String: Any] { return dictionary.compactMapValues(unwrapped) }
        if let array = value as? [Any] { return array.compactMap(unwrapped) }
        return value
    }

    /// No framing, no sniffing, nothing loaded from elsewhere, no inline script.
    static let pageHeaders: HTTPFields = [
        .contentSecurityPolicy: "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff", HTTPField.Name("Referrer-Policy")!: "same-origin",
        .cacheControl: "no-store",
    ]

    // MARK: Pages

    func queues(_ visit: Visit) async throws -> Response {
        let inspector = QueueInspector(connection: connection)
        var rows: [[String: Any]] = []
        for queue in try await inspector.queues(discover: false) where visit.client.sees(queue.rawValue) {
            guard let report = try await inspector.report(queue) else { continue }
            let hour = try await lastHour(queue, height: 24)
            rows.append([
                "name": queue.rawValue, "path": APIHandlers.pathComponent(queue.rawValue),
                "depth": report.groups.compactMap(\.lag).max() ?? 0, "running": report.groups.map(\.pending).reduce(0, +),
                "scheduled": report.scheduled, "dead": (report.deadLetters > 0 ? report.deadLetters : nil) as Any,
                "oldest": report.groups.compactMap(\.oldestPendingAgeMilliseconds).max().map { durationText(milliseconds: $0) }
                    ?? "–",
                "paused": !report.paused.isEmpty, "chart": hour.chart, "finishedHour": hour.finished, "deadHour": hour.dead,
            ])
        }
        return render("queues", ["queues": rows, "anyQueues": !rows.isEmpty], visit)
    }

    func queue(_ visit: Visit, _ queue: QueueName) async throws -> Response {
        guard let report = try await QueueInspector(connection: connection).report(queue) else {
            throw APIProblem(.notFound, "queue \(queue) has no jobs, dead letters or scheduled jobs")
        }
        let path = APIHandlers.pathComponent(queue.rawValue)
        let hour = try await lastHour(queue, height: 60)
        let groups: [[String: Any]] = report.groups.map { group in
            [
                "name": group.name, "lag": group.lag.map(String.init) ?? "?", "pending": group.pending,
                "consumers": group.consumers.count,
                "oldest": group.oldestPendingAgeMilliseconds.map { durationText(milliseconds: $0) } ?? "–",
                "states": group.states.sorted { $0.key < $1.key }.map {
                    ["state": $0.key, "count": $0.value, "group": group.name, "path": path]
                },
            ]
        }
        let consumers: [[String: Any]] = report.groups.flatMap { group in
            group.consumers.map {
                [
                    "name": $0.name, "group": group.name, "pending": $0.pending,
                    "idle": durationText(milliseconds: $0.idleMilliseconds),
                ]
            }
        }
        let limitStore = QueueLimits(queue: queue, connection: connection)
        var limits: [[String: Any]] = []
        for limit in try await limitStore.list().limits {
            let usage = try await limitStore.usage(of: limit)
            limits.append(["name": limit.name, "summary": limit.summary, "holding": usage.holding, "waiting": usage.waiting])
        }
        let cron: [[String: Any]] = try await CronSchedules(queue: queue, connection: connection).list().map { entry in
            [
                "name": entry.schedule.name, "timing": entry.schedule.timingDescription, "paused": entry.paused,
                "next": entry.nextAt.map(Self.time) ?? "–", "last": entry.lastJobID ?? "–",
            ]
        }
        return render(
            "queue",
            [
                "name": queue.rawValue, "path": path, "length": report.length, "scheduled": report.scheduled,
                "dead": report.deadLetters,
                "paused": (report.paused.isEmpty ? nil : report.paused.joined(separator: ", ")) as Any,
                "chartLarge": hour.chart, "finishedHour": hour.finished, "deadHour": hour.dead,
                "groups": groups, "consumers": consumers, "anyConsumers": !consumers.isEmpty, "limits": limits,
                "anyLimits": !limits.isEmpty, "cron": cron, "anyCron": !cron.isEmpty, "blocked": report.blockedOrderingKeys,
                "anyBlocked": !report.blockedOrderingKeys.isEmpty, "events": try await events(queue) as Any,
            ], visit)
    }

    func jobs(_ visit: Visit, _ queue: QueueName) async throws -> Response {
        let path = APIHandlers.pathComponent(queue.rawValue)
        if let id = visit.query("id") {
            return Self.redirect("/queues/\(path)/jobs/\(APIHandlers.pathComponent(id))")
        }
        let group = visit.query("group") ?? "workers"
        let state = try visit.query("state").map { text in
            guard let state = JobState(rawValue: text) else { throw APIProblem(.invalidRequest, "unknown state \(text)") }
            return state
        }
        let index = JobIndex(queue: queue, connection: connection)
        let counts = try await index.counts(group: group)
        let page = try await index.list(
            group: group, states: state.map { [$0] } ?? [], limit: 50,
            after: try visit.query("cursor").map { try JobIndex.Cursor($0) })
        let rows: [[String: Any]] = page.rows.map { row in
            [
                "id": row.jobID, "idPath": APIHandlers.pathComponent(row.jobID), "state": row.state.rawValue,
                "type": row.type ?? "",
                "published": Self.time(Date(millisecondsSince1970: row.publishedAt)), "attempts": row.attempts ?? 0,
                "error": row.errorClass ?? "",
            ]
        }
        let states: [[String: Any]] = JobIndex.indexedStates.map { candidate in
            ["name": candidate.rawValue, "count": counts[candidate] ?? 0, "current": candidate == state]
        }
        return render(
            "jobs",
            [
                "name": queue.rawValue, "path": path, "group": group, "state": state?.rawValue as Any, "states": states,
                "jobs": rows, "anyJobs": !rows.isEmpty,
                "next": page.next.map { $0.description.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "" }
                    as Any,
                "events": try await events(queue) as Any,
            ], visit)
    }

    /// The most payload bytes a job page shows.
    static let payloadPreview = 4096

    func job(_ visit: Visit, _ queue: QueueName, _ jobID: String) async throws -> Response {
        let record = try await JobStatusRecord.load(jobID: jobID, queue: queue, connection: connection)
        let locator = JobLocator(queue: queue, connection: connection)
        let found = try await locator.find(record?.shared["entry_id"] ?? jobID)
        guard record != nil || found != nil else {
            throw APIProblem(
                .notFound, "no job \"\(jobID)\" in queue \(queue): no status (never recorded, or expired) and no entry")
        }
        var groups: [[String: Any]] = []
        var cancellable = false
        var retryable = false
        for (group, fields) in (record?.groups ?? [:]).sorted(by: { $0.key < $1.key }) {
            let state = fields["state"] ?? "queued"
            cancellable = cancellable || !(JobState(rawValue: state)?.isTerminal ?? false)
            retryable = retryable || state == JobState.dead.rawValue
            groups.append([
                "group": group, "state": state, "progress": fields["progress"].flatMap { Int($0) } as Any,
                "stage": fields["stage"] as Any,
                "fields": fields.sorted { $0.key < $1.key }.filter { $0.key != "state" }.map { name, value in
                    [
                        "name": name,
                        "value": JobStatus.isTime(name)
                            ? Int64(value).map { Self.time(Date(millisecondsSince1970: $0)) } ?? value : value,
                    ]
                },
            ])
        }
        let entryID: String? = record?.shared["entry_id"] ?? found?.entry.id
        let eventsURL = try await events(queue)
        var values: [String: Any] = [
            "name": queue.rawValue, "path": APIHandlers.pathComponent(queue.rawValue), "id": jobID,
            "idPath": APIHandlers.pathComponent(jobID), "type": record?.shared["type"] ?? found?.entry.text(of: "type") ?? "?",
            "entry": entryID as Any, "groups": groups, "cancellable": cancellable,
            "retryable": retryable, "events": eventsURL as Any,
        ]
        if let data = found?.entry.value(of: WireFormat.Field.data) {
            let shown = data.prefix(Self.payloadPreview)
            values["payload"] = String(validating: shown, as: UTF8.self) ?? "(\(data.count) bytes of binary data)"
            values["payloadCut"] = data.count > shown.count
            values["payloadShown"] = shown.count
            values["payloadSize"] = data.count
        } else {
            values["payloadNote"] =
                found == nil
                ? "The entry is no longer in the stream (trimmed after it finished)." : "No payload, or one stored by reference."
        }
        if eventsURL != nil {
            let history = try await QueueEvents(queue: queue, connection: connection).read(
                after: "0-0", count: QueueEvents.capacity
            )
            .filter { $0.jobID == jobID }.map { event -> [String: Any] in
                [
                    "at": Self.time(event.at), "group": event.group ?? "–", "from": event.from?.rawValue ?? "–",
                    "state": event.state?.rawValue ?? "?",
                ]
            }
            values["history"] = history
            values["anyHistory"] = !history.isEmpty
            values["historyNote"] = "No events for this job among the kept ones."
        } else {
            values["historyNote"] = "Events are off for this queue (ferry queue events \(queue) on)."
        }
        return render("job", values, visit)
    }

    func deadLetters(_ visit: Visit, _ queue: QueueName) async throws -> Response {
        let path = APIHandlers.pathComponent(queue.rawValue)
        let letters = try await DeadLetters(queue: queue, connection: connection).select(.init(), limit: 10_000).letters
        let byClass = Dictionary(grouping: letters) { $0.errorClass ?? "unknown" }
        let classes: [[String: Any]] = byClass.sorted { $0.value.count > $1.value.count }.map { errorClass, letters in
            [
                "errorClass": errorClass, "count": letters.count, "path": path,
                "more": (letters.count > 20 ? letters.count - 20 : nil) as Any,
                "letters": letters.suffix(20).reversed().map { letter -> [String: Any] in
                    [
                        "jobID": letter.jobID, "idPath": APIHandlers.pathComponent(letter.jobID), "type": letter.type ?? "",
                        "group": letter.sourceGroup ?? "", "failed": letter.failedAt.map(Self.time) ?? "",
                        "error": String((letter.error ?? "").prefix(200)), "path": path,
                    ]
                },
            ]
        }
        return render("dead_letters", ["name": queue.rawValue, "path": path, "classes": classes], visit)
    }

    func workflows(_ visit: Visit, _ queue: QueueName) async throws -> Response {
        let path = APIHandlers.pathComponent(queue.rawValue)
        let state =
            try visit.query("state").map { text in
                guard let state = Workflows.State(rawValue: text) else {
                    throw APIProblem(.invalidRequest, "unknown workflow state \(text)")
                }
                return state
            } ?? .running
        let store = Workflows(queue: queue, connection: connection)
        var rows: [[String: Any]] = []
        for id in try await store.list(state: state, limit: 100) {
            guard let status = try await store.status(id) else { continue }
            rows.append([
                "id": id, "idPath": APIHandlers.pathComponent(id), "name": status.name, "state": status.state.rawValue,
                "progress": status.progress, "reason": status.reason ?? "", "path": path,
            ])
        }
        let states: [[String: Any]] = Workflows.State.allCases.map {
            ["name": $0.rawValue, "current": $0 == state, "path": path]
        }
        return render(
            "workflows",
            [
                "name": queue.rawValue, "path": path, "state": state.rawValue, "states": states, "workflows": rows,
                "anyWorkflows": !rows.isEmpty, "events": try await events(queue) as Any,
            ], visit)
    }

    func workflow(_ visit: Visit, _ queue: QueueName, _ id: String) async throws -> Response {
        let store = Workflows(queue: queue, connection: connection)
        guard let status = try await store.status(id) else {
            throw APIProblem(.notFound, "no workflow \"\(id)\" in queue \(queue) (never started, or expired)")
        }
        let path = APIHandlers.pathComponent(queue.rawValue)
        let history: [[String: Any]] = try await store.history(id).map { event in
            [
                "at": Self.time(Date(millisecondsSince1970: event.at)), "event": event.event, "step": event.step,
                "detail": event.detail,
            ]
        }
        return render(
            "workflow",
            [
                "name": queue.rawValue, "path": path, "id": id, "workflowName": status.name, "state": status.state.rawValue,
                "progress": status.progress, "reason": status.reason as Any,
                "steps": status.steps.map { step -> [String: Any] in
                    [
                        "name": step.name, "state": step.state, "jobID": step.jobID as Any,
                        "jobPath": step.jobID.map(APIHandlers.pathComponent) as Any,
                        "runs": (step.runs > 0 ? step.runs : nil) as Any,
                        "path": path,
                    ]
                },
                "history": history, "anyHistory": !history.isEmpty, "events": try await events(queue) as Any,
            ], visit)
    }

    func auditPage(_ visit: Visit) async throws -> Response {
        // One queue's (`?queue=`) among the last 5,000, or everyone's last 200.
        let queue = visit.query("queue")
        let entries: [[String: Any]] = try await audit.recent(limit: queue == nil ? 200 : 5000).filter {
            visit.client.sees($0.queue) && (queue == nil || $0.queue == queue) || (queue == nil && $0.queue.isEmpty)
        }
        .prefix(200)
        .map {
            [
                "at": Self.time($0.at), "actor": $0.actor, "action": $0.action, "queue": $0.queue, "target": $0.target,
                "outcome": $0.outcome,
            ]
        }
        return render("audit", ["entries": entries, "anyEntries": !entries.isEmpty, "queue": queue as Any], visit)
    }

    /// The queue's last hour: its chart `height` pixels high, and the jobs finished and
    /// dead-lettered in it.
    func lastHour(_ queue: QueueName, height: Int) async throws -> (chart: String, finished: Int, dead: Int) {
        let samples = try await QueueHistory(queue: queue, connection: connection).samples()
        let finished = QueueHistory.perMinute(samples) { $0.finished }
        let dead = QueueHistory.perMinute(samples) { $0.dead }
        return (
            Self.chart(finished: finished, dead: dead, height: height), finished.compactMap { $0 }.reduce(0, +),
            dead.compactMap { $0 }.reduce(0, +)
        )
    }

    /// The events URL the page follows for live updates: only when the queue's events are on,
    /// so a page never opens a stream that is refused (a console error in the browser).
    func events(_ queue: QueueName) async throws -> String? {
        guard try await QueueEvents(queue: queue, connection: connection).isEnabled() else { return nil }
        return "/v1/queues/\(APIHandlers.pathComponent(queue.rawValue))/events"
    }

    // MARK: Actions

    /// Runs an admin action from a form: the CSRF token must match, the visitor must be an
    /// admin who sees the queue; either way the audit log records it. Answers with a redirect
    /// back to where the form was, saying what happened.
    func act(
        _ request: Request, _ context: BasicRequestContext, action: String, target: String, form given: [String: String]? = nil,
        _ perform: (QueueName, [String: String]) async throws -> String
    ) async throws -> Response {
        let form: [String: String]
        if let given { form = given } else { form = try await Self.form(request) }
        return try await page(request) { visit in
            let queue = try Self.queue(context)
            guard Self.sameOrigin(request), let token = form["csrf"], !token.isEmpty, token == visit.csrf, !visit.newCSRF else {
                try await audit.record(
                    actor: visit.client.name, action: action, queue: queue.rawValue, target: target,
                    outcome: "refused: bad CSRF token")
                throw APIProblem(.forbidden, "the form's CSRF token does not match this browser's; reload the page and try again")
            }
            guard visit.isAdmin, visit.client.sees(queue.rawValue) else {
                try await audit.record(
                    actor: visit.client.name, action: action, queue: queue.rawValue, target: target,
                    outcome: "refused: not an admin")
                throw APIProblem(.forbidden, "\(visit.client.name) is read-only here: \(action) needs the admin scope")
            }
            let outcome = try await perform(queue, form)
            try await audit.record(
                actor: visit.client.name, action: action, queue: queue.rawValue, target: target, outcome: outcome)
            let back =
                request.headers[.referer].flatMap { URL(string: $0)?.path }.flatMap(Self.localPath)
                ?? "/queues/\(APIHandlers.pathComponent(queue.rawValue))"
            return Self.redirect(back + "?notice=" + (outcome.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""))
        }
    }

    // MARK: Signing in

    func login(_ request: Request, error: String?, status: HTTPResponse.Status = .ok) async throws -> Response {
        if authenticator.isOpen { return Self.redirect("/") }
        let cookie = Authenticator.cookie(Self.csrfCookie, in: request.head)
        let visit = Visit(
            client: APIClient(name: "not signed in", identity: "", scopes: [.admin], queues: []),
            csrf: cookie ?? APIKeys.randomHex(bytes: 16), newCSRF: cookie == nil, request: request, signedIn: false)
        let next = request.uri.queryParameters.get("next") ?? "/"
        return render("login", ["error": error as Any, "next": next], visit, status: status)
    }

    func signIn(_ request: Request) async throws -> Response {
        let form = try await Self.form(request)
        let cookie = Authenticator.cookie(Self.csrfCookie, in: request.head)
        guard Self.sameOrigin(request), let cookie, form["csrf"] == cookie else {
            return try await login(request, error: "The form expired; sign in again.", status: .forbidden)
        }
        let client: APIClient
        do {
            client = try await authenticator.client(token: (form["token"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines))
        } catch let problem as APIProblem {
            return try await login(request, error: problem.detail, status: .unauthorized)
        }
        let (session, lifetime) = try await authenticator.sessions.create(for: client)
        try await audit.record(actor: client.name, action: "sign_in", outcome: "signed in to the dashboard")
        let next = form["next"].flatMap(Self.localPath) ?? "/"
        var response = Self.redirect(next)
        response.headers.append(
            setCookie(
                DashboardSessions.cookieName, session, httpOnly: true, maxAge: max(1, lifetime.components.seconds)))
        return response
    }

    func signOut(_ request: Request) async throws -> Response {
        let form = try await Self.form(request)
        if let cookie = Authenticator.cookie(Self.csrfCookie, in: request.head), form["csrf"] == cookie,
            let session = Authenticator.cookie(DashboardSessions.cookieName, in: request.head)
        {
            try await authenticator.sessions.end(session)
        }
        var response = Self.redirect("/login")
        response.headers.append(setCookie(DashboardSessions.cookieName, "", httpOnly: true, maxAge: 0))
        return response
    }

    // MARK: Helpers

    static func queue(_ context: BasicRequestContext) throws -> QueueName {
        try QueueName(parameter(context, "queue"))
    }

    static func parameter(_ context: BasicRequestContext, _ name: String) -> String {
        APIHandlers.percentDecoded(context.parameters.get(name) ?? "")
    }

    /// A form post's fields (`application/x-www-form-urlencoded`, at most 64 KiB).
    static func form(_ request: Request) async throws -> [String: String] {
        var request = request
        let body = try await request.collectBody(upTo: 65_536)
        let text = String(buffer: body).replacingOccurrences(of: "+", with: "%20")
        var fields: [String: String] = [:]
        for item in URLComponents(string: "?" + text)?.queryItems ?? [] { fields[item.name] = item.value ?? "" }
        return fields
    }

    /// A browser's form post names its page's origin; one from another site is refused.
    static func sameOrigin(_ request: Request) -> Bool {
        guard let origin = request.headers[.origin] else { return true }
        guard let host = request.head.authority else { return false }
        return URL(string: origin)?.host.map { found in
            let port = URL(string: origin)?.port.map { ":\($0)" } ?? ""
            return found + port == host || found == host
        } ?? false
    }

    /// `path` when it stays on this server (`/queues/q`); nil for what a browser would read as
    /// another host (`//evil.example`, `/\evil.example`): no open redirect.
    static func localPath(_ path: String) -> String? {
        path.hasPrefix("/") && !path.hasPrefix("//") && !path.contains("\\") ? path : nil
    }

    static func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: type, .cacheControl: "max-age=300"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func time(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withSpaceBetweenDateAndTime]
        return formatter.string(from: date) + " UTC"
    }

    /// A small bar chart of the last hour, one bar a minute: jobs finished (green) with the
    /// dead-lettered (red) over them. Only numbers go in, so it is safe to embed unescaped.
    static func chart(finished: [Int?], dead: [Int?], height: Int) -> String {
        let width = 4
        let peak = max(1, (finished + dead).compactMap { $0 }.max() ?? 1)
        var bars = ""
        for (index, (done, failed)) in zip(finished, dead).enumerated() {
            let x = index * width
            if let done, done > 0 {
                let h = max(1, done * height / peak)
                bars += "<rect class=\"finished\" x=\"\(x)\" y=\"\(height - h)\" width=\"\(width - 1)\" height=\"\(h)\"/>"
            }
            if let failed, failed > 0 {
                let h = max(1, failed * height / peak)
                bars += "<rect class=\"dead\" x=\"\(x)\" y=\"\(height - h)\" width=\"\(width - 1)\" height=\"\(h)\"/>"
            }
        }
        let total = finished.count * width
        return
            "<svg class=\"chart\" width=\"\(total)\" height=\"\(height)\" viewBox=\"0 0 \(total) \(height)\" role=\"img\" aria-label=\"jobs per minute, last hour\">\(bars)</svg>"
    }
}

/// Samples every queue's activity for the dashboard's charts (``QueueHistory``) every ten
/// seconds while `ferry serve` runs. Several servers take turns, so a queue gets one sample an
/// interval; a failed round is logged and the next one tries again.
public struct QueueHistorySampler: Service {
    let connection: RedisConnection
    let logger: Logger
    /// How often it also scans for queues the registry misses (``QueueRegistry``): only plain
    /// `XADD`s wrote them, and no worker has started on them yet.
    static let discoveryInterval: Duration = .seconds(300)

    /// Samples through `connection`.
    public init(connection: RedisConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    /// Samples until the service group shuts down.
    public func run() async throws {
        var discovered: ContinuousClock.Instant?
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                // The registry each time; a scan for queues it misses every few minutes.
                let discover = discovered.map { ContinuousClock.now - $0 >= Self.discoveryInterval } ?? true
                if discover { discovered = .now }
                for queue in try await QueueInspector(connection: connection).queues(discover: discover) {
                    try await QueueHistory(queue: queue, connection: connection).sample()
                }
            } catch {
                logger.warning("history_sample_failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: QueueHistory.interval)
        }
    }
}
