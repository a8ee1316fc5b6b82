/// A validated queue name: 1 to 128 characters from `A-Z a-z 0-9 . _ -`.
///
/// The name becomes part of every Redis key of the queue (`ferry:{emails}:jobs`) inside a Redis
/// Cluster hash tag, so a brace, colon or space in it would break the key layout or the slot
/// choice. Anything else is refused up front with an error that says which rule failed.
public struct QueueName: Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String

    /// - Throws: ``FerryError`` with code ``FerryError/Code/invalidInput``.
    public init(_ rawValue: String) throws(FerryError) {
        guard !rawValue.isEmpty, rawValue.utf8.count <= 128 else {
            throw FerryError(
                .invalidInput,
                "invalid queue name: it must be 1 to 128 characters long (got \(rawValue.utf8.count))")
        }
        guard rawValue.utf8.allSatisfy(QueueName.isAllowed) else {
            throw FerryError(
                .invalidInput,
                "invalid queue name \"\(rawValue.debugEscaped)\": use only letters, digits, '.', '_' and '-'")
        }
        self.rawValue = rawValue
    }

    /// For names written in code; a literal that breaks the rules is a programming error.
    public init(stringLiteral value: String) {
        do { try self.init(value) } catch { preconditionFailure(error.message) }
    }

    public var description: String { rawValue }

    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }
}

extension String {
    /// The string with control characters escaped and cut to 64 characters, for echoing
    /// producer-supplied text in an error message on one readable line.
    var debugEscaped: String {
        let escaped = unicodeScalars.map { $0.properties.generalCategory == .control ? $0.escaped(asASCII: true) : String($0) }
            .joined()
        return escaped.count > 64 ? escaped.prefix(64) + "…" : escaped
    }
}
