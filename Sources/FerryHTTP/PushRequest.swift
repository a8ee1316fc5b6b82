import Ferry
import Foundation

/// Turns a job into the body and headers of a push request, in either format (docs/push.md).
struct PushRequestBuilder: Sendable {
    let endpoint: PushEndpoint
    let signer: RequestSigner?

    /// The JSON body of the `wrapped` format: a Pub/Sub push request's shape.
    struct Envelope: Encodable {
        struct Message: Encodable {
            let data: String
            let attributes: [String: String]
            let messageId: String
            let publishTime: String
            let deliveryAttempt: Int
            let jobId: String
            let type: String
        }
        let message: Message
        let subscription: String
    }

    func request(for job: Job) throws -> CurlHTTPClient.Request {
        // RFC 3339 UTC with milliseconds, as Pub/Sub writes publishTime.
        let publishTime =
            (job.message.publishedAt ?? Date(millisecondsSince1970: StreamEntry.milliseconds(ofID: job.entryID) ?? 0))
            .rfc3339
        var headers: [String] = []
        let body: [UInt8]
        switch endpoint.format {
        case .wrapped:
            let envelope = Envelope(
                message: .init(
                    data: Data(job.data).base64EncodedString(), attributes: job.attributes, messageId: job.entryID,
                    publishTime: publishTime, deliveryAttempt: job.deliveryAttempt, jobId: job.id, type: job.type),
                subscription: "\(job.queue)/\(job.group)")
            body = Array(try Self.encoder.encode(envelope))
            headers.append("Content-Type: application/json")
        case .raw:
            body = job.data
            let attributes = try JSONSerialization.data(withJSONObject: job.attributes, options: [.sortedKeys])
            headers += [
                "Content-Type: application/octet-stream",
                "Ferry-Job-Id: \(Self.headerValue(job.id))",
                "Ferry-Job-Type: \(Self.headerValue(job.type))",
                "Ferry-Message-Id: \(job.entryID)",
                "Ferry-Publish-Time: \(publishTime)",
                "Ferry-Delivery-Attempt: \(job.deliveryAttempt)",
                "Ferry-Subscription: \(Self.headerValue("\(job.queue)/\(job.group)"))",
                "Ferry-Attributes: \(Self.headerValue(String(decoding: attributes, as: UTF8.self)))",
            ]
        }
        if let traceparent = job.message.traceparent {
            headers.append("traceparent: \(Self.headerValue(traceparent))")
        }
        let userNames = Set(endpoint.headers.map { $0.prefix { $0 != ":" }.lowercased() })
        headers.removeAll { userNames.contains($0.prefix { $0 != ":" }.lowercased()) }
        headers += endpoint.headers
        if let signer { headers += signer.headers(body: body) }
        return CurlHTTPClient.Request(
            url: endpoint.url, headers: headers, body: body, timeout: endpoint.timeout, connectTimeout: endpoint.connectTimeout,
            maxResponseBytes: endpoint.maxResponseBytes)
    }

    /// One encoder for every request: building one per request showed in profiles.
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// Producers write ids, types and attributes freely; a header value must be one line of
    /// visible ASCII. Anything else (CR, LF, control bytes, non-ASCII, `%`) is percent-encoded.
    static func headerValue(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            if byte >= 0x20 && byte < 0x7f && byte != UInt8(ascii: "%") {
                result.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                result += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            }
        }
        return result
    }
}
