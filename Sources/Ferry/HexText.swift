extension Sequence<UInt8> {
    /// The bytes as lowercase hexadecimal text, two digits a byte: how digests and random ids are
    /// written into keys and headers. (`String(format: "%02x")` a byte cost about a microsecond
    /// each, 32 of them for every SHA-256 an API request computes.)
    public var hexText: String {
        var text: [UInt8] = []
        text.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            text.append(Self.hexDigit(byte >> 4))
            text.append(Self.hexDigit(byte & 0xf))
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The ASCII digit of a value below 16.
    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }
}
