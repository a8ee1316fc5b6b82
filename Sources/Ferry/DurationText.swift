import Foundation

extension Duration {
    /// Reads a duration as every Ferry flag and handler line writes one: a whole number and a
    /// unit (`500ms`, `30s`, `5m`, `1h`, `7d`), or `0`; nil for anything else (a sign, a
    /// fraction, a space, an unknown unit), so a typo is refused rather than guessed at.
    public init?(ferryText text: String) {
        if text == "0" {
            self = .zero
            return
        }
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 10, let amount = Int64(digits) else { return nil }
        switch text.dropFirst(digits.count) {
        case "ms": self = .milliseconds(amount)
        case "s": self = .seconds(amount)
        case "m": self = .seconds(amount * 60)
        case "h": self = .seconds(amount * 3600)
        case "d": self = .seconds(amount * 86400)
        default: return nil
        }
    }
}

/// `1h02m`, `3m12s`, `4.2s`, `850ms`: short and readable in a table or a page (`ferry inspect`,
/// the dashboard).
public func durationText(milliseconds: Int) -> String {
    switch milliseconds {
    case ..<1000: return "\(milliseconds)ms"
    case ..<60_000: return String(format: "%.1fs", Double(milliseconds) / 1000)
    case ..<3_600_000: return "\(milliseconds / 60_000)m\(String(format: "%02d", milliseconds / 1000 % 60))s"
    default: return "\(milliseconds / 3_600_000)h\(String(format: "%02d", milliseconds / 60_000 % 60))m"
    }
}
