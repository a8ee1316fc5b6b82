/// JSON written by hand where it is written per job: push envelopes and log lines. Profiles put
/// `JSONEncoder` and `JSONSerialization` at a fifth of a pushing worker's CPU and at most of a
/// logging worker's, for objects whose shape is fixed and whose values are strings and integers.
public enum JSONText {
    /// Appends `text` as a JSON string, quoted and escaped as RFC 8259 requires: `"` and `\`,
    /// and control characters (`\n`, `\r`, `\t`, others as `\u00XX`). Everything else, slashes
    /// and non-ASCII included, is copied as UTF-8.
    public static func appendString(_ text: String, to json: inout [UInt8]) {
        var text = text
        text.withUTF8 { appendString(utf8: $0, to: &json) }
    }

    /// ``appendString(_:to:)`` for a part of a string (a log field's name without its prefix).
    public static func appendString(_ text: Substring, to json: inout [UInt8]) {
        var text = text
        text.withUTF8 { appendString(utf8: $0, to: &json) }
    }

    /// Scans the UTF-8 bytes in place and copies the runs between escapes whole: through
    /// `String.UTF8View`'s iterator, this was the largest of a logging worker's own symbols in a
    /// profile (docs/design.md, "A log line's cost").
    private static func appendString(utf8 bytes: UnsafeBufferPointer<UInt8>, to json: inout [UInt8]) {
        json.append(UInt8(ascii: "\""))
        var runStart = 0
        for index in bytes.indices {
            let byte = bytes[index]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
            json.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
            runStart = index + 1
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                json.append(UInt8(ascii: "\\"))
                json.append(byte)
            case UInt8(ascii: "\n"): json.append(contentsOf: #"\n"#.utf8)
            case UInt8(ascii: "\r"): json.append(contentsOf: #"\r"#.utf8)
            case UInt8(ascii: "\t"): json.append(contentsOf: #"\t"#.utf8)
            default:
                json.append(contentsOf: #"\u00"#.utf8)
                json.append(hexDigits[Int(byte >> 4)])
                json.append(hexDigits[Int(byte & 0xf)])
            }
        }
        json.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
        json.append(UInt8(ascii: "\""))
    }

    /// Appends `value` as a JSON number when it is a decimal integer (canonically: `"007"` as
    /// `7`), else as a JSON string: what log processors compare as numbers.
    public static func appendNumberOrString(_ value: String, to json: inout [UInt8]) {
        // Most values are not numbers: the first byte says so before any parse.
        if let first = value.utf8.first,
            first == UInt8(ascii: "-") || first == UInt8(ascii: "+") || (0x30...0x39).contains(first),
            let number = Int64(value)
        {
            json.append(contentsOf: String(number).utf8)
        } else {
            appendString(value, to: &json)
        }
    }

    /// Appends a JSON object of string values, keys sorted so equal objects give equal bytes
    /// (push attributes, in the wrapped body and in the raw format's `Ferry-Attributes`; log lines).
    ///
    /// - Parameter integersAsNumbers: writes a value that is a decimal integer as a JSON number,
    ///   canonically (`"007"` as `7`), so log processors can compare it.
    public static func appendObject(_ fields: [String: String], integersAsNumbers: Bool = false, to json: inout [UInt8]) {
        appendObject(
            fields.sorted(by: { $0.key < $1.key }).lazy.map { (key: Substring($0.key), value: $0.value) },
            integersAsNumbers: integersAsNumbers, to: &json)
    }

    /// Appends a JSON object of the fields in the order given (unique names, sorted by the caller
    /// when equal objects must give equal bytes). Inlinable, so a log line's fields, filtered
    /// lazily as they are written, are not walked through a generic sequence's witnesses.
    @inlinable
    public static func appendObject<Fields: Sequence>(
        _ fields: Fields, integersAsNumbers: Bool = false, to json: inout [UInt8]
    ) where Fields.Element == (key: Substring, value: String) {
        json.append(UInt8(ascii: "{"))
        var first = true
        for (name, value) in fields {
            if !first { json.append(UInt8(ascii: ",")) }
            first = false
            appendString(name, to: &json)
            json.append(UInt8(ascii: ":"))
            if integersAsNumbers {
                appendNumberOrString(value, to: &json)
            } else {
                appendString(value, to: &json)
            }
        }
        json.append(UInt8(ascii: "}"))
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}
