import FerryRedis
import Foundation

/// A global limit on how a queue's jobs start: at most N running at once, or at most N started
/// per period, for every job of the queue or of one type, and for all of them together or for
/// each value of their ``JobMessage/key`` separately ("2 running jobs per user").
///
/// Limits live in Redis (``QueueLimits``, `ferry limit set`), so every worker of every group
/// enforces the same ones and a change reaches them within a second. A job over a limit does not
/// run and does not fail: it waits in its group's later deliveries, spending no attempt, with
/// the status `waiting` and the limit's name (docs/design.md, "Rate and concurrency limits").
public struct QueueLimit: Sendable, Hashable, Codable {
    /// What a limit counts.
    public enum Kind: Sendable, Hashable {
        /// At most this many jobs it covers run at once. Each running job holds a slot, a lease
        /// that its worker extends with the job's own: a crashed worker's slots free after it.
        case concurrency(Int)
        /// At most `count` jobs it covers start per `period`, evenly spaced (one every
        /// period / count); up to `burst` may start at once after a quiet time.
        case rate(count: Int, period: Duration, burst: Int)
    }

    /// Names the limit in keys, the status (`waiting_for`) and `ferry limit`: `[A-Za-z0-9._-]`, 1 to 64.
    public var name: String
    /// What it counts.
    public var kind: Kind
    /// Only jobs of this type are covered; nil covers every type.
    public var type: String?
    /// Each value of a job's `key` is limited on its own; jobs without a key are not covered.
    public var perKey: Bool

    /// A limit; ``validate()`` checks it before it is stored.
    public init(name: String, kind: Kind, type: String? = nil, perKey: Bool = false) {
        self.name = name
        self.kind = kind
        self.type = type
        self.perKey = perKey
    }

    /// Whether it is a concurrency limit (decided before rates: a waiting job spends no rate).
    var isConcurrency: Bool { if case .concurrency = kind { true } else { false } }

    /// Whether the limit covers `message`.
    public func covers(_ message: JobMessage) -> Bool {
        if let type, type != message.type { return false }
        return !perKey || message.key != nil
    }

    /// - Throws: ``FerryError`` with ``FerryError/Code/invalidInput`` naming what is wrong.
    public func validate() throws(FerryError) {
        func invalid(_ message: String) -> FerryError { FerryError(.invalidInput, message) }
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= 64, bytes.allSatisfy(QueueName.isAllowed) else {
            throw invalid("the limit name \"\(name.debugEscaped)\" must be 1 to 64 of A-Z a-z 0-9 . _ - (it appears in keys)")
        }
        if type == "" { throw invalid("the job type of a limit must not be empty; omit it to cover every type") }
        switch kind {
        case .concurrency(let count):
            guard count >= 1 else { throw invalid("a concurrency limit must be at least 1 (got \(count))") }
        case .rate(let count, let period, let burst):
            guard count >= 1 else { throw invalid("a rate must allow at least 1 job per period (got \(count))") }
            guard period >= .milliseconds(1) else { throw invalid("a rate's period must be at least 1ms") }
            guard burst >= 1 else { throw invalid("a rate's burst must be at least 1 (got \(burst))") }
            guard Self.spacingMicroseconds(count: count, period: period) >= 1 else {
                throw invalid("a rate over 1,000,000 jobs per second cannot be enforced; remove the limit instead")
            }
        }
    }

    /// The time between two starts a rate allows, in microseconds (fractional).
    static func spacingMicroseconds(count: Int, period: Duration) -> Double {
        Double(period.milliseconds) * 1000 / Double(count)
    }

