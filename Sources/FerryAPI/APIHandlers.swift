import Ferry
import FerryRedis
import Foundation
import OpenAPIRuntime
import Synchronization

/// The API's operations (the protocol generated from docs/openapi.yaml), each one call of the
/// library's stores: the API adds no queue logic of its own. A library error becomes a problem
/// (``APIProblem``) in ``ProblemMiddleware``; what a handler refuses itself it throws as one.
struct APIHandlers: APIProtocol {
    /// The connections requests take turns on.
    let pool: RedisConnectionPool
    /// A connection for the next command.
    var connection: RedisConnection { pool.next }
    /// Settings every publish uses (payload limit, dedup window).
    let publishing: Publisher.Configuration
    /// A reused `Idempotency-Key` is answered 409 even with the same body (`--reject-duplicates`).
    var rejectsDuplicates = false
    /// The callers' rate limits, for a batch publish, which counts each of its jobs.
    let limiter: RateLimiter
    /// One long-lived publisher per queue, as the library means them to be: each keeps the
    /// queue's bounds for a second and its retention schedule, instead of reading the bounds
    /// again for every request.
    let publishers = Publishers()
    /// The longest `?wait=` a status request may hold.
    static let longestWait: Duration = .seconds(60)

    // MARK: Queues

    func listQueues(_ input: Operations.ListQueues.Input) async throws -> Operations.ListQueues.Output {
        let client = APIClient.current
        let names = try await QueueInspector(connection: connection).queues(discover: false).map(\.rawValue).filter(client.sees)
        return .ok(.init(body: .json(.init(queues: names))))
    }

    func getQueue(_ input: Operations.GetQueue.Input) async throws -> Operations.GetQueue.Output {
        let queue = try queueName(input.path.queue)
        guard let report = try await QueueInspector(connection: connection).report(queue) else {
            throw APIProblem(.notFound, "queue \(queue) has no jobs, dead letters or scheduled jobs")
        }
        let groups = report.groups.map { group in
            Components.Schemas.Group(
                name: group.name, pending: group.pending, lag: group.lag, consumers: group.consumers.count,
                oldestPendingAgeMs: group.oldestPendingAgeMilliseconds,
                states: .init(additionalProperties: group.states))
        }
        return .ok(
            .init(
                body: .json(
                    .init(
                        queue: report.queue, length: report.length, deadLetters: report.deadLetters, scheduled: report.scheduled,
                        paused: report.paused, groups: groups,
                        workflows: report.workflows.isEmpty ? nil : .init(additionalProperties: report.workflows)))))
    }

    // MARK: Publishing

    func publishJob(_ input: Operations.PublishJob.Input) async throws -> Operations.PublishJob.Output {
        let queue = try queueName(input.path.queue)
        guard case .json(let body) = input.body else { throw APIProblem(.invalidRequest, "send the job as JSON") }
        var job = try Self.callersKey(Self.message(from: PublishBody(body)))
        if let idempotencyKey = input.headers.idempotencyKey {
            job.idempotencyKey = idempotencyKey
            try await checkSameRequest(
                fingerprint: RequestFingerprints.fingerprint(of: body), idempotencyKey: idempotencyKey, queue: queue)
        }
        let accepted = try await publish(job, queue: queue)
        return .accepted(
            .init(
                headers: .init(location: accepted.statusUrl, idempotentReplayed: accepted.duplicate ? "true" : nil),
                body: .json(accepted)))
    }

    /// Publishes one job of a request (``publishJob(_:)``, or ``PublishRoute``'s quick path)
    /// and says what the answer says of it.
    func publish(_ job: JobMessage, queue: QueueName) async throws -> Components.Schemas.Accepted {
        let receipt = try await publishers.publisher(for: queue, pool: pool, configuration: publishing).publish(job)
        if receipt.isDuplicate && rejectsDuplicates {
            throw APIProblem(
                .conflict,
                "the Idempotency-Key was used before, by job \(receipt.jobID) (\(Self.statusURL(queue, receipt.jobID))); this server answers duplicates with 409 (--reject-duplicates): nothing new was published",
                jobID: receipt.jobID)
        }
        return accepted(receipt, job: job, queue: queue)
    }

