import Ferry
import FerryRedis
import Foundation
import OpenAPIRuntime

/// The operations that change how a queue runs rather than publish or read: pausing, bulk
/// retry and cancel, dead-letter redrive and purge, cron schedules, limits and workflow
/// control. Each is the library call `ferry` makes for the same command.
extension APIHandlers {
    // MARK: Pause

    func pauseQueue(_ input: Operations.PauseQueue.Input) async throws -> Operations.PauseQueue.Output {
        let queue = try queueName(input.path.queue)
        let wait = try Self.wait(input.query.wait)
        let pause = QueuePause(queue: queue, connection: connection)
        try await pause.pause(group: input.query.group)
        var answer = try await paused(pause)
        if wait > .zero {
            // As `ferry queue pause --wait`: until every live worker starts nothing new.
            let confirmation = try await pause.waitUntilConfirmed(group: input.query.group, timeout: wait)
            answer.confirmed = confirmation.confirmed
            answer.unconfirmed = confirmation.unconfirmed
        }
        return .ok(.init(body: .json(answer)))
    }

    func resumeQueue(_ input: Operations.ResumeQueue.Input) async throws -> Operations.ResumeQueue.Output {
        let queue = try queueName(input.path.queue)
        let pause = QueuePause(queue: queue, connection: connection)
        try await pause.resume(group: input.query.group)
        return .ok(.init(body: .json(try await paused(pause))))
    }

    private func paused(_ pause: QueuePause) async throws -> Components.Schemas.Paused {
        .init(queue: pause.queue.rawValue, paused: try await pause.paused().keys.sorted())
    }

    // MARK: Bulk operations

    func retryJobs(_ input: Operations.RetryJobs.Input) async throws -> Operations.RetryJobs.Output {
        let queue = try queueName(input.path.queue)
        guard case .json(var body) = input.body else { throw APIProblem(.invalidRequest, "send the selection as JSON") }
        switch body.state {
        case .cancelled?: return .ok(.init(body: .json(try await retryCancelled(body, queue: queue))))
        case .dead?: body.state = nil
        case nil: break
        case let other?:
            throw APIProblem(.invalidRequest, "only dead or cancelled jobs can be retried; state \(other.rawValue) cannot")
        }
        return .ok(.init(body: .json(try await redrive(body, queue: queue))))
    }

    /// Runs the cancelled jobs `body` chooses again in their group (`jobs:retry` with state
    /// `cancelled`): named by `job_ids`, or every cancelled job of the group (of `type`).
    private func retryCancelled(
        _ body: Components.Schemas.Selection, queue: QueueName
    ) async throws
        -> Components.Schemas.BulkResult
    {
        try Self.requireChoice(body)
        if body.ids != nil || body.errorClass != nil || body.olderThan != nil {
            throw APIProblem(
                .invalidRequest,
                "ids, error_class and older_than choose dead letters; cancelled jobs are chosen by job_ids, type and group")
        }
        let group = body.group ?? "workers"
        let limit = body.limit ?? 1000
        var (candidates, more) = (Array((body.jobIds ?? []).prefix(limit)), false)
        if body.jobIds == nil {
            (candidates, more) = try await jobIDs(
                queue: queue, group: group, stateSets: [[.cancelled]], type: body._type, limit: limit)
        }
        var chosen: [String] = []
        var missing: [String] = []
        var changed = 0
        for jobID in candidates {
            if body.dryRun == true && body.jobIds == nil {
                chosen.append(jobID)  // listed as cancelled
                continue
            }
            if body.dryRun == true {
                let state = try await JobStatus.load(jobID: jobID, queue: queue, group: group, connection: connection)?.state
                if state == .cancelled { chosen.append(jobID) } else { missing.append(jobID) }
                continue
            }
            switch try await JobStatus.retryCancelled(jobID: jobID, queue: queue, group: group, connection: connection) {
            case .queued:
                chosen.append(jobID)
                changed += 1
            case .notCancelled, .entryGone: missing.append(jobID)
            }
        }
        return Self.result(body, jobIDs: chosen, changed: changed, missing: missing, more: more)
    }

    func redriveDeadLetters(
        _ input: Operations.RedriveDeadLetters.Input
    ) async throws
        -> Operations.RedriveDeadLetters.Output
    {
        let queue = try queueName(input.path.queue)
        guard case .json(let body) = input.body else { throw APIProblem(.invalidRequest, "send the selection as JSON") }
        return .ok(.init(body: .json(try await redrive(body, queue: queue))))
    }