    /// The rate's text, `100/s`, `30/d`, `5/10s`: how `ferry limit` reads and writes it.
    public static func rateText(count: Int, period: Duration) -> String {
        let units: [(String, Int64)] = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)]
        let milliseconds = period.milliseconds
        for (unit, length) in units where milliseconds == length { return "\(count)/\(unit)" }
        for (unit, length) in units where milliseconds % length == 0 { return "\(count)/\(milliseconds / length)\(unit)" }
        return "\(count)/\(milliseconds)ms"
    }

    /// Reads a rate written `N/s`, `N/m`, `N/h`, `N/d` or `N/<duration>` (`5/10s`, `100/500ms`).
    ///
    /// - Throws: ``FerryError`` with ``FerryError/Code/invalidInput`` showing the accepted forms.
    public static func parseRate(_ text: String) throws(FerryError) -> (count: Int, period: Duration) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        let units: [String: Duration] = [
            "s": .seconds(1), "m": .seconds(60), "h": .seconds(3600), "d": .seconds(86_400),
        ]
        guard parts.count == 2, let count = Int(parts[0]), count >= 1,
            let period = units[String(parts[1])] ?? Duration(ferryText: String(parts[1])), period > .zero
        else {
            throw FerryError(
                .invalidInput,
                "the rate \"\(text.debugEscaped)\" is not N/s, N/m, N/h, N/d or N/<duration> (for example 100/s, 30/d, 5/10s)")
        }
        return (count, period)
    }

    /// How the limit reads in `ferry limit list` and log lines.
    public var summary: String {
        var text: String
        switch kind {
        case .concurrency(let count): text = "concurrency \(count)"
        case .rate(let count, let period, let burst):
            text = "rate \(Self.rateText(count: count, period: period))" + (burst > 1 ? " burst \(burst)" : "")
        }
        if let type { text += " type \(type)" }
        if perKey { text += " per key" }
        return text
    }

    // Stored as JSON, one field of `ferry:{Q}:limits` per limit, readable in redis-cli and by
    // any language: {"concurrency":5} or {"rate":100,"period_ms":1000,"burst":1}, with "type"
    // and "per_key" when set.
    private enum CodingKeys: String, CodingKey {
        case name, concurrency, rate, periodMilliseconds = "period_ms", burst, type, perKey = "per_key"
    }

    /// Reads the stored JSON form.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        type = try container.decodeIfPresent(String.self, forKey: .type)
        perKey = try container.decodeIfPresent(Bool.self, forKey: .perKey) ?? false
        if let count = try container.decodeIfPresent(Int.self, forKey: .concurrency) {
            kind = .concurrency(count)
        } else {
            kind = .rate(
                count: try container.decode(Int.self, forKey: .rate),
                period: .milliseconds(try container.decode(Int64.self, forKey: .periodMilliseconds)),
                burst: try container.decodeIfPresent(Int.self, forKey: .burst) ?? 1)
        }
    }

    /// Writes the stored JSON form.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        switch kind {
        case .concurrency(let count):
            try container.encode(count, forKey: .concurrency)
        case .rate(let count, let period, let burst):
            try container.encode(count, forKey: .rate)
            try container.encode(period.milliseconds, forKey: .periodMilliseconds)
            try container.encode(burst, forKey: .burst)
        }
        try container.encodeIfPresent(type, forKey: .type)
        if perKey { try container.encode(true, forKey: .perKey) }
    }
}

/// A queue's limits in Redis (`ferry:{Q}:limits`, limit name → JSON): what `ferry limit`
/// changes and every worker reads each second.
public struct QueueLimits: QueueStore {
    /// The queue, its keys and the connection every call uses.
    public let scope: QueueScope

    /// A store of `scope.queue`; nothing is sent until a method is called.
    public init(_ scope: QueueScope) { self.scope = scope }

    /// Adds the limit, or replaces the one of that name. Jobs waiting on a limit of that name
    /// are woken (due now) so the new setting decides for them at once, and a replaced rate
    /// starts afresh.
    public func set(_ limit: QueueLimit) async throws(FerryError) {
        try limit.validate()
        let json: String
        do {
            json = String(decoding: try JSONEncoder.sortedKeys.encode(limit), as: UTF8.self)
        } catch {
            throw FerryError(.invalidInput, "the limit could not be written as JSON: \(error)")
        }
        do {
            try await connection.send(RedisCommand("HSET", [.string(keys.limits), .string(limit.name), .string(json)]))
        } catch {
            throw FerryError(error)
        }
        try await wakeWaiting(on: limit.name)
    }

