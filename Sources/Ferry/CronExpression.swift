import Foundation

/// A standard five-field cron expression (`minute hour day-of-month month day-of-week`) and the
/// times it names in a time zone: what `ferry cron set --cron '*/5 * * * *' --tz Europe/Paris`
/// schedules.
///
/// Each field takes `*`, numbers, ranges (`1-5`), lists (`1,15`), steps (`*/15`, `10-50/20`)
/// and, for months and days of the week, names (`jan`, `mon-fri`; Sunday is 0 or 7). As in Vixie
/// cron, when both the day of the month and the day of the week are restricted, a day matching
/// either runs.
///
/// **Daylight saving.** Times are matched on the wall clock of the time zone, and each matching
/// wall-clock time runs once: in the hour a fall-back repeats, at its first occurrence only; a
/// time a spring-forward skips (02:30 on the night clocks go from 02:00 to 03:00) runs as the
/// clock reads it one gap later (03:30), unless that instant already runs.
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
    /// The allowed values of each field, from the text.
    let minutes: Set<Int>
    let hours: Set<Int>
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    /// 0 is Sunday (7 is read as 0).
    let daysOfWeek: Set<Int>
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool
    /// The expression as given.
    public let description: String

    /// Why an expression was refused, naming the field and what is wrong.
    public struct ParseError: Error, Sendable, CustomStringConvertible {
        /// What to tell the person who wrote it.
        public let description: String
    }

    private static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    private static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Parses `text`.
    ///
    /// - Throws: ``ParseError`` naming the field and the part that does not parse.
    public init(_ text: String) throws(ParseError) {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ParseError(
                description:
                    "a cron expression has 5 fields (minute hour day-of-month month day-of-week), \"\(text)\" has \(fields.count); for example '*/5 * * * *'"
            )
        }
        minutes = try Self.parse(fields[0], name: "minute", range: 0...59)
        hours = try Self.parse(fields[1], name: "hour", range: 0...23)
        daysOfMonth = try Self.parse(fields[2], name: "day-of-month", range: 1...31)
        months = try Self.parse(fields[3], name: "month", range: 1...12, names: Self.monthNames, firstNamed: 1)
        let weekdays = try Self.parse(fields[4], name: "day-of-week", range: 0...7, names: Self.dayNames, firstNamed: 0)
        daysOfWeek = Set(weekdays.map { $0 % 7 })
        dayOfMonthRestricted = fields[2] != "*" && !fields[2].hasPrefix("*/")
        dayOfWeekRestricted = fields[4] != "*" && !fields[4].hasPrefix("*/")
        description = fields.joined(separator: " ")
    }

    private static func parse(
        _ field: String, name: String, range: ClosedRange<Int>, names: [String] = [], firstNamed: Int = 0
    ) throws(ParseError) -> Set<Int> {
        func value(_ text: Substring) throws(ParseError) -> Int {
            if let index = names.firstIndex(of: text.lowercased()) { return index + firstNamed }
            guard let number = Int(text), text.allSatisfy(\.isASCII), range.contains(number) else {
                let named = names.isEmpty ? "" : " or a name (\(names.first ?? "")…\(names.last ?? ""))"
                throw ParseError(
                    description:
                        "the \(name) field \"\(field)\": \"\(text)\" is not a number from \(range.lowerBound) to \(range.upperBound)\(named)"
                )
            }
            return number
        }
        var values: Set<Int> = []
        for part in field.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2, let base = pieces.first, !base.isEmpty else {
                throw ParseError(description: "the \(name) field \"\(field)\": \"\(part)\" is not a value, range or step")
            }
            var step = 1
            if pieces.count == 2 {
                guard let parsed = Int(pieces[1]), parsed > 0, parsed <= range.upperBound else {
                    throw ParseError(
                        description:
                            "the \(name) field \"\(field)\": the step \"\(pieces[1])\" must be a whole number from 1 to \(range.upperBound)"
                    )
                }
                step = parsed
            }
            let bounds: ClosedRange<Int>
            if base == "*" {
                bounds = range
            } else if let dash = base.firstIndex(of: "-") {
                let low = try value(base[..<dash]), high = try value(base[base.index(after: dash)...])
                guard low <= high else {
                    throw ParseError(description: "the \(name) field \"\(field)\": the range \"\(base)\" runs backwards")
                }
                bounds = low...high
            } else {
                let single = try value(base)
                bounds = single...(pieces.count == 2 ? range.upperBound : single)
            }
            values.formUnion(stride(from: bounds.lowerBound, through: bounds.upperBound, by: step))
        }
        return values
    }

    /// Whether the wall-clock date (`month` 1-12, `weekday` 0 = Sunday) is a day to run.
    func matchesDay(day: Int, month: Int, weekday: Int) -> Bool {
        guard months.contains(month) else { return false }
        let byMonthDay = daysOfMonth.contains(day), byWeekday = daysOfWeek.contains(weekday)
        if dayOfMonthRestricted && dayOfWeekRestricted { return byMonthDay || byWeekday }
        return byMonthDay && byWeekday
    }

    /// The first time after `after` that the expression names in `timeZone` (to the minute), or
    /// nil when none comes within eight years (`0 0 30 2 *`: February has no 30th).
    public func next(after: Date, in timeZone: TimeZone) -> Date? {
        let afterSeconds = Int64(floor(after.timeIntervalSince1970))
        // Wall-clock seconds ("as if UTC") of `after`, and of the minute after it.
        let wallAfter = afterSeconds + Int64(timeZone.secondsFromGMT(for: after))
        var wall = (wallAfter / 60 + 1) * 60
        let days: Int64 = 86_400
        let limit = wall + 8 * 366 * days
        while wall < limit {
            let (_, month, day) = Date.civilDate(daysSince1970: wall / days)
            let weekday = Int(((wall / days) % 7 + 11) % 7)  // 1970-01-01 was a Thursday (4)
            guard matchesDay(day: day, month: month, weekday: weekday) else {
                wall = (wall / days + 1) * days
                continue
            }
            let ofDay = Int(wall % days)
            var minuteOfDay = ofDay / 60
            while minuteOfDay < 24 * 60 {
                let hour = minuteOfDay / 60, minute = minuteOfDay % 60
                if !hours.contains(hour) {
                    minuteOfDay = (hour + 1) * 60
                    continue
                }
                if minutes.contains(minute) {
                    let candidateWall = (wall / days) * days + Int64(minuteOfDay) * 60
                    let instant = Self.instant(forWall: candidateWall, in: timeZone)
                    if instant > afterSeconds { return Date(timeIntervalSince1970: Double(instant)) }
                }
                minuteOfDay += 1
            }
            wall = (wall / days + 1) * days
        }
        return nil
    }

    /// The instant (seconds since the epoch) a wall-clock time stands for in `timeZone`: the
    /// first of two in a repeated hour; one gap later for a time that does not exist.
    static func instant(forWall wall: Int64, in timeZone: TimeZone) -> Int64 {
        func offset(_ seconds: Int64) -> Int64 {
            Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(seconds))))
        }
        let before = offset(wall - 86_400), after = offset(wall + 86_400)
        let candidates = Set([before, offset(wall), after]).map { wall - $0 }.filter { $0 + offset($0) == wall }
        if let first = candidates.min() { return first }
        return wall - before  // skipped by a spring-forward: the clock reads it one gap later
    }
}