    func publishJobs(_ input: Operations.PublishJobs.Input) async throws -> Operations.PublishJobs.Output {
        let queue = try queueName(input.path.queue)
        guard case .json(let body) = input.body else { throw APIProblem(.invalidRequest, "send the jobs as JSON") }
        guard (1...1000).contains(body.jobs.count) else {
            throw APIProblem(.invalidRequest, "a batch holds 1 to 1,000 jobs; got \(body.jobs.count)")
        }
        var jobs: [JobMessage] = []
        for (index, job) in body.jobs.enumerated() {
            do {
                jobs.append(try Self.callersKey(Self.message(from: PublishBody(job))))
            } catch let problem as APIProblem {
                throw APIProblem(.invalidRequest, "jobs[\(index)]: \(problem.detail); nothing was published")
            }
        }
        try await limiter.charge(APIClient.current, .publish, weight: jobs.count)
        let receipts = try await publishers.publisher(for: queue, pool: pool, configuration: publishing).publish(jobs)
        return .accepted(
            .init(body: .json(.init(jobs: zip(receipts, jobs).map { accepted($0, job: $1, queue: queue) }))))
    }

    /// The job a request body describes, checked as `ferry publish` checks one.
    static func message(from body: PublishBody) throws -> JobMessage {
        var job = JobMessage(type: body.type)
        switch (body.data, body.dataBase64) {
        case (.some, .some): throw APIProblem(.invalidRequest, "give the payload once: data or data_base64, not both")
        case (let bytes?, nil): job.data = bytes
        case (nil, let encoded?):
            guard let bytes = Data(base64Encoded: encoded) else { throw APIProblem(.invalidRequest, "data_base64 is not base64") }
            job.data = Array(bytes)
        case (nil, nil): break
        }
        job.attributes = body.attributes
        job.jobID = body.jobId
        job.key = body.key
        job.orderingKey = body.orderingKey
        job.maxAttempts = body.maxAttempts
        if let text = body.priority {
            guard let priority = JobPriority(text: text) else {
                throw APIProblem(.invalidRequest, "priority \"\(text)\" is not high, normal, low or a digit 0-9")
            }
            job.priority = priority
        }
        if let text = body.timeout { job.timeout = try duration(text, field: "timeout") }
        switch (body.delay, body.deliverAt) {
        case (.some, .some): throw APIProblem(.invalidRequest, "give the time once: delay or deliver_at, not both")
        case (let text?, nil): job.delay = try duration(text, field: "delay")
        case (nil, let date?): job.deliverAt = date
        case (nil, nil): break
        }
        return job
    }

    /// The job with the caller's own key when its token names one (`--jwt-subject-is-key`): a
    /// caller cannot publish under another's key, so per-key limits hold per caller.
    /// Such a job is also given an id of its own when it has none, so its queued record (which
    /// keeps its key) exists from the start and the caller can find it, and only it.
    static func callersKey(_ job: JobMessage) throws -> JobMessage {
        guard let key = APIClient.current.jobKey else { return job }
        if let named = job.key, named != key {
            throw APIProblem(.forbidden, "the job's key must be the caller's (\(key)); leave it out to use it")
        }
        var keyed = job
        keyed.key = key
        if keyed.jobID == nil { keyed.jobID = UUID().uuidString.lowercased() }
        return keyed
    }

    /// Refuses, as not found, a job that is not the caller's when the caller is scoped to its
    /// own jobs (``APIClient/jobKey``): another's job, even its existence, stays hidden.
    func requireOwnJob(_ jobID: String, queue: QueueName) async throws {
        guard APIClient.current.jobKey != nil else { return }
        let key: String?
        if let record = try await JobStatusRecord.load(jobID: jobID, queue: queue, connection: connection) {
            key = record.shared["key"]
        } else {
            key = try await JobLocator(queue: queue, connection: connection).find(jobID)?.entry.text(of: WireFormat.Field.key)
        }
        guard APIClient.current.owns(jobKey: key) else { throw Self.noJob(jobID, queue) }
    }

    /// The answer for a job the caller cannot see: as for one that does not exist.
    static func noJob(_ jobID: String, _ queue: QueueName) -> APIProblem {
        APIProblem(
            .notFound, "no job \"\(jobID)\" in queue \(queue): no status (never recorded, or expired) and no entry with that id")
    }