    /// Removes the limit; jobs waiting on it are woken. Returns false when there was none.
    @discardableResult
    public func delete(name: String) async throws(FerryError) -> Bool {
        let removed: Bool
        do {
            removed = try await connection.send(RedisCommand("HDEL", [.string(keys.limits), .string(name)])).integer == 1
        } catch {
            throw FerryError(error)
        }
        try await wakeWaiting(on: name)
        return removed
    }

    /// Makes every job waiting on the limit `name` due now and drops its rate state
    /// (`limit_wake.lua`), for all its keys. Slots of running jobs stay until they end.
    private func wakeWaiting(on name: String) async throws(FerryError) {
        do {
            let state = try await connection.scanKeys(matching: keys.limitPrefix + name + ":*").filter { key in
                let name = String(decoding: key, as: UTF8.self)
                return QueueKeys.LimitKeys.waitingSuffixes.contains { name.hasSuffix($0) }
            }
            for chunk in stride(from: 0, to: state.count, by: 100) {
                try await connection.run(
                    Self.limitWakeScript, keys: state[chunk..<min(chunk + 100, state.count)].map { .bytes($0) },
                    arguments: [.string(keys.delayedPrefix)])
            }
        } catch {
            throw FerryError(error)
        }
    }

    /// The queue's limits, by name. A field that is not a limit Ferry can read (written by hand)
    /// is left out and named in `unreadable`.
    public func list() async throws(FerryError) -> (limits: [QueueLimit], unreadable: [String]) {
        let stored = try await read()
        return (stored.limits.map(\.limit), stored.unreadable)
    }

    /// The queue's limits with their JSON as stored, which `acquire.lua` compares to notice a
    /// worker's copy is out of date.
    func read() async throws(FerryError) -> (limits: [(limit: QueueLimit, json: String)], unreadable: [String]) {
        let reply: RedisReply
        do {
            reply = try await connection.send(RedisCommand("HGETALL", [.string(keys.limits)]))
        } catch {
            throw FerryError(error)
        }
        var limits: [(QueueLimit, String)] = [], unreadable: [String] = []
        for (name, value) in QueueInspector.fields(reply).sorted(by: { $0.key < $1.key }) {
            if let bytes = value.bytes, var limit = try? JSONDecoder().decode(QueueLimit.self, from: Data(bytes)),
                (try? limit.validate()) != nil
            {
                limit.name = name
                limits.append((limit, String(decoding: bytes, as: UTF8.self)))
            } else {
                unreadable.append(name)
            }
        }
        return (limits, unreadable)
    }

    /// What a limit holds now: slots of running jobs (concurrency; slots of a worker that
    /// crashed count until its lease ends) and jobs waiting on it. For a per-key limit, the sums
    /// over its keys (found with `SCAN`).
    public func usage(of limit: QueueLimit) async throws(FerryError) -> (holding: Int, waiting: Int) {
        do {
            let state = keys.limitState(name: limit.name, key: nil)
            var heldKeys = [state.held], waitingKeys = [state.waiting]
            if limit.perKey {
                let text = { (key: [UInt8]) in String(decoding: key, as: UTF8.self) }
                heldKeys = try await connection.scanKeys(matching: keys.limitPrefix + limit.name + ":k:*:held").map(text)
                waitingKeys = try await connection.scanKeys(matching: keys.limitPrefix + limit.name + ":k:*:waiting").map(text)
            }
            // One round trip for all the keys, however many a per-key limit has.
            let replies = try await connection.pipeline(
                heldKeys.map { RedisCommand("HGET", [.string($0), "*"]) }
                    + waitingKeys.map { RedisCommand("ZCARD", [.string($0)]) })
            let holding = replies.prefix(heldKeys.count).reduce(0) { $0 + (Int($1.string ?? "0") ?? 0) }
            let waiting = replies.dropFirst(heldKeys.count).reduce(0) { $0 + Int($1.integer ?? 0) }
            return (holding, waiting)
        } catch {
            throw FerryError(error)
        }
    }

    static let limitWakeScript = FerryScripts.script("limit_wake", EmbeddedLuaScripts.limit_wake)
}

extension JSONEncoder {
    /// Keys in a fixed order: stored JSON reads the same in redis-cli every time.
    static var sortedKeys: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}