    func purgeDeadLetters(_ input: Operations.PurgeDeadLetters.Input) async throws -> Operations.PurgeDeadLetters.Output {
        let queue = try queueName(input.path.queue)
        guard case .json(let body) = input.body else { throw APIProblem(.invalidRequest, "send the selection as JSON") }
        let deadLetters = DeadLetters(queue: queue, connection: connection)
        let (letters, missing, more) = try await deadLetters.select(try Self.deadLetterSelection(body), limit: body.limit ?? 1000)
        let changed = body.dryRun == true ? 0 : try await deadLetters.purge(ids: letters.map(\.id))
        return .ok(
            .init(body: .json(Self.result(body, jobIDs: letters.map(\.jobID), changed: changed, missing: missing, more: more))))
    }

    /// Redrives the dead letters `body` chooses (`jobs:retry` and `dead-letters:redrive`).
    private func redrive(_ body: Components.Schemas.Selection, queue: QueueName) async throws -> Components.Schemas.BulkResult {
        let deadLetters = DeadLetters(queue: queue, connection: connection)
        let (letters, missing, more) = try await deadLetters.select(try Self.deadLetterSelection(body), limit: body.limit ?? 1000)
        var changed = 0
        if body.dryRun != true {
            for letter in letters where try await deadLetters.redrive(letter) != nil { changed += 1 }
        }
        return Self.result(body, jobIDs: letters.map(\.jobID), changed: changed, missing: missing, more: more)
    }

    func cancelJobs(_ input: Operations.CancelJobs.Input) async throws -> Operations.CancelJobs.Output {
        let queue = try queueName(input.path.queue)
        guard case .json(let body) = input.body else { throw APIProblem(.invalidRequest, "send the selection as JSON") }
        try Self.requireChoice(body)
        if body.ids != nil || body.errorClass != nil || body.olderThan != nil {
            throw APIProblem(
                .invalidRequest,
                "ids, error_class and older_than choose dead letters; cancel chooses by job_ids, state, type and group")
        }
        let limit = body.limit ?? 1000
        let unfinished: [JobState] = [.waiting, .running, .retrying, .failed]
        var candidates: [String] = []
        var missing: [String] = []
        var more = false
        if let named = body.jobIds {
            candidates = named
        } else {
            let state = try body.state.map { state in
                guard let known = JobState(rawValue: state.rawValue), known == .queued || unfinished.contains(known) else {
                    throw APIProblem(
                        .invalidRequest,
                        "state \(state.rawValue) cannot be cancelled; choose queued, waiting, running, retrying or failed")
                }
                return known
            }
            (candidates, more) = try await jobIDs(
                queue: queue, group: body.group ?? "workers", stateSets: state.map { [[$0]] } ?? [[.queued], unfinished],
                type: body._type, limit: limit)
        }
        var chosen: [String] = []
        var changed = 0
        for jobID in candidates {
            if body.dryRun == true && body.jobIds == nil {
                chosen.append(jobID)  // listed in a state that can be cancelled
                continue
            }
            if body.dryRun == true {
                let record = try await JobStatusRecord.load(jobID: jobID, queue: queue, connection: connection)
                guard let record else { missing.append(jobID); continue }
                if record.groups.values.contains(where: { !(JobState(rawValue: $0["state"] ?? "")?.isTerminal ?? false) }) {
                    chosen.append(jobID)
                }
                continue
            }
            guard let before = try await JobStatus.requestCancellation(jobID: jobID, queue: queue, connection: connection) else {
                missing.append(jobID)
                continue
            }
            if !before.isTerminal {
                chosen.append(jobID)
                changed += 1
            }
        }
        return .ok(.init(body: .json(Self.result(body, jobIDs: chosen, changed: changed, missing: missing, more: more))))
    }

    /// The ids of the group's jobs in each set of states in turn (queued jobs, listed from the
    /// stream, make a set of their own), of `type` if given: at most `limit`, and whether more
    /// matched. For the bulk operations that choose by state.
    private func jobIDs(
        queue: QueueName, group: String, stateSets: [[JobState]], type: String?, limit: Int
    ) async throws -> (ids: [String], more: Bool) {
        let index = JobIndex(queue: queue, connection: connection)
        var ids: [String] = []
        for states in stateSets where ids.count <= limit {
            var cursor: JobIndex.Cursor?
            repeat {
                let page = try await index.list(
                    group: group, states: states, type: type, limit: min(1000, limit + 1 - ids.count), after: cursor)
                ids += page.rows.map(\.jobID)
                cursor = page.next
            } while cursor != nil && ids.count <= limit
        }
        return (Array(ids.prefix(limit)), ids.count > limit)
    }