    static func duration(_ text: String, field: String) throws -> Duration {
        guard let duration = Duration(ferryText: text) else {
            throw APIProblem(.invalidRequest, "\(field) \"\(text)\" is not a duration such as 500ms, 30s, 5m, 1h or 7d")
        }
        return duration
    }

    /// A request's `wait` (absent: none), at most ``longestWait``: a request held longer would
    /// outlast the timeouts of most proxies and clients in front of the API.
    static func wait(_ text: String?) throws -> Duration {
        let wait = try text.map { try duration($0, field: "wait") } ?? .zero
        guard wait <= longestWait else {
            throw APIProblem(.invalidRequest, "wait is at most \(longestWait.milliseconds / 1000)s; got \(text ?? "")")
        }
        return wait
    }

    /// Refuses an idempotency key used before with another body (409, naming the job it
    /// published): the first use records the body's fingerprint for the dedup window, in one
    /// round trip with other requests' checks (``RequestFingerprints``).
    func checkSameRequest(fingerprint: String, idempotencyKey: String, queue: QueueName) async throws {
        try await publishers.fingerprints(for: queue, pool: pool, configuration: publishing).check(
            fingerprint, idempotencyKey: idempotencyKey)
    }

    private func accepted(_ receipt: PublishReceipt, job: JobMessage, queue: QueueName) -> Components.Schemas.Accepted {
        let scheduled = job.delay != nil || job.deliverAt.map { $0 > Date() } == true
        return .init(
            jobId: receipt.jobID, state: scheduled ? .scheduled : .queued, statusUrl: Self.statusURL(queue, receipt.jobID),
            duplicate: receipt.isDuplicate)
    }

    static func statusURL(_ queue: QueueName, _ jobID: String) -> String {
        let queue = pathComponent(queue.rawValue)
        let job = pathComponent(jobID)
        // Every publish answers with one: the text in one allocation, not one per part.
        var url = "/v1/queues/"
        url.reserveCapacity(17 + queue.utf8.count + job.utf8.count)
        url += queue
        url += "/jobs/"
        url += job
        return url
    }

    static func pathComponent(_ text: String) -> String {
        // Most names and ids need no escape (queue names never do): no CharacterSet walk for them.
        if text.utf8.allSatisfy({ $0 < 0x80 && Self.safeInPath[Int($0)] }) { return text }
        return text.addingPercentEncoding(withAllowedCharacters: pathComponentAllowed) ?? text
    }

    /// A path component (or header value) with its percent escapes decoded; the text as it is
    /// when it has none or they are malformed. Names and ids seldom carry escapes, and
    /// Foundation's decoding goes through `CFString` even then: 3-4% of a publish's CPU, twice.
    static func percentDecoded(_ text: some StringProtocol) -> String {
        guard text.utf8.contains(UInt8(ascii: "%")) else { return String(text) }
        return text.removingPercentEncoding ?? String(text)
    }

    /// The ASCII bytes a path component keeps as they are: letters, digits, `-._~`.
    private static let safeInPath: [Bool] = (0..<128).map { byte in
        let character = Character(Unicode.Scalar(UInt8(byte)))
        return character.isASCII && (character.isLetter || character.isNumber || "-._~".contains(character))
    }

    /// What a path component keeps unescaped: a URL path's characters but `/` and `:`.
    private static let pathComponentAllowed = CharacterSet.urlPathAllowed.subtracting(CharacterSet(charactersIn: "/:"))

    // MARK: Jobs

    func getJob(_ input: Operations.GetJob.Input) async throws -> Operations.GetJob.Output {
        let queue = try queueName(input.path.queue)
        let wait = try Self.wait(input.query.wait)
        let deadline = ContinuousClock.now + wait
        var job = try await view(input.path.jobId, queue: queue, group: input.query.group)
        while !job.finished && ContinuousClock.now < deadline {
            try await Task.sleep(for: min(.milliseconds(200), deadline - ContinuousClock.now))
            job = try await view(input.path.jobId, queue: queue, group: input.query.group)
        }
        return .ok(.init(headers: .init(retryAfter: job.finished ? nil : Self.pollAgain(job)), body: .json(job)))
    }

