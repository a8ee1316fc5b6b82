import FerryRedis
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import Ferry

@Suite("Cron expressions and schedules")
struct CronExpressionTests {
    let utc = TimeZone(identifier: "UTC")!
    let paris = TimeZone(identifier: "Europe/Paris")!

    /// `2026-03-29T01:59:00Z` as a date.
    func date(_ text: String) -> Date { try! Date(text, strategy: .iso8601) }

    func times(_ expression: String, from start: String, count: Int, in zone: TimeZone) throws -> [String] {
        let cron = try CronExpression(expression)
        var after = date(start)
        var out: [String] = []
        for _ in 0..<count {
            guard let next = cron.next(after: after, in: zone) else { break }
            out.append(next.formatted(.iso8601))
            after = next
        }
        return out
    }

    @Test("fields take numbers, ranges, lists, steps and names; Sunday is 0 or 7")
    func syntax() throws {
        #expect(
            try times("*/15 9-10 * * *", from: "2026-01-05T08:50:00Z", count: 5, in: utc) == [
                "2026-01-05T09:00:00Z", "2026-01-05T09:15:00Z", "2026-01-05T09:30:00Z", "2026-01-05T09:45:00Z",
                "2026-01-05T10:00:00Z",
            ])
        #expect(
            try times("0 12 * jan-feb mon,fri", from: "2026-01-30T13:00:00Z", count: 3, in: utc) == [
                "2026-02-02T12:00:00Z", "2026-02-06T12:00:00Z", "2026-02-09T12:00:00Z",
            ])
        #expect(try times("0 0 * * 7", from: "2026-01-01T00:00:00Z", count: 1, in: utc) == ["2026-01-04T00:00:00Z"])
        #expect(try times("0 0 * * SUN", from: "2026-01-01T00:00:00Z", count: 1, in: utc) == ["2026-01-04T00:00:00Z"])
        #expect(try times("10-50/20 0 1 * *", from: "2026-01-01T00:00:00Z", count: 3, in: utc).count == 3)
        #expect(try times("0 0 29 2 *", from: "2026-03-01T00:00:00Z", count: 1, in: utc) == ["2028-02-29T00:00:00Z"])
        #expect(try times("0 0 30 2 *", from: "2026-03-01T00:00:00Z", count: 1, in: utc).isEmpty, "February has no 30th")
    }

    @Test("day of month and day of week both restricted: either matches (Vixie cron)")
    func dayOrWeekday() throws {
        // The 1st, or any Monday, of February 2026 (the 1st is a Sunday).
        #expect(
            try times("0 8 1 * mon", from: "2026-01-31T09:00:00Z", count: 3, in: utc) == [
                "2026-02-01T08:00:00Z", "2026-02-02T08:00:00Z", "2026-02-09T08:00:00Z",
            ])
    }

    @Test(
        "bad expressions are refused naming the field",
        arguments: [
            ("* * * *", "has 4"), ("60 * * * *", "the minute field"), ("* 24 * * *", "the hour field"),
            ("* * 0 * *", "the day-of-month field"), ("* * * 13 *", "the month field"), ("* * * * 8", "the day-of-week field"),
            ("*/0 * * * *", "the step"), ("5-1 * * * *", "runs backwards"), ("* * * foo *", "or a name (jan…dec)"),
            ("1,,2 * * * *", "is not a value"),
        ])
    func refused(expression: String, message: String) {
        #expect {
            _ = try CronExpression(expression)
        } throws: { error in
            (error as? CronExpression.ParseError)?.description.contains(message) == true
        }
    }

    @Test("spring forward in Paris: 02:30 does not exist and runs once, at 03:30 local (01:30 UTC)")
    func springForward() throws {
        // 2026-03-29: clocks go from 02:00 CET (+1) to 03:00 CEST (+2).
        #expect(
            try times("30 2 * * *", from: "2026-03-28T02:00:00Z", count: 3, in: paris) == [
                "2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z",
            ])
        // Every 30 minutes across the gap: each real instant once, never backwards.
        #expect(
            try times("*/30 * * * *", from: "2026-03-29T00:00:00Z", count: 4, in: paris) == [
                "2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z", "2026-03-29T02:00:00Z",
            ])
    }

    @Test("fall back in Paris: 02:30 happens twice and runs once, at its first occurrence (00:30 UTC)")
    func fallBack() throws {
        // 2026-10-25: clocks go from 03:00 CEST (+2) back to 02:00 CET (+1).
        #expect(
            try times("30 2 * * *", from: "2026-10-24T02:00:00Z", count: 3, in: paris) == [
                "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z",
            ])
    }

    @Test("--every ticks on multiples of the interval since the epoch")
    func everyAligned() {
        let schedule = CronSchedule(name: "e", timing: .every(.seconds(300)), job: JobMessage(type: "t"))
        #expect(schedule.tick(after: date("2026-01-05T10:02:13Z")) == date("2026-01-05T10:05:00Z"))
        #expect(schedule.tick(after: date("2026-01-05T10:05:00Z")) == date("2026-01-05T10:10:00Z"))
    }

    @Test(
        "catch-up: skip enqueues only ticks under a minute old; one folds older ones into one; all enqueues each, 1,000 at most")
    func catchUpRules() {
        func schedule(_ catchUp: CronSchedule.CatchUp) -> CronSchedule {
            CronSchedule(name: "c", timing: .every(.seconds(60)), job: JobMessage(type: "t"), catchUp: catchUp)
        }
        let now = date("2026-01-05T10:10:30Z")
        let due = date("2026-01-05T10:00:00Z")  // eleven ticks due: 10:00 … 10:10
        let recent = [date("2026-01-05T10:10:00Z")]
        #expect(schedule(.skip).ticks(due: due, now: now).enqueue == recent)
        #expect(schedule(.one).ticks(due: due, now: now).enqueue == [date("2026-01-05T10:09:00Z")] + recent)
        #expect(schedule(.all).ticks(due: due, now: now).enqueue.count == 11)
        #expect(schedule(.skip).ticks(due: due, now: now).next == date("2026-01-05T10:11:00Z"))
        // A year behind, every second: the latest 1,000 missed and the recent ones, computed at once.
        let fast = CronSchedule(name: "f", timing: .every(.seconds(1)), job: JobMessage(type: "t"), catchUp: .all)
        let (ticks, next) = fast.ticks(due: date("2025-01-05T10:00:00Z"), now: now)
        #expect(ticks.count == 1000 + 60)
        #expect(ticks.last == date("2026-01-05T10:10:30Z") && next == date("2026-01-05T10:10:31Z"))
    }
}

