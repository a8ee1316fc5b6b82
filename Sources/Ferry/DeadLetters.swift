import FerryRedis
import Foundation

/// The dead-letter stream of a queue, `ferry:{Q}:dead`: what `ferry dlq` and `ferry job retry`
/// read, redrive and purge.
///
/// Each entry holds the job's original fields plus `dead_letter.*` fields saying where it came
/// from and why it failed (docs/wire-format.md).
public struct DeadLetters: QueueStore {
    /// The queue whose dead letters these are, and the connection, which may be shared with
    /// other work.
    public let scope: QueueScope

    static let redriveScript = FerryScripts.script("redrive", EmbeddedLuaScripts.redrive)

    /// Reads and writes through `scope.connection`.
    public init(_ scope: QueueScope) { self.scope = scope }

    /// One dead-lettered job.
    public struct Letter: Sendable, Hashable {
        /// The dead-letter entry as stored: the job's fields and the `dead_letter.*` ones.
        public var entry: StreamEntry

        /// Its ID in the dead-letter stream: what `ferry dlq show` and redrive take.
        public var id: String { entry.id }
        /// The job id it will keep when redriven: its `job_id`, else its original entry ID.
        public var jobID: String { text("job_id").flatMap { $0.isEmpty ? nil : $0 } ?? sourceID ?? entry.id }
        /// The job's type, to select what to redrive (`--type`).
        public var type: String? { text("type") }
        /// Its entry ID in the job stream, before it was dead-lettered.
        public var sourceID: String? { text("dead_letter.source_id") }
        /// The consumer group that gave up on it; a redrive delivers it to that group only.
        public var sourceGroup: String? { text("dead_letter.source_group") }
        /// Why, in a word stable enough to group by: `malformed_entry`, `http_500`, `worker_lost`.
        public var errorClass: String? { text("dead_letter.error_class") }
        /// Why, in words: the last error (at most 4 KiB).
        public var error: String? { text("dead_letter.error") }
        /// Deliveries to the group that gave up, the last one included.
        public var deliveryCount: Int? { text("dead_letter.delivery_count").flatMap { Int($0) } }
        /// When it was dead-lettered.
        public var failedAt: Date? {
            text("dead_letter.failed_at").flatMap { Int64($0) }.map(Date.init(millisecondsSince1970:))
        }

