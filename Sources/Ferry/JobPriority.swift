/// How urgent a job is (`priority`): a level from 0, the most urgent, to 9, the least, as Oban
/// and BullMQ count; `high` is 0, `normal` 5 (the default), `low` 9.
///
/// Each level other than normal has a lane of its own, a stream beside the queue's
/// (`ferry:{Q}:jobs:p<level>`, the same hash tag), so a job never waits behind a backlog of
/// less urgent ones: workers read the lanes most urgent first (``PriorityMode/strict``) or in
/// proportion to ``weight`` (``PriorityMode/weighted``).
public struct JobPriority: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// 0 (most urgent) to 9.
    public let level: Int

    /// The most urgent level, 0.
    public static let high = JobPriority(uncheckedLevel: 0)
    /// The default level, 5: the queue's own stream.
    public static let normal = JobPriority(uncheckedLevel: 5)
    /// The least urgent level, 9.
    public static let low = JobPriority(uncheckedLevel: 9)
    /// Every level, most urgent first.
    public static let all = (0...9).map(JobPriority.init(uncheckedLevel:))

    /// A level from 0 to 9.
    ///
    /// - Throws: ``FerryError`` (invalid input) for a level outside 0–9.
    public init(level: Int) throws(FerryError) {
        guard (0...9).contains(level) else {
            throw FerryError(.invalidInput, "a priority is 0 (most urgent) to 9, or high, normal, low; got \(level)")
        }
        self.level = level
    }

    private init(uncheckedLevel: Int) { self.level = uncheckedLevel }

    /// `high`, `normal`, `low` or a digit 0–9, as the wire field and `--priority` take it; nil for
    /// anything else.
    public init?(text: String) {
        switch text {
        case "high": self = .high
        case "normal": self = .normal
        case "low": self = .low
        default:
            guard text.count == 1, let level = Int(text) else { return nil }
            self.level = level
        }
    }

    /// The share of reads a lane gets under ``PriorityMode/weighted``: 10 − level, so `high`
    /// (10), `normal` (5) and `low` (1) are read 10 : 5 : 1 while all have jobs, and no level
    /// waits forever.
    public var weight: Int { 10 - level }

    /// The wire value: `high`, `normal`, `low`, or the digit.
    public var description: String {
        switch level {
        case 0: "high"
        case 5: "normal"
        case 9: "low"
        default: String(level)
        }
    }

    /// More urgent first: `high < normal`.
    public static func < (lhs: JobPriority, rhs: JobPriority) -> Bool { lhs.level < rhs.level }
}

/// How a worker picks among a queue's priority lanes when several have jobs.
public enum PriorityMode: String, Sendable, Hashable, CaseIterable {
    /// The most urgent lane with jobs first, always: a backlog of low jobs never delays a high one,
    /// and low jobs wait while more urgent ones keep coming.
    case strict
    /// Lanes in random order weighted by ``JobPriority/weight`` at each read: urgent lanes get
    /// most reads, and every lane progresses.
    case weighted
}
