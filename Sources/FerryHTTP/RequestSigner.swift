import Crypto
import Foundation

/// Signs requests so a handler can check they come from Ferry and refuse replays: the scheme of
/// Stripe and GitHub webhooks.
///
/// `Ferry-Timestamp` carries Unix seconds; `Ferry-Signature` is `v1=` and the hex HMAC-SHA256,
/// keyed with the shared secret, of the timestamp, a `.`, and the exact body bytes. A handler
/// recomputes it, compares in constant time, and refuses timestamps older than a few minutes.
/// docs/push.md shows the check in Python and Node.
public struct RequestSigner: Sendable {
    /// The header with the signing time, in Unix seconds.
    public static let timestampHeader = "Ferry-Timestamp"
    /// The header with `v1=` and the hex HMAC-SHA256.
    public static let signatureHeader = "Ferry-Signature"

    private let key: SymmetricKey

    /// `secret` is shared with the receiver; any length (32 random bytes is plenty).
    public init(secret: [UInt8]) {
        key = SymmetricKey(data: secret)
    }

    /// The two header lines to add to a request with this body.
    public func headers(body: [UInt8], at date: Date = Date()) -> [String] {
        let timestamp = String(Int64(date.timeIntervalSince1970))
        return [
            "\(Self.timestampHeader): \(timestamp)", "\(Self.signatureHeader): v1=\(signature(body: body, timestamp: timestamp))",
        ]
    }

    func signature(body: [UInt8], timestamp: String) -> String {
        var hmac = HMAC<SHA256>(key: key)
        hmac.update(data: Array(timestamp.utf8) + [UInt8(ascii: ".")])
        hmac.update(data: body)
        return hmac.finalize().map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