    /// The dead letters a selection names, refusing what does not apply to them.
    static func deadLetterSelection(_ body: Components.Schemas.Selection) throws -> DeadLetters.Selection {
        try requireChoice(body)
        if body.state != nil { throw APIProblem(.invalidRequest, "state does not choose dead letters (they are all dead)") }
        var selection = DeadLetters.Selection()
        selection.ids = body.ids ?? []
        selection.jobIDs = body.jobIds ?? []
        selection.type = body._type
        selection.errorClass = body.errorClass
        selection.group = body.group
        if let olderThan = body.olderThan {
            let age = try duration(olderThan, field: "older_than")
            selection.before = Date(millisecondsSince1970: Date().millisecondsSince1970 - age.milliseconds)
        }
        return selection
    }

    /// Refuses a selection that names nothing and does not say `all`: an empty body must not act
    /// on every job.
    static func requireChoice(_ body: Components.Schemas.Selection) throws {
        let named = !(body.ids ?? []).isEmpty || !(body.jobIds ?? []).isEmpty
        if named && body.all == true { throw APIProblem(.invalidRequest, "name jobs or say all, not both") }
        if !named && body.all != true {
            throw APIProblem(
                .invalidRequest,
                "choose what to act on: job_ids (or ids), or all: true with criteria (type, group, ...) to narrow it")
        }
    }

    static func result(
        _ body: Components.Schemas.Selection, jobIDs: [String], changed: Int, missing: [String], more: Bool
    ) -> Components.Schemas.BulkResult {
        .init(
            matched: jobIDs.count, changed: changed, dryRun: body.dryRun == true, jobIds: jobIDs,
            missing: missing.isEmpty ? nil : missing, more: more)
    }

    // MARK: Cron

    func listCron(_ input: Operations.ListCron.Input) async throws -> Operations.ListCron.Output {
        let queue = try queueName(input.path.queue)
        let entries = try await CronSchedules(queue: queue, connection: connection).list()
        return .ok(.init(body: .json(.init(schedules: entries.map(Self.cronEntry)))))
    }

    func setCron(_ input: Operations.SetCron.Input) async throws -> Operations.SetCron.Output {
        let queue = try queueName(input.path.queue)
        guard case .json(let body) = input.body else { throw APIProblem(.invalidRequest, "send the schedule as JSON") }
        let timing = try CronSchedule.timing(
            every: try body.every.map { try Self.duration($0, field: "every") }, cron: body.cron, timeZone: body.timezone)
        let schedule = CronSchedule(
            name: input.path.name, timing: timing, job: try Self.message(from: PublishBody(body.job)),
            catchUp: body.catchUp.flatMap { CronSchedule.CatchUp(rawValue: $0.rawValue) } ?? .skip,
            overlap: body.overlap.flatMap { CronSchedule.Overlap(rawValue: $0.rawValue) } ?? .allow)
        try schedule.validate()
        let schedules = CronSchedules(queue: queue, connection: connection)
        try await schedules.set(schedule)
        return .ok(.init(body: .json(try await cronEntry(input.path.name, schedules))))
    }

    func deleteCron(_ input: Operations.DeleteCron.Input) async throws -> Operations.DeleteCron.Output {
        let queue = try queueName(input.path.queue)
        guard try await CronSchedules(queue: queue, connection: connection).delete(input.path.name) else {
            throw Self.noSchedule(input.path.name, queue)
        }
        return .noContent(.init())
    }

    func pauseCron(_ input: Operations.PauseCron.Input) async throws -> Operations.PauseCron.Output {
        .ok(.init(body: .json(try await switchCron(queue: input.path.queue, name: input.path.name, on: false))))
    }

    func resumeCron(_ input: Operations.ResumeCron.Input) async throws -> Operations.ResumeCron.Output {
        .ok(.init(body: .json(try await switchCron(queue: input.path.queue, name: input.path.name, on: true))))
    }

    /// Pauses (`on` false) or resumes a schedule that exists, and shows it after.
    private func switchCron(queue text: String, name: String, on: Bool) async throws -> Components.Schemas.CronEntry {
        let queue = try queueName(text)
        let schedules = CronSchedules(queue: queue, connection: connection)
        guard try await schedules.get(name) != nil else { throw Self.noSchedule(name, queue) }
        if on { try await schedules.resume(name) } else { try await schedules.pause(name) }
        return try await cronEntry(name, schedules)
    }