    /// A job's status in each group (or `group`).
    private func view(_ jobID: String, queue: QueueName, group: String?) async throws -> Components.Schemas.Job {
        // Before any group reads the queue, the default group's view: the job waits for it.
        let groupNames = try await ConsumerGroups(queue: queue, connection: connection).names().nonEmpty ?? ["workers"]
        var groups: [Components.Schemas.GroupStatus]
        var type: String?
        var entryID: String?
        if let record = try await JobStatusRecord.load(jobID: jobID, queue: queue, connection: connection) {
            guard APIClient.current.owns(jobKey: record.shared["key"]) else { throw Self.noJob(jobID, queue) }
            groups = record.groupNames(queueGroups: groupNames).map { Self.groupStatus(record.status(group: $0)) }
            type = record.shared["type"]
            entryID = record.shared["entry_id"]
        } else if let found = try await JobLocator(queue: queue, connection: connection).find(jobID) {
            guard APIClient.current.owns(jobKey: found.entry.text(of: WireFormat.Field.key)) else {
                throw Self.noJob(jobID, queue)
            }
            groups = found.groups.sorted { $0.key < $1.key }.map { name, position in
                switch position {
                case .queued: .init(group: name, state: .queued)
                case .pending(let consumer, let deliveries):
                    .init(group: name, state: .running, attempts: deliveries, consumer: consumer)
                case .done: .init(group: name, state: .succeeded)
                }
            }
            type = found.entry.text(of: WireFormat.Field.type)
            entryID = found.entry.id
        } else {
            throw Self.noJob(jobID, queue)
        }
        if let group {
            groups = groups.filter { $0.group == group }
            guard !groups.isEmpty else { throw APIProblem(.notFound, "queue \(queue) has no group \(group)") }
        }
        let finished = !groups.isEmpty && groups.allSatisfy { Self.terminal.contains($0.state) }
        return .init(jobId: jobID, _type: type, entryId: entryID, finished: finished, groups: groups)
    }

    static let terminal: Set<Components.Schemas.JobState> = [.succeeded, .dead, .cancelled, .deleted]

    static func groupStatus(_ status: JobStatus) -> Components.Schemas.GroupStatus {
        let fields = status.fields
        func time(_ name: String) -> Date? { fields[name].flatMap { Int64($0) }.map(Date.init(millisecondsSince1970:)) }
        func text(_ name: String) -> String? { fields[name].flatMap { $0.isEmpty ? nil : $0 } }
        return .init(
            group: status.group, state: status.state.flatMap { .init(rawValue: $0.rawValue) } ?? .queued,
            attempts: fields["attempts"].flatMap { Int($0) }, progress: fields["progress"].flatMap { Int($0) },
            stage: text("stage"), errorClass: text("error_class"), lastError: text("last_error"),
            retryable: fields["retryable"].map { $0 == "1" }, nextAttemptAt: time("next_attempt_at"),
            processingMs: fields["processing_ms"].flatMap { Int($0) }, consumer: text("consumer"), startedAt: time("started_at"),
            finishedAt: time("finished_at"), updatedAt: time("updated_at"))
    }

    /// Seconds until polling a job again is worth it: until its next attempt when it waits for
    /// one, else a second while it waits to start and two while it runs.
    static func pollAgain(_ job: Components.Schemas.Job) -> Int {
        let seconds = job.groups.filter { !terminal.contains($0.state) }.map { group -> Int in
            if let next = group.nextAttemptAt { return max(1, Int(next.timeIntervalSinceNow.rounded(.up))) }
            return group.state == .running ? 2 : 1
        }
        return min(seconds.min() ?? 1, 60)
    }