        /// A field of the entry as text (invalid UTF-8 repaired), for fields without a property here.
        public func text(_ field: String) -> String? {
            entry.value(of: field).map { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// The number of dead-lettered jobs.
    public func count() async throws(FerryError) -> Int {
        Int(try await send(RedisCommand("XLEN", [.string(keys.deadLetter)])).integer ?? 0)
    }

    /// Dead-lettered jobs, oldest first, from `start` (an entry ID, `-` for the beginning).
    public func list(from start: String = "-", limit: Int) async throws(FerryError) -> [Letter] {
        let reply = try await send(
            RedisCommand("XRANGE", [.string(keys.deadLetter), .string(start), "+", "COUNT", .integer(Int64(limit))]))
        return StreamEntry.entries(from: reply).map(Letter.init(entry:))
    }

    /// Every dead-lettered job, read in pages.
    public func all() async throws(FerryError) -> [Letter] {
        var letters: [Letter] = []
        var start = "-"
        while true {
            let page = try await list(from: start, limit: 1000)
            letters += page
            guard page.count == 1000, let last = page.last else { return letters }
            start = "(" + last.id
        }
    }

    /// One dead-lettered job by its dead-letter entry ID, or nil.
    public func letter(id: String) async throws(FerryError) -> Letter? {
        guard id.wholeMatch(of: /[0-9]{1,20}-[0-9]{1,20}/) != nil else {
            throw FerryError(
                .invalidInput,
                "\"\(id)\" is not a dead-letter entry ID: write one as ferry dlq list \(queue) shows it, such as 1700000000000-0")
        }
        let reply = try await send(RedisCommand("XRANGE", [.string(keys.deadLetter), .string(id), .string(id)]))
        return StreamEntry.entries(from: reply).first.map(Letter.init(entry:))
    }

    /// The dead-lettered job with this job id (its `job_id`, or the original entry ID), or nil.
    ///
    /// Found through the job's status, which names its dead letter in each group that
    /// dead-lettered it (`<group>.dead_id`), newest first; only a job without a status (status
    /// off, or expired) is looked for by reading the dead-letter stream from the start.
    public func letter(jobID: String) async throws(FerryError) -> Letter? {
        if let record = try await JobStatusRecord.load(jobID: jobID, queue: queue, connection: connection) {
            let named = record.groups.values.compactMap { $0["dead_id"] }.filter { !$0.isEmpty }
            for id in named.sorted(by: { !StreamEntry.isID($0, atOrBefore: $1) }) {
                if let letter = try await letter(id: id), letter.jobID == jobID { return letter }
            }
            if !named.isEmpty { return nil }
        }
        return try await all().last { $0.jobID == jobID }
    }

    /// Which dead letters a bulk redrive or purge acts on (`ferry dlq`, the HTTP API's
    /// `dead-letters:redrive`, `:purge` and `jobs:retry`): named ones, or every one, narrowed by
    /// the criteria that are set.
    public struct Selection: Sendable, Hashable {
        /// Dead-letter entry IDs; with ``jobIDs`` empty too, every dead letter is a candidate.
        public var ids: [String] = []
        /// Job ids, found as ``letter(jobID:)`` finds them.
        public var jobIDs: [String] = []
        /// Only jobs of this type.
        public var type: String?
        /// Only jobs dead-lettered for this reason (`dead_letter.error_class`).
        public var errorClass: String?
        /// Only jobs this consumer group gave up on.
        public var group: String?
        /// Only jobs dead-lettered before this time.
        public var before: Date?

        /// Every dead letter; set criteria to narrow it.
        public init() {}

        /// Whether a criterion other than naming letters is set.
        public var isNarrowed: Bool { type != nil || errorClass != nil || group != nil || before != nil }

        /// Whether `letter` meets every criterion that is set.
        public func matches(_ letter: Letter) -> Bool {
            (type == nil || letter.type == type) && (errorClass == nil || letter.errorClass == errorClass)
                && (group == nil || letter.sourceGroup == group) && (before.map { letter.entry.time < $0 } ?? true)
        }
    }

    /// The dead letters `selection` names, oldest first, at most `limit` of them; `missing` lists
    /// named IDs and job ids with no dead letter, and `more` says whether others matched beyond
    /// `limit` (act on these, then select again).
    public func select(
        _ selection: Selection, limit: Int = .max
    ) async throws(FerryError) -> (
        letters: [Letter], missing: [String], more: Bool
    ) {
        var letters: [Letter] = []
        var missing: [String] = []
        if selection.ids.isEmpty && selection.jobIDs.isEmpty {
            var start = "-"
            while true {
                let page = try await list(from: start, limit: 1000)
                letters += page.filter(selection.matches)
                if letters.count > limit { return (Array(letters.prefix(limit)), [], true) }
                guard page.count == 1000, let last = page.last else { return (letters, [], false) }
                start = "(" + last.id
            }
        }
        for id in selection.ids {
            if let found = try await letter(id: id) { letters.append(found) } else { missing.append(id) }
        }
        for jobID in selection.jobIDs {
            if let found = try await letter(jobID: jobID) { letters.append(found) } else { missing.append(jobID) }
        }
        let matched = letters.filter(selection.matches)
        return (Array(matched.prefix(limit)), missing, matched.count > limit)
    }

    /// Puts one dead-lettered job back on the queue, atomically with its removal from the
    /// dead-letter stream (`redrive.lua`). Only the group that dead-lettered it runs it again.
    ///
    /// - Returns: the job's new entry ID, or nil when the dead-letter entry was already gone
    ///   (redriven or purged by someone else): running a redrive twice is safe.
    @discardableResult
    public func redrive(_ letter: Letter) async throws(FerryError) -> String? {
        try await send(
            Self.redriveScript,
            keys: [.string(keys.jobs), .string(keys.deadLetter), .string(keys.jobStatus(jobID: letter.jobID))],
            arguments: [
                .string(letter.id), .integer(Date().millisecondsSince1970), .string(keys.statusIndexPrefix),
                .string(letter.jobID),
            ]
        ).string
    }

    /// Deletes dead-lettered jobs by entry ID. Returns how many existed.
    @discardableResult
    public func purge(ids: [String]) async throws(FerryError) -> Int {
        if ids.isEmpty { return 0 }
        return Int(try await send(RedisCommand("XDEL", [.string(keys.deadLetter)] + ids.map { .string($0) })).integer ?? 0)
    }

    /// Deletes every dead-lettered job dead-lettered before `date` (entry IDs are times).
    @discardableResult
    public func purge(before date: Date) async throws(FerryError) -> Int {
        Int(
            try await send(
                RedisCommand("XTRIM", [.string(keys.deadLetter), "MINID", .string("\(date.millisecondsSince1970)-0")])
            ).integer ?? 0)
    }
}