    private func cronEntry(_ name: String, _ schedules: CronSchedules) async throws -> Components.Schemas.CronEntry {
        guard let entry = try await schedules.get(name) else { throw Self.noSchedule(name, schedules.queue) }
        return Self.cronEntry(entry)
    }

    static func noSchedule(_ name: String, _ queue: QueueName) -> APIProblem {
        APIProblem(.notFound, "no cron schedule \"\(name)\" on queue \(queue); create it with PUT")
    }

    static func cronEntry(_ entry: CronSchedules.Entry) -> Components.Schemas.CronEntry {
        .init(
            name: entry.schedule.name, timing: entry.schedule.timingDescription, _type: entry.schedule.job.type,
            paused: entry.paused, nextAt: entry.nextAt, lastAt: entry.lastAt, lastJobId: entry.lastJobID, skipped: entry.skipped)
    }

    // MARK: Limits

    func listLimits(_ input: Operations.ListLimits.Input) async throws -> Operations.ListLimits.Output {
        let queue = try queueName(input.path.queue)
        let store = QueueLimits(queue: queue, connection: connection)
        var shown: [Components.Schemas.Limit] = []
        for limit in try await store.list().limits { shown.append(try await Self.limit(limit, store)) }
        return .ok(.init(body: .json(.init(limits: shown))))
    }

    func setLimit(_ input: Operations.SetLimit.Input) async throws -> Operations.SetLimit.Output {
        let queue = try queueName(input.path.queue)
        guard case .json(let body) = input.body else { throw APIProblem(.invalidRequest, "send the limit as JSON") }
        let kind: QueueLimit.Kind
        switch (body.concurrency, body.rate) {
        case (let count?, nil):
            if body.burst != nil { throw APIProblem(.invalidRequest, "burst goes with a rate, not a concurrency limit") }
            kind = .concurrency(count)
        case (nil, let rate?):
            let (count, period) = try QueueLimit.parseRate(rate)
            kind = .rate(count: count, period: period, burst: body.burst ?? 1)
        default:
            throw APIProblem(.invalidRequest, "give the limit once: concurrency (a number) or rate (such as 100/s)")
        }
        let limit = QueueLimit(name: input.path.name, kind: kind, type: body._type, perKey: body.perKey ?? false)
        let store = QueueLimits(queue: queue, connection: connection)
        try await store.set(limit)
        return .ok(.init(body: .json(try await Self.limit(limit, store))))
    }

    func deleteLimit(_ input: Operations.DeleteLimit.Input) async throws -> Operations.DeleteLimit.Output {
        let queue = try queueName(input.path.queue)
        guard try await QueueLimits(queue: queue, connection: connection).delete(name: input.path.name) else {
            throw APIProblem(.notFound, "no limit \"\(input.path.name)\" on queue \(queue)")
        }
        return .noContent(.init())
    }

    static func limit(_ limit: QueueLimit, _ store: QueueLimits) async throws -> Components.Schemas.Limit {
        let usage = try await store.usage(of: limit)
        var shown = Components.Schemas.Limit(
            name: limit.name, summary: limit.summary, _type: limit.type, perKey: limit.perKey ? true : nil,
            holding: usage.holding, waiting: usage.waiting)
        switch limit.kind {
        case .concurrency(let count): shown.concurrency = count
        case .rate(let count, let period, let burst):
            shown.rate = QueueLimit.rateText(count: count, period: period)
            shown.burst = burst
        }
        return shown
    }

    // MARK: Workflow control

    func cancelWorkflow(_ input: Operations.CancelWorkflow.Input) async throws -> Operations.CancelWorkflow.Output {
        let queue = try queueName(input.path.queue)
        try await Workflows(queue: queue, connection: connection).cancel(input.path.workflowId)
        return .accepted(.init(body: .json(try await workflow(input.path.workflowId, queue: queue))))
    }

    func resumeWorkflow(_ input: Operations.ResumeWorkflow.Input) async throws -> Operations.ResumeWorkflow.Output {
        let queue = try queueName(input.path.queue)
        try await Workflows(queue: queue, connection: connection).resume(input.path.workflowId, from: input.query.fromStep)
        return .accepted(.init(body: .json(try await workflow(input.path.workflowId, queue: queue))))
    }
}
