/// A Redis command as binary-safe arguments, sent with hiredis's argv API.
///
/// Never a format string: producers control job ids, payloads and keys, and the variadic
/// `redisCommand("%s")` API would misread spaces, NULs and `%`. The arguments are packed back to
/// back in one buffer so appending a pipeline of 10,000 commands costs one allocation per command.
public struct RedisCommand: Sendable, Hashable, CustomStringConvertible {
    private(set) var packed: [UInt8] = []
    private(set) var lengths: [Int] = []

    /// The command's name, for error messages; never its arguments, which may hold secrets.
    public let name: String

    /// The script an `EVALSHA` command runs, so `NOSCRIPT` can fall back to `EVAL`.
    var script: RedisScript?

    /// Starts a command; `name` may hold several words (`"XINFO GROUPS"`), each sent as its own argument.
    public init(_ name: String) {
        self.name = name
        for word in name.split(separator: " ") { append(String(word)) }
    }

    /// Builds a whole command at once: `RedisCommand("XADD", [key, "*", "type", "send"])`.
    public init(_ name: String, _ arguments: [RedisArgument]) {
        self.init(name)
        for argument in arguments { append(argument) }
    }

    public mutating func append(_ argument: RedisArgument) {
        switch argument {
        case .string(let text): append(text)
        case .bytes(let bytes): append(bytes: bytes)
        case .integer(let value): append(String(value))
        }
    }

    public mutating func append(_ text: String) {
        var text = text
        text.withUTF8 { append(bytes: $0) }
    }

    public mutating func append<Bytes: Collection<UInt8>>(bytes: Bytes) {
        packed.append(contentsOf: bytes)
        lengths.append(bytes.count)
    }

    public var argumentCount: Int { lengths.count }

    /// This `EVALSHA <sha> ...` command as `EVAL <source> ...`, the same arguments after the SHA.
    func evalFallback() -> RedisCommand {
        var fallback = RedisCommand("EVAL")
        fallback.append(script?.source ?? "")
        let skipped = lengths[0] + lengths[1]
        var offset = skipped
        for length in lengths.dropFirst(2) {
            fallback.append(bytes: packed[offset..<(offset + length)])
            offset += length
        }
        return fallback
    }

    public var description: String { name }
}

/// One argument of a ``RedisCommand``: text, raw bytes or an integer sent in decimal.
public enum RedisArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case string(String)
    case bytes([UInt8])
    case integer(Int64)

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
}
