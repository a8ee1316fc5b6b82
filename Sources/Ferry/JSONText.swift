/// JSON written by hand where it is written per job: push envelopes and log lines. Profiles put
/// `JSONEncoder` and `JSONSerialization` at a fifth of a pushing worker's CPU and at most of a
/// logging worker's, for objects whose shape is fixed and whose values are strings and integers.
public enum JSONText {
    /// Appends `text` as a JSON string, quoted and escaped as RFC 8259 requires: `"` and `\`,
    /// and control characters (`\n`, `\r`, `\t`, others as `\u00XX`). Everything else, slashes
    /// and non-ASCII included, is copied as UTF-8.
    public static func appendString(_ text: String, to json: inout [UInt8]) {
        json.append(UInt8(ascii: "\""))
        // Most text needs no escape: copied whole.
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            json.append(contentsOf: text.utf8)
            json.append(UInt8(ascii: "\""))
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                json.append(UInt8(ascii: "\\"))
                json.append(byte)
            case UInt8(ascii: "\n"): json.append(contentsOf: #"\n"#.utf8)
            case UInt8(ascii: "\r"): json.append(contentsOf: #"\r"#.utf8)
            case UInt8(ascii: "\t"): json.append(contentsOf: #"\t"#.utf8)
            case 0..<0x20:
                json.append(contentsOf: #"\u00"#.utf8)
                json.append(hexDigits[Int(byte >> 4)])
                json.append(hexDigits[Int(byte & 0xf)])
            default:
                json.append(byte)
            }
        }
        json.append(UInt8(ascii: "\""))
    }

    /// Appends a JSON object of string values, keys sorted so equal objects give equal bytes
    /// (push attributes, in the wrapped body and in the raw format's `Ferry-Attributes`; log lines).
    ///
    /// - Parameter integersAsNumbers: writes a value that is a decimal integer as a JSON number,
    ///   canonically (`"007"` as `7`), so log processors can compare it.
    public static func appendObject(_ fields: [String: String], integersAsNumbers: Bool = false, to json: inout [UInt8]) {
        appendObject(
            fields.sorted(by: { $0.key < $1.key }).map { (key: $0.key, value: $0.value) }, integersAsNumbers: integersAsNumbers,
            to: &json)
    }

    /// Appends a JSON object of the fields in the order given (unique names, sorted by the caller
    /// when equal objects must give equal bytes).
    public static func appendObject(
        _ fields: [(key: String, value: String)], integersAsNumbers: Bool = false, to json: inout [UInt8]
    ) {
        json.append(UInt8(ascii: "{"))
        for (index, (name, value)) in fields.enumerated() {
            if index > 0 { json.append(UInt8(ascii: ",")) }
            appendString(name, to: &json)
            json.append(UInt8(ascii: ":"))
            if integersAsNumbers, let number = Int64(value) {
                json.append(contentsOf: String(number).utf8)
            } else {
                appendString(value, to: &json)
            }
        }
        json.append(UInt8(ascii: "}"))
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}
