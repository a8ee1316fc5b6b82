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
