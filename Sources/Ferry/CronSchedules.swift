import FerryRedis
import Foundation

/// A queue's cron schedules, kept in Redis (`ferry:{Q}:cron` and `ferry:{Q}:cron:<name>`), not
/// in any process: any worker of the queue runs them, none needs configuration, and a restart
/// loses nothing. Each tick is enqueued by one compare-and-set script (`cron_fire.lua`), so there
/// is one job per tick however many workers look.
public struct CronSchedules: QueueStore {
    /// The queue, its keys and the connection every call uses.
    public let scope: QueueScope

    /// A store of `scope.queue`; nothing is sent until a method is called.
    public init(_ scope: QueueScope) { self.scope = scope }

    static let setScript = FerryScripts.script("cron_set", EmbeddedLuaScripts.cron_set)
    static let fireScript = FerryScripts.script("cron_fire", EmbeddedLuaScripts.cron_fire)

    /// A stored schedule and what it has done.
    public struct Entry: Sendable, Hashable {
        /// The schedule.
        public var schedule: CronSchedule
        /// Paused: it ticks no more until resumed.
        public var paused: Bool
        /// Its next tick; nil when paused or when it never ticks again.
        public var nextAt: Date?
        /// Its last enqueued tick.
        public var lastAt: Date?
        /// The job id of its last enqueued tick (`cron-<name>-<tick ms>`).
        public var lastJobID: String?
        /// Ticks not enqueued because the previous job was unfinished (``CronSchedule/Overlap/skip``).
        public var skipped: Int
    }

    /// Redis's clock.
    func redisNow() async throws(FerryError) -> Date {
        do {
            return Self.date(time: try await connection.send(RedisCommand("TIME")))
        } catch {
            throw FerryError(error)
        }
    }

    /// The time a `TIME` reply (seconds, microseconds) stands for, to the millisecond.
    static func date(time reply: RedisReply) -> Date {
        let parts = reply.array?.compactMap(\.integer) ?? []
        return Date(millisecondsSince1970: (parts.first ?? 0) * 1000 + (parts.dropFirst().first ?? 0) / 1000)
    }

    /// Stores `schedule` (replacing one of its name; its history and paused state stay), its
    /// first tick the next after Redis's clock. Returns whether it replaced one.
    @discardableResult
    public func set(_ schedule: CronSchedule) async throws(FerryError) -> Bool {
        try schedule.validate()
        let now = try await redisNow()
        var fields: [RedisArgument] = []
        switch schedule.timing {
        case .every(let interval): fields += ["every_ms", .integer(interval.milliseconds)]
        case .cron(let expression, let timeZone):
            fields += ["cron", .string(expression.description), "tz", .string(timeZone.identifier)]
        }
        fields += ["catch_up", .string(schedule.catchUp.rawValue), "overlap", .string(schedule.overlap.rawValue)]
        for (name, value) in schedule.job.encodedFields() where name != .string(WireFormat.Field.publishedAt) {
            fields += [Self.prefixed(name), value]
        }
        let next = schedule.tick(after: now).map { RedisArgument.integer($0.millisecondsSince1970) } ?? ""
        do {
            let reply = try await connection.run(
                Self.setScript, keys: [.string(keys.cron), .string(keys.cronSchedule(name: schedule.name))],
                arguments: [.string(schedule.name), next, .integer(now.millisecondsSince1970)] + fields)
            return reply.integer == 1
        } catch {
            throw FerryError(error)
        }
    }

    private static func prefixed(_ name: RedisArgument) -> RedisArgument {
        switch name {
        case .string(let text): .string("job." + text)
        case .bytes(let bytes): .bytes(Array("job.".utf8) + bytes)
        default: name
        }
    }

    /// Every schedule of the queue, by name.
    public func list() async throws(FerryError) -> [Entry] {
        do {
            let prefix = keys.cronSchedule(name: "")
            let names = try await connection.scanKeys(matching: keys.cronSchedule(name: "*")).map {
                String(decoding: $0.dropFirst(prefix.utf8.count), as: UTF8.self)
            }
            let hashes =
                names.isEmpty
                ? []
                : try await connection.pipeline(names.map { RedisCommand("HGETALL", [.string(keys.cronSchedule(name: $0))]) })
            return zip(names, hashes).compactMap { Self.entry(hash: $0.1) }.sorted { $0.schedule.name < $1.schedule.name }
        } catch {
            throw FerryError(error)
        }
    }

    /// One schedule; nil when there is none of that name.
    public func get(_ name: String) async throws(FerryError) -> Entry? {
        do {
            return Self.entry(hash: try await connection.send(RedisCommand("HGETALL", [.string(keys.cronSchedule(name: name))])))
        } catch {
            throw FerryError(error)
        }
    }

