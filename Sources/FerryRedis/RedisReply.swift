/// One RESP2 reply, copied out of hiredis's `redisReply` before hiredis frees it.
///
/// Bulk strings stay bytes (`[UInt8]`): job payloads may be binary and must round-trip byte for
/// byte. Use ``string`` where text is expected.
public enum RedisReply: Sendable, Hashable {
    /// A simple string such as `OK` or `QUEUED`.
    case status(String)
    /// An error reply inside a pipeline or an array; single commands throw ``RedisError`` instead.
    case error(String)
    case integer(Int64)
    /// A bulk string, binary safe.
    case bulk([UInt8])
    /// A nil bulk string or nil array (`GET` of a missing key, `XREADGROUP` that timed out).
    case null
    case array([RedisReply])

    /// The text of a bulk or status reply, or an integer printed in decimal; nil otherwise or when
    /// the bytes are not UTF-8.
    public var string: String? {
        switch self {
        case .status(let text): return text
        case .bulk(let bytes): return String(validating: bytes, as: UTF8.self)
        case .integer(let value): return String(value)
        default: return nil
        }
    }

    /// The bytes of a bulk or status reply.
    public var bytes: [UInt8]? {
        switch self {
        case .bulk(let bytes): return bytes
        case .status(let text): return Array(text.utf8)
        default: return nil
        }
    }

    /// An integer reply, or a bulk string holding a decimal integer (as `XINFO` fields may be).
    public var integer: Int64? {
        switch self {
        case .integer(let value): return value
        case .bulk, .status: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    /// The elements of an array reply; an empty array for a nil reply.
    public var array: [RedisReply]? {
        switch self {
        case .array(let elements): return elements
        case .null: return []
        default: return nil
        }
    }

    /// A flat array of name, value, name, value … (`HGETALL`, `XINFO`, `ZRANGE … WITHSCORES`) as
    /// pairs, in order; a trailing odd element is left out.
    public var pairs: [(name: RedisReply, value: RedisReply)] {
        let flat = array ?? []
        return stride(from: 0, to: flat.count - 1, by: 2).map { (flat[$0], flat[$0 + 1]) }
    }

    /// A nil reply: a missing key or field, or a `BLOCK` that timed out.
    public var isNull: Bool { self == .null }

    /// The message of an error reply, for code that reads a pipeline's replies one by one.
    public var errorMessage: String? {
        if case .error(let message) = self { message } else { nil }
    }
}