    func listJobs(_ input: Operations.ListJobs.Input) async throws -> Operations.ListJobs.Output {
        let queue = try queueName(input.path.queue)
        let state = try input.query.state.map { state in
            guard let known = JobState(rawValue: state.rawValue) else { throw APIProblem(.invalidRequest, "unknown state") }
            return known
        }
        let cursor = try input.query.cursor.map { try JobIndex.Cursor($0) }
        let page = try await JobIndex(queue: queue, connection: connection).list(
            group: input.query.group ?? "workers", states: state.map { [$0] } ?? [], type: input.query._type,
            key: APIClient.current.jobKey ?? input.query.key, limit: input.query.limit ?? 50, after: cursor)
        let rows = page.rows.map { row in
            Components.Schemas.JobRow(
                jobId: row.jobID, state: .init(rawValue: row.state.rawValue) ?? .queued, _type: row.type,
                publishedAt: Date(millisecondsSince1970: row.publishedAt), attempts: row.attempts, errorClass: row.errorClass,
                updatedAt: row.updatedAt.map(Date.init(millisecondsSince1970:)))
        }
        return .ok(.init(body: .json(.init(jobs: rows, nextCursor: page.next?.description))))
    }

    func cancelJob(_ input: Operations.CancelJob.Input) async throws -> Operations.CancelJob.Output {
        let queue = try queueName(input.path.queue)
        let jobID = input.path.jobId
        try await requireOwnJob(jobID, queue: queue)
        guard let before = try await JobStatus.requestCancellation(jobID: jobID, queue: queue, connection: connection) else {
            throw APIProblem(.notFound, "no job \"\(jobID)\" with a status in queue \(queue) (never recorded, or expired)")
        }
        guard !before.isTerminal else {
            throw APIProblem(
                .conflict, "job \"\(jobID)\" has finished (\(before.rawValue)); there is nothing to cancel", jobID: jobID)
        }
        return .accepted(.init(body: .json(.init(jobId: jobID, state: .init(rawValue: before.rawValue) ?? .queued))))
    }

    func retryJob(_ input: Operations.RetryJob.Input) async throws -> Operations.RetryJob.Output {
        let queue = try queueName(input.path.queue)
        let jobID = input.path.jobId
        try await requireOwnJob(jobID, queue: queue)
        let retry = try await JobStatus.retry(jobID: jobID, queue: queue, connection: connection)
        guard !retry.requeued.isEmpty else {
            guard retry.found else { throw Self.noJob(jobID, queue) }
            let states = retry.refused.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
            throw APIProblem(
                .conflict, "job \"\(jobID)\" is neither dead nor cancelled, so there is nothing to retry (\(states))",
                jobID: jobID)
        }
        return .accepted(.init(body: .json(.init(jobId: jobID, state: .queued))))
    }

    // MARK: Dead letters

    func listDeadLetters(_ input: Operations.ListDeadLetters.Input) async throws -> Operations.ListDeadLetters.Output {
        let queue = try queueName(input.path.queue)
        let limit = input.query.limit ?? 50
        guard (1...1000).contains(limit) else { throw APIProblem(.invalidRequest, "limit is 1 to 1000; got \(limit)") }
        if let cursor = input.query.cursor, StreamEntry.milliseconds(ofID: cursor) == nil {
            throw APIProblem(.invalidRequest, "cursor \"\(cursor)\" is not one a page gave (an entry ID)")
        }
        let start = input.query.cursor.map { "(" + $0 } ?? "-"
        let letters = try await DeadLetters(queue: queue, connection: connection).list(from: start, limit: limit + 1)
        let shown = letters.prefix(limit).map { letter in
            var fields: [String: String] = [:]
            for field in letter.entry.fields {
                let name = String(decoding: field.name, as: UTF8.self)
                fields[name] =
                    String(validating: field.value, as: UTF8.self) ?? "base64:" + Data(field.value).base64EncodedString()
            }
            return Components.Schemas.DeadLetter(
                id: letter.id, jobId: letter.jobID, _type: letter.type, errorClass: letter.errorClass, error: letter.error,
                group: letter.sourceGroup, failedAt: letter.failedAt, fields: .init(additionalProperties: fields))
        }
        return .ok(
            .init(body: .json(.init(deadLetters: Array(shown), nextCursor: letters.count > limit ? shown.last?.id : nil))))
    }

    // MARK: Workflows

