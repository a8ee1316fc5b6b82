import Ferry
import Foundation

/// Where and how a push subscription delivers jobs: `ferry worker --push URL …`.
public struct PushEndpoint: Sendable {
    /// How a job becomes a request body.
    public enum Format: String, Sendable, CaseIterable {
        /// A JSON body shaped like a Pub/Sub push request (docs/push.md).
        case wrapped
        /// The job's `data` as the body; metadata in `Ferry-*` headers.
        case raw
    }

    /// Where jobs are POSTed: an absolute `http` or `https` URL.
    public var url: String
    /// Extra `Name: value` headers on every request (`Authorization: Bearer …`).
    public var headers: [String]
    /// Signs every request (``RequestSigner``) when set.
    public var secret: [UInt8]?
    /// How a job becomes a request body.
    public var format: Format
    /// Per request; the worker's lease by default.
    public var timeout: Duration
    /// The TCP and TLS handshake alone: an unreachable handler fails fast.
    public var connectTimeout: Duration
    /// How much of a response body is read: enough for an error message.
    public var maxResponseBytes: Int
    /// Statuses that dead-letter a job at once: retrying cannot fix them.
    public var permanentStatuses: Set<Int>
    /// The `subscription` a request names (`projects/P/subscriptions/S`, as Pub/Sub writes it);
    /// nil for ``defaultSubscription(queue:group:)``.
    public var subscription: String?

    /// `projects/ferry/subscriptions/<queue>.<group>`: a Pub/Sub-style name that says which
    /// queue and group (subscription) delivered the job. Characters a subscription ID may not
    /// hold are percent-encoded.
    public static func defaultSubscription(queue: QueueName, group: String) -> String {
        var id = ""
        for byte in "\(queue).\(group)".utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"), UInt8(ascii: "+"):
                id.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                id += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            }
        }
        return "projects/ferry/subscriptions/\(id)"
    }

    /// Pub/Sub push's "do not retry" statuses.
    public static let defaultPermanentStatuses: Set<Int> = [400, 401, 403, 404, 410, 413, 422]

    /// Pub/Sub push's defaults: wrapped body, 30 s per request, its "do not retry" statuses.
    public init(
        url: String, headers: [String] = [], secret: [UInt8]? = nil, format: Format = .wrapped, timeout: Duration = .seconds(30),
        connectTimeout: Duration = .seconds(10), maxResponseBytes: Int = 16 * 1024,
        permanentStatuses: Set<Int> = PushEndpoint.defaultPermanentStatuses
    ) {
        self.url = url
        self.headers = headers
        self.secret = secret
        self.format = format
        self.timeout = timeout
        self.connectTimeout = connectTimeout
        self.maxResponseBytes = maxResponseBytes
        self.permanentStatuses = permanentStatuses
    }

    /// Refuses what would fail every request, before any job is read.
    ///
    /// - Throws: ``FerryError`` with ``FerryError/Code/invalidInput`` naming the bad part.
    public func validate() throws(FerryError) {
        try Self.validateURL(url, purpose: "push")
        for header in headers {
            guard let colon = header.firstIndex(of: ":"), colon != header.startIndex,
                !header[..<colon].contains(where: { $0 == " " || $0 == "\t" })
            else {
                throw FerryError(
                    .invalidInput,
                    "the header \"\(header.debugDescription.dropFirst().dropLast())\" has no name and colon; write it as 'Name: value'"
                )
            }
            guard !header.contains(where: { $0 == "\r" || $0 == "\n" }) else {
                throw FerryError(.invalidInput, "a header must be one line: \(header.prefix(40).debugDescription)")
            }
        }
        guard timeout >= .milliseconds(10), connectTimeout >= .milliseconds(10) else {
            throw FerryError(.invalidInput, "the push timeouts must be at least 10ms")
        }
    }

    /// Accepts absolute http and https URLs with a host; names what is wrong otherwise.
    public static func validateURL(_ text: String, purpose: String) throws(FerryError) {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased() else {
            throw FerryError(
                .invalidInput, "the \(purpose) URL \(text.debugDescription) is not a URL; write it as https://host/path")
        }
        guard scheme == "http" || scheme == "https" else {
            throw FerryError(
                .invalidInput,
                "the \(purpose) URL \(text.debugDescription) has the scheme \"\(scheme)\"; only http and https are supported")
        }
        guard let host = url.host, !host.isEmpty else {
            throw FerryError(
                .invalidInput, "the \(purpose) URL \(text.debugDescription) has no host; write it as https://host/path")
        }
    }
}