    static func entry(hash reply: RedisReply) -> Entry? {
        var hash: [String: String] = [:]
        var jobFields: [JobField] = []
        for (name, value) in QueueInspector.fields(reply) {
            if name.hasPrefix("job.") {
                jobFields.append(JobField(name: Array(name.utf8.dropFirst(4)), value: value.bytes ?? []))
            } else {
                hash[name] = value.string
            }
        }
        guard let name = hash["name"], let job = try? JobMessage(decoding: jobFields) else { return nil }
        let timing: CronSchedule.Timing
        if let every = hash["every_ms"].flatMap(Int64.init) {
            timing = .every(.milliseconds(every))
        } else if let text = hash["cron"], let expression = try? CronExpression(text),
            let timeZone = TimeZone(identifier: hash["tz"] ?? "UTC")
        {
            timing = .cron(expression, timeZone: timeZone)
        } else {
            return nil
        }
        func date(_ field: String) -> Date? { hash[field].flatMap(Int64.init).map(Date.init(millisecondsSince1970:)) }
        return Entry(
            schedule: CronSchedule(
                name: name, timing: timing, job: job, catchUp: hash["catch_up"].flatMap(CronSchedule.CatchUp.init) ?? .skip,
                overlap: hash["overlap"].flatMap(CronSchedule.Overlap.init) ?? .allow),
            paused: hash["paused"] == "1", nextAt: hash["paused"] == "1" ? nil : date("next_at"), lastAt: date("last_at"),
            lastJobID: hash["last_job_id"], skipped: Int(hash["skipped"] ?? "") ?? 0)
    }

    /// Pauses a schedule: it ticks no more until ``resume(_:)``. Returns false when there is none.
    @discardableResult
    public func pause(_ name: String) async throws(FerryError) -> Bool {
        try await command(name) {
            [.init("ZREM", [.string(keys.cron), .string(name)]), .init("HSET", [.string($0), "paused", "1", "next_at", ""])]
        }
    }

    /// Resumes a paused schedule from its next tick after now (ticks missed while paused are not
    /// enqueued). Returns false when there is none.
    @discardableResult
    public func resume(_ name: String) async throws(FerryError) -> Bool {
        guard let entry = try await get(name) else { return false }
        let next = entry.schedule.tick(after: try await redisNow())
        return try await command(name) { key in
            [.init("HSET", [.string(key), "paused", "0", "next_at", next.map { .integer($0.millisecondsSince1970) } ?? ""])]
                + (next.map { [.init("ZADD", [.string(keys.cron), .integer($0.millisecondsSince1970), .string(name)])] } ?? [])
        }
    }

    /// Deletes a schedule; jobs it already enqueued are left alone. Returns false when there is none.
    @discardableResult
    public func delete(_ name: String) async throws(FerryError) -> Bool {
        try await command(name) { [.init("ZREM", [.string(keys.cron), .string(name)]), .init("DEL", [.string($0)])] }
    }

    /// Runs `commands` (given the schedule's key) in one transaction when the schedule exists.
    private func command(_ name: String, _ commands: (String) -> [RedisCommand]) async throws(FerryError) -> Bool {
        let key = keys.cronSchedule(name: name)
        let replies: [RedisReply]
        do {
            guard try await connection.send(RedisCommand("EXISTS", [.string(key)])).integer == 1 else { return false }
            replies = try await connection.pipeline([RedisCommand("MULTI")] + commands(key) + [RedisCommand("EXEC")])
        } catch {
            throw FerryError(error)
        }
        if let failed = replies.lazy.compactMap(\.errorMessage).first { throw FerryError(RedisError.server(failed)) }
        return true
    }

    /// Enqueues the ticks of every schedule due by Redis's clock (at most `limit` schedules a
    /// call), each through `cron_fire.lua`: what every worker does every quarter second.
    ///
    /// - Parameters:
    ///   - statusKeep: how long a queued job's status lives, nil when status is not kept.
    /// - Returns: the job ids this call enqueued.
    @discardableResult
    public func fireDue(limit: Int = 20, statusKeep: Duration? = .seconds(24 * 3600)) async throws(FerryError) -> [String] {
        let replies: [RedisReply]
        do {
            replies = try await connection.pipeline([
                RedisCommand("TIME"), RedisCommand("ZRANGE", [.string(keys.cron), 0, .integer(Int64(limit - 1)), "WITHSCORES"]),
            ])
        } catch {
            throw FerryError(error)
        }
        let now = Self.date(time: replies[0])
        var fired: [String] = []
        for (member, scoreReply) in replies[1].pairs {
            guard let name = member.string, let score = scoreReply.string.flatMap(Double.init) else { continue }
            let due = Date(millisecondsSince1970: Int64(score))
            guard due <= now else { break }
            guard let entry = try await get(name) else { continue }
            let (ticks, next) = entry.schedule.ticks(due: due, now: now)
            do {
                let reply = try await connection.run(
                    Self.fireScript,
                    keys: [.string(keys.cron), .string(keys.cronSchedule(name: name)), .string(keys.jobs)],
                    arguments: [
                        .string(name), .integer(Int64(score)), next.map { .integer($0.millisecondsSince1970) } ?? "",
                        .string(keys.delayedPrefix), statusKeep == nil ? "" : .string(keys.jobStatusPrefix),
                        .integer(statusKeep?.milliseconds ?? 0),
                    ] + ticks.map { .integer($0.millisecondsSince1970) })
                fired += (reply.array ?? []).dropFirst().compactMap(\.string)
            } catch {
                throw FerryError(error)
            }
        }
        return fired
    }
}