    func startWorkflow(_ input: Operations.StartWorkflow.Input) async throws -> Operations.StartWorkflow.Output {
        let queue = try queueName(input.path.queue)
        guard case .json(let body) = input.body else { throw APIProblem(.invalidRequest, "send the workflow as JSON") }
        let definition = try WorkflowDefinition(json: Array(try JSONEncoder().encode(body.definition)))
        let data = try body.data.map { try RequestJSON.bytes(of: $0) } ?? []
        let receipt = try await Workflows(queue: queue, connection: connection).start(
            definition, data: data, id: body.workflowId, idempotencyKey: input.headers.idempotencyKey,
            group: body.group ?? "workers", dedupWindow: publishing.dedupWindow, maxPayloadBytes: publishing.maxPayloadBytes)
        return .accepted(
            .init(
                body: .json(
                    .init(
                        workflowId: receipt.id, duplicate: receipt.isDuplicate,
                        statusUrl: "/v1/queues/\(Self.pathComponent(queue.rawValue))/workflows/\(receipt.id)"))))
    }

    func getWorkflow(_ input: Operations.GetWorkflow.Input) async throws -> Operations.GetWorkflow.Output {
        let queue = try queueName(input.path.queue)
        return .ok(.init(body: .json(try await workflow(input.path.workflowId, queue: queue))))
    }

    /// A workflow as the API shows it.
    func workflow(_ id: String, queue: QueueName) async throws -> Components.Schemas.Workflow {
        guard let status = try await Workflows(queue: queue, connection: connection).status(id) else {
            throw APIProblem(.notFound, "no workflow \"\(id)\" in queue \(queue) (never started, or expired)")
        }
        return .init(
            workflowId: status.id, name: status.name, state: .init(rawValue: status.state.rawValue) ?? .running,
            progress: status.progress, reason: status.reason,
            steps: status.steps.map { .init(name: $0.name, state: $0.state, jobId: $0.jobID, runs: $0.runs) })
    }

    // MARK: Common

    /// The queue a path names, if the caller may see it.
    func queueName(_ text: String) throws -> QueueName {
        let queue = try QueueName(text)
        guard APIClient.current.sees(queue.rawValue) else {
            throw APIProblem(.forbidden, "\(APIClient.current.name) may not use queue \(queue)")
        }
        return queue
    }
}

/// JSON values as the bytes of their text: how a request's `data` becomes a job's payload.
enum RequestJSON {
    /// `value` as compact JSON text; a string is written as a JSON string (with its quotes).
    static func bytes(of value: OpenAPIValueContainer) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }
}

extension Array {
    /// Nil when empty.
    var nonEmpty: Self? { isEmpty ? nil : self }
}

/// The API's publishers, one per queue published to (at most ``limit``; past it the set starts
/// over, so a client naming endless queues cannot grow it without bound), each with the checks
/// of its idempotency keys' request bodies.
final class Publishers: Sendable {
    static let limit = 1000
    private let byQueue = Mutex<[QueueName: (publisher: SharedPublisher, fingerprints: RequestFingerprints)]>([:])

    /// The publisher of `queue`, made on first use with a connection of `pool`: concurrent
    /// requests' jobs go to Redis together.
    func publisher(
        for queue: QueueName, pool: RedisConnectionPool, configuration: Publisher.Configuration
    ) -> SharedPublisher {
        entry(for: queue, pool: pool, configuration: configuration).publisher
    }

    /// The checks of `queue`'s idempotency keys, made with its publisher: concurrent requests'
    /// checks go to Redis together.
    func fingerprints(
        for queue: QueueName, pool: RedisConnectionPool, configuration: Publisher.Configuration
    ) -> RequestFingerprints {
        entry(for: queue, pool: pool, configuration: configuration).fingerprints
    }

    private func entry(
        for queue: QueueName, pool: RedisConnectionPool, configuration: Publisher.Configuration
    ) -> (publisher: SharedPublisher, fingerprints: RequestFingerprints) {
        byQueue.withLock { entries in
            if let entry = entries[queue] { return entry }
            if entries.count >= Self.limit { entries.removeAll() }
            let entry = (
                publisher: SharedPublisher(Publisher(queue: queue, connection: pool.next, configuration: configuration)),
                fingerprints: RequestFingerprints(
                    queue: queue, connection: pool.next, window: configuration.dedupWindow)
            )
            entries[queue] = entry
            return entry
        }
    }
}
