/// A Redis command as binary-safe arguments, kept already encoded in RESP.
///
/// Never a format string: producers control job ids, payloads and keys, and hiredis's variadic
/// `redisCommand("%s")` would misread spaces, NULs and `%`. Each argument is written as a RESP
/// bulk string (`$<length>\r\n<bytes>\r\n`) as it is appended, so a pipeline of any size goes to
/// hiredis as one buffer (`redisAppendFormattedCommand`) with no further formatting.
public struct RedisCommand: Sendable, Hashable, CustomStringConvertible {
    /// The arguments as RESP bulk strings, back to back; the `*<count>` header is added on sending.
    private(set) var body: [UInt8] = []
    /// Arguments so far, the name's words included: the RESP `*<count>` header.
    public private(set) var argumentCount = 0

    /// The command's name, for error messages; never its arguments, which may hold secrets.
    public let name: String

    /// The script an `EVALSHA` or `FCALL` command runs, so a missing script can be loaded or sent as `EVAL`.
    var script: RedisScript?

    /// Starts a command; `name` may hold several words (`"XINFO GROUPS"`), each sent as its own argument.
    public init(_ name: String, reservingCapacity capacity: Int = 64) {
        self.name = name
        body.reserveCapacity(capacity)
        if name.utf8.contains(UInt8(ascii: " ")) {
            for word in name.split(separator: " ") { append(String(word)) }
        } else {
            append(name)
        }
    }

    /// Builds a whole command at once: `RedisCommand("XADD", [key, "*", "type", "send"])`.
    public init(_ name: String, _ arguments: [RedisArgument]) {
        self.init(name)
        for argument in arguments { append(argument) }
    }

    /// Appends one argument, encoded at once.
    public mutating func append(_ argument: RedisArgument) {
        switch argument {
        case .string(let text): append(text)
        case .bytes(let bytes): append(bytes: bytes)
        case .integer(let value): append(value)
        }
    }

    /// Appends a text argument as its UTF-8 bytes.
    public mutating func append(_ text: String) {
        var text = text
        text.withUTF8 { append(bytes: $0) }
    }

    /// Appends any bytes, NULs and CR LF included: payloads are binary-safe.
    public mutating func append<Bytes: Collection<UInt8>>(bytes: Bytes) {
        Self.appendLine(marker: UInt8(ascii: "$"), UInt64(bytes.count), to: &body)
        body.append(contentsOf: bytes)
        body.append(13)
        body.append(10)
        argumentCount += 1
    }

    /// Appends an integer argument in decimal without building a String.
    public mutating func append(_ value: Int64) {
        let digits = Self.decimalDigitCount(value.magnitude) + (value < 0 ? 1 : 0)
        Self.appendLine(marker: UInt8(ascii: "$"), UInt64(digits), to: &body)
        Self.appendLine(marker: value < 0 ? UInt8(ascii: "-") : nil, value.magnitude, to: &body)
        argumentCount += 1
    }

    /// The arguments as sent, for diagnostics and tests.
    public var arguments: [[UInt8]] {
        var arguments: [[UInt8]] = []
        var index = body.startIndex
        while index < body.endIndex {
            var length = 0
            index += 1  // "$"
            while body[index] != UInt8(ascii: "\r") {
                length = length * 10 + Int(body[index] - UInt8(ascii: "0"))
                index += 1
            }
            index += 2
            arguments.append(Array(body[index..<(index + length)]))
            index += length + 2
        }
        return arguments
    }

    /// Writes `*<count>\r\n` and the arguments: the complete RESP form of the command.
    func write(to buffer: inout [UInt8]) {
        Self.appendLine(marker: UInt8(ascii: "*"), UInt64(argumentCount), to: &buffer)
        buffer.append(contentsOf: body)
    }

    /// This `EVALSHA <sha> ...` (or `FCALL <function> ...`) command as `EVAL <source> ...`, the
    /// same arguments after the SHA (or function name).
    func evalFallback() -> RedisCommand {
        var fallback = RedisCommand("EVAL")
        fallback.append(script?.source ?? "")
        for argument in arguments.dropFirst(2) { fallback.append(bytes: argument) }
        return fallback
    }

    /// This `FCALL <function> ...` command as `EVALSHA <sha> ...` of its script, the same
    /// arguments after the function name: for a connection whose Redis refuses the library.
    func evalSHAFallback() -> RedisCommand {
        var fallback = RedisCommand("EVALSHA")
        fallback.script = script?.withoutLibrary
        fallback.append(script?.sha1 ?? "")
        for argument in arguments.dropFirst(2) { fallback.append(bytes: argument) }
        return fallback
    }

    public var description: String { name }

    private static func decimalDigitCount(_ value: UInt64) -> Int {
        var count = 1
        var rest = value / 10
        while rest > 0 {
            count += 1
            rest /= 10
        }
        return count
    }

    /// Appends `<marker><decimal value>\r\n`, formatted on the stack and appended in one call:
    /// this runs for every argument of every command, so it avoids per-byte appends.
    private static func appendLine(marker: UInt8?, _ value: UInt64, to buffer: inout [UInt8]) {
        var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: marker, 20 digits, CRLF
        withUnsafeMutableBytes(of: &scratch) { bytes in
            var start = bytes.count - 2
            bytes[start] = 13
            bytes[start + 1] = 10
            var rest = value
            repeat {
                start -= 1
                bytes[start] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            if let marker {
                start -= 1
                bytes[start] = marker
            }
            buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...]))
        }
    }
}

/// One argument of a ``RedisCommand``: text, raw bytes or an integer sent in decimal.
public enum RedisArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case string(String)
    case bytes([UInt8])
    case integer(Int64)

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
}
