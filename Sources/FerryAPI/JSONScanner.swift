/// A strict reader of JSON text (RFC 8259) for the publish route's quick path: it takes a
/// request's bytes value by value, so the route reads the members it knows without building
/// a Foundation object tree. `JSONSerialization` cost a publish about 3.5 µs of its CPU here
/// (the tree, its bridging to `NSDictionary` and `NSNumber`, the casts back), and it lets
/// through text that is not JSON (`[1,]`, `{"a":1,}`), which a job's payload must never be.
///
/// Every read returns nil, with the scanner's position then unspecified, for anything that is
/// not JSON: a trailing comma, a leading zero, a bare control character or a bad escape in a
/// string, a lone surrogate, bytes that are not UTF-8, nesting deeper than ``maximumDepth``.
/// A caller treats nil as "not mine": the route then gives the body to the generated decoder,
/// which answers as the API document says.
struct JSONScanner {
    /// Deeper values are left to the generated decoder (which has a limit of its own).
    static let maximumDepth = 512

    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Whether only whitespace is left.
    mutating func isAtEnd() -> Bool {
        skipWhitespace()
        return index == bytes.count
    }

    /// Takes `byte` (after whitespace) when it comes next.
    mutating func take(_ byte: UInt8) -> Bool {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    /// The string that comes next (after whitespace), its escapes decoded; nil when a string
    /// does not come next or is not valid.
    mutating func string() -> String? {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        let start = index + 1
        guard let (end, escaped) = endOfString(from: start) else { return nil }
        index = end + 1
        return decoded(start..<end, escaped: escaped)
    }

    /// The text of the string whose bytes (between its quotes) are `range`, checked by
    /// ``endOfString(from:)``: its escapes decoded, nil when it is not UTF-8 or holds a lone
    /// surrogate.
    private func decoded(_ range: Range<Int>, escaped: Bool) -> String? {
        guard escaped else { return String(validating: bytes[range], as: UTF8.self) }
        var text: [UInt8] = []
        text.reserveCapacity(range.count)
        var at = range.lowerBound
        while at < range.upperBound {
            let byte = bytes[at]
            guard byte == UInt8(ascii: "\\") else {
                text.append(byte)
                at += 1
                continue
            }
            let escape = bytes[at + 1]
            at += 2
            switch escape {
            case UInt8(ascii: "b"): text.append(0x08)
            case UInt8(ascii: "f"): text.append(0x0C)
            case UInt8(ascii: "n"): text.append(0x0A)
            case UInt8(ascii: "r"): text.append(0x0D)
            case UInt8(ascii: "t"): text.append(0x09)
            case UInt8(ascii: "u"):
                guard var code = hexValue(at: at) else { return nil }
                at += 4
                if (0xD800..<0xDC00).contains(code) {
                    // A high surrogate must be followed by an escaped low one.
                    guard at + 6 <= range.upperBound, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u"),
                        let low = hexValue(at: at + 2), (0xDC00..<0xE000).contains(low)
                    else { return nil }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    at += 6
                }
                guard let scalar = Unicode.Scalar(code) else { return nil }
                UTF8.encode(scalar) { text.append($0) }
            default: text.append(escape)  // `"`, `\` or `/`, as endOfString checked
            }
        }
        return String(validating: text, as: UTF8.self)
    }

    /// The whole number that comes next (after whitespace), written without a fraction or an
    /// exponent; nil for anything else, or one past 18 digits.
    mutating func integer() -> Int? {
        skipWhitespace()
        let start = index
        guard let end = endOfNumber(from: start), end - start <= 18 + (bytes[start] == UInt8(ascii: "-") ? 1 : 0),
            !bytes[start..<end].contains(where: { $0 == UInt8(ascii: ".") || $0 | 0x20 == UInt8(ascii: "e") })
        else { return nil }
        index = end
        return Int(String(decoding: bytes[start..<end], as: UTF8.self))
    }

    /// The value that comes next (after whitespace), checked and appended to `text` as it is
    /// written but for the whitespace outside its strings; false when it is not valid JSON.
    mutating func value(into text: inout [UInt8]) -> Bool {
        // At most the rest of the text: one allocation, where growing would make several.
        text.reserveCapacity(text.count + bytes.count - index)
        return value(into: &text, depth: 0)
    }

    private mutating func value(into text: inout [UInt8], depth: Int) -> Bool {
        skipWhitespace()
        guard index < bytes.count else { return false }
        switch bytes[index] {
        case UInt8(ascii: "\""):
            guard let (end, escaped) = endOfString(from: index + 1), decoded(index + 1..<end, escaped: escaped) != nil
            else { return false }
            text += bytes[index...end]
            index = end + 1
            return true
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let isObject = bytes[index] == UInt8(ascii: "{")
            let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
            guard depth < Self.maximumDepth else { return false }
            text.append(bytes[index])
            index += 1
            if take(close) {
                text.append(close)
                return true
            }
            repeat {
                if isObject {
                    skipWhitespace()
                    guard index < bytes.count, bytes[index] == UInt8(ascii: "\""), value(into: &text, depth: depth + 1),
                        take(UInt8(ascii: ":"))
                    else { return false }
                    text.append(UInt8(ascii: ":"))
                }
                guard value(into: &text, depth: depth + 1) else { return false }
                if take(UInt8(ascii: ",")) {
                    text.append(UInt8(ascii: ","))
                    continue
                }
                guard take(close) else { return false }
                text.append(close)
                return true
            } while true
        case UInt8(ascii: "t"): return literal("true", into: &text)
        case UInt8(ascii: "f"): return literal("false", into: &text)
        case UInt8(ascii: "n"): return literal("null", into: &text)
        default:
            guard let end = endOfNumber(from: index) else { return false }
            text += bytes[index..<end]
            index = end
            return true
        }
    }

    private mutating func literal(_ word: StaticString, into text: inout [UInt8]) -> Bool {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count,
            word.withUTF8Buffer({ bytes[index..<index + count].elementsEqual($0) })
        else { return false }
        text += bytes[index..<index + count]
        index += count
        return true
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"): index += 1
            default: return
            }
        }
    }

    /// The index of the `"` that ends the string whose text starts at `start`, and whether the
    /// text holds an escape; nil when it has a bare control character, a bad escape or no end.
    /// (Its bytes' UTF-8 is the caller's to check.)
    private func endOfString(from start: Int) -> (Int, Bool)? {
        var at = start
        var escaped = false
        while at < bytes.count {
            switch bytes[at] {
            case UInt8(ascii: "\""): return (at, escaped)
            case 0..<0x20: return nil
            case UInt8(ascii: "\\"):
                guard at + 1 < bytes.count else { return nil }
                escaped = true
                switch bytes[at + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    at += 2
                case UInt8(ascii: "u"):
                    guard hexValue(at: at + 2) != nil else { return nil }
                    at += 6
                default: return nil
                }
            default: at += 1
            }
        }
        return nil
    }

    /// The four hex digits at `at` as a number.
    private func hexValue(at: Int) -> UInt32? {
        guard at + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for byte in bytes[at..<at + 4] {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    /// The end of the number that starts at `start`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    private func endOfNumber(from start: Int) -> Int? {
        var at = start
        func digits() -> Bool {
            let first = at
            while at < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[at]) { at += 1 }
            return at > first
        }
        if at < bytes.count, bytes[at] == UInt8(ascii: "-") { at += 1 }
        guard at < bytes.count else { return nil }
        if bytes[at] == UInt8(ascii: "0") {
            at += 1
        } else {
            guard digits() else { return nil }
        }
        if at < bytes.count, bytes[at] == UInt8(ascii: ".") {
            at += 1
            guard digits() else { return nil }
        }
        if at < bytes.count, bytes[at] | 0x20 == UInt8(ascii: "e") {
            at += 1
            if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") { at += 1 }
            guard digits() else { return nil }
        }
        return at
    }
}
