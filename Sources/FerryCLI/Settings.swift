import ArgumentParser
import Ferry
import Foundation

/// Resolves a setting the way containers expect: the flag, else `FERRY_<NAME>` from the
/// environment, else the default. A bad value from either source is refused with the name of
/// the flag and the variable, and exit code 2.
struct Settings {
    var environment = ProcessInfo.processInfo.environment

    func value<Value>(
        _ flag: String?, option: String, variable: String, default defaultValue: Value, parse: (String) -> Value?
    ) throws -> Value {
        let (text, source): (String?, String) =
            if let flag { (flag, "--\(option)") } else { (environment[variable].flatMap { $0.isEmpty ? nil : $0 }, variable) }
        guard let text else { return defaultValue }
        guard let parsed = parse(text) else {
            throw InputError("invalid value \"\(text)\" for \(source)")
        }
        return parsed
    }

    func duration(_ flag: String?, option: String, variable: String, default defaultValue: Duration) throws -> Duration {
        try optionalDuration(flag, option: option, variable: variable) ?? defaultValue
    }

    func optionalDuration(_ flag: String?, option: String, variable: String) throws -> Duration? {
        let source = flag != nil ? "--\(option)" : variable
        guard let text = flag ?? environment[variable].flatMap({ $0.isEmpty ? nil : $0 }) else { return nil }
        guard let parsed = Self.parseDuration(text) else { throw Self.invalidDuration(text, for: source) }
        return parsed
    }

    func integer(_ flag: String?, option: String, variable: String, default defaultValue: Int) throws -> Int {
        do {
            return try value(flag, option: option, variable: variable, default: defaultValue) { Int($0) }
        } catch {
            throw InputError("\(error): write a whole number")
        }
    }

    /// One of a fixed set of words (`--jitter equal`); a bad one is refused naming them all.
    func choice<Choice: RawRepresentable & CaseIterable>(
        _ flag: String?, option: String, variable: String, default defaultValue: Choice
    ) throws -> Choice where Choice.RawValue == String {
        do {
            return try value(flag, option: option, variable: variable, default: defaultValue) { Choice(rawValue: $0) }
        } catch {
            throw InputError("\(error): use \(Choice.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    /// The error for a duration that does not parse, saying what is wrong and how to write one.
    static func invalidDuration(_ text: String, for source: String) -> InputError {
        let problem = text.hasPrefix("-") ? "a duration cannot be negative; " : ""
        return InputError(
            "invalid value \"\(text)\" for \(source): \(problem)write a whole number and a unit, such as 500ms, 30s, 5m, 1h or 7d"
        )
    }

    func string(_ flag: String?, variable: String, default defaultValue: String) -> String {
        flag ?? environment[variable].flatMap { $0.isEmpty ? nil : $0 } ?? defaultValue
    }

    /// `500ms`, `30s`, `5m`, `1h`, `7d`: a whole number and a unit, nothing else; or `0`.
    static func parseDuration(_ text: String) -> Duration? { Duration(ferryText: text) }
}