extension WorkerTests {
    /// The jobs a schedule enqueued, by tick, as the stream holds them.
    func cronJobs(_ setup: Setup, schedule: String) async throws -> [String] {
        try StreamEntry.entries(from: try await setup.redis.send(RedisCommand("XRANGE", [.string(setup.keys.jobs), "-", "+"])))
            .compactMap { try $0.decodedJob().jobID }.filter { $0.hasPrefix("cron-\(schedule)-") }
    }

    @Test(
        "catch-up after ten days without workers: skip enqueues none of the missed ticks, one enqueues one, all enqueues each"
    )
    func catchUpAfterAGap() async throws {
        let setup = try await Setup("cron-gap")
        let schedules = CronSchedules(queue: setup.queue, connection: setup.redis)
        var expected: [CronSchedule.CatchUp: Int] = [:]
        for mode in CronSchedule.CatchUp.allCases {
            try await schedules.set(
                CronSchedule(
                    name: "gap-\(mode.rawValue)", timing: .every(.seconds(86_400)), job: JobMessage(type: "t"), catchUp: mode))
            // As if the fleet stopped ten days ago: daily ticks, so however slow the machine, no
            // new one comes due while the test runs (unless it spans midnight UTC).
            let now = try await redisTime(setup.redis)
            let day: Int64 = 86_400_000
            let behind = (now / day - 10) * day  // ten missed ticks, then today's
            // Today's tick is missed too unless it is under a minute old (CronSchedule.missedAfter).
            let recent = now - now / day * day < 60_000 ? 1 : 0
            _ = try await setup.redis.send(
                RedisCommand("ZADD", [.string(setup.keys.cron), .integer(behind), .string("gap-\(mode.rawValue)")]))
            expected[mode] = recent + (mode == .skip ? 0 : mode == .one ? 1 : 11 - recent)
        }
        try await schedules.fireDue()
        for mode in CronSchedule.CatchUp.allCases {
            let jobs = try await cronJobs(setup, schedule: "gap-\(mode.rawValue)")
            #expect(jobs.count == expected[mode], "\(mode): \(jobs)")
            let ticks = jobs.compactMap { $0.split(separator: "-").last.flatMap { Int64($0) } }
            #expect(ticks == ticks.sorted() && Set(ticks).count == ticks.count, "oldest first, each once")
            let entry = try #require(try await schedules.get("gap-\(mode.rawValue)"))
            #expect(entry.nextAt.map { $0 > Date() } == true, "\(mode) moved on to its next tick")
        }
        #expect(try await schedules.fireDue().isEmpty, "nothing more is due")
    }

    @Test("overlap skip: no tick is enqueued while the last tick's job runs; ticks come again once it finished")
    func overlapSkip() async throws {
        let setup = try await Setup("cron-overlap")
        let started = Deliveries()
        let release = Mutex(false)
        let worker = setup.worker([
            "t": JobHandlerClosure { job in
                started.record(job)
                while !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
            }
        ])
        let schedules = CronSchedules(queue: setup.queue, connection: setup.redis)
        try await schedules.set(
            CronSchedule(name: "slow", timing: .every(.seconds(1)), job: JobMessage(type: "t"), overlap: .skip))
        try await running(worker) {
            #expect(await eventually { started.count >= 1 })
            // Ticks keep coming due while the first job runs: they are skipped, and counted.
            #expect(await eventually { try await schedules.get("slow")?.skipped ?? 0 >= 2 })
            let whileRunning = try await cronJobs(setup, schedule: "slow")
            #expect(whileRunning.count == 1, "\(whileRunning)")
            release.withLock { $0 = true }
            #expect(await eventually { started.count >= 2 })
        }
        let jobs = try await cronJobs(setup, schedule: "slow")
        #expect(Set(jobs).count == jobs.count, "one job per tick")
    }
}
