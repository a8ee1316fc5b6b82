import Ferry
import Foundation

/// Turns a job into the body and headers of a push request, in either format (docs/push.md).
struct PushRequestBuilder: Sendable {
    let endpoint: PushEndpoint
    let signer: RequestSigner?
    /// Lower-cased names of the `--push-header` headers, which replace Ferry's own of the same
    /// name: worked out once, not per request.
    private let userHeaderNames: Set<String>

    init(endpoint: PushEndpoint, signer: RequestSigner?) {
        self.endpoint = endpoint
        self.signer = signer
        self.userHeaderNames = Set(endpoint.headers.map { $0.prefix { $0 != ":" }.lowercased() })
    }

    /// The JSON body of the `wrapped` format: a Pub/Sub push request exactly as Google sends it
    /// (`message.messageId` and `message.message_id`, `publishTime` and `publish_time`,
    /// `deliveryAttempt` at the top level, `subscription` as `projects/P/subscriptions/S`), so a
    /// handler written for Pub/Sub reads it unchanged; plus Ferry's own `jobId`, `type` and
    /// `deliveryAttempt` inside `message`. Keys sorted:
    /// `{"deliveryAttempt":N,"message":{"attributes":{…},"data":"<base64>","deliveryAttempt":N,
    /// "jobId":…,"messageId":…,"message_id":…,"publishTime":…,"publish_time":…,"type":…},
    /// "subscription":"projects/…/subscriptions/…"}`.
    ///
    /// Written by hand rather than with `JSONEncoder`: the encoder took a fifth of the worker's
    /// CPU per pushed job (`ferry bench push` under `perf`), for one fixed shape of strings.
    static func envelope(for job: Job, publishTime: String, subscription: String) -> [UInt8] {
        var json: [UInt8] = []
        json.reserveCapacity(job.data.count * 4 / 3 + 320)
        let attempt = String(job.deliveryAttempt).utf8
        json.append(contentsOf: #"{"deliveryAttempt":"#.utf8)
        json.append(contentsOf: attempt)
        json.append(contentsOf: #","message":{"attributes":"#.utf8)
        JSONText.appendObject(job.attributes, to: &json)
        json.append(contentsOf: #","data":""#.utf8)
        json.append(contentsOf: Data(job.data).base64EncodedString().utf8)
        json.append(contentsOf: #"","deliveryAttempt":"#.utf8)
        json.append(contentsOf: attempt)
        for (key, value) in [
            ("jobId", job.id), ("messageId", job.entryID), ("message_id", job.entryID), ("publishTime", publishTime),
            ("publish_time", publishTime), ("type", job.type),
        ] {
            json.append(contentsOf: #",""#.utf8)
            json.append(contentsOf: key.utf8)
            json.append(contentsOf: #"":"#.utf8)
            JSONText.appendString(value, to: &json)
        }
        json.append(contentsOf: #"},"subscription":"#.utf8)
        JSONText.appendString(subscription, to: &json)
        if let workflow = job.workflow {
            // A workflow's step: its workflow, its step, and its earlier steps' results (base64).
            json.append(contentsOf: #","workflow":{"id":"#.utf8)
            JSONText.appendString(workflow.id, to: &json)
            json.append(contentsOf: #","results":"#.utf8)
            JSONText.appendObject(workflow.results.mapValues { Data($0).base64EncodedString() }, to: &json)
            json.append(contentsOf: #","step":"#.utf8)
            JSONText.appendString(workflow.step, to: &json)
            json.append(UInt8(ascii: "}"))
        }
        json.append(UInt8(ascii: "}"))
        return json
    }

    func request(for job: Job) -> CurlHTTPClient.Request {
        // RFC 3339 UTC with milliseconds, as Pub/Sub writes publishTime.
        let publishTime =
            (job.message.publishedAt ?? Date(millisecondsSince1970: StreamEntry.milliseconds(ofID: job.entryID) ?? 0))
            .rfc3339
        var headers: [String] = []
        let body: [UInt8]
        let subscription = endpoint.subscription ?? PushEndpoint.defaultSubscription(queue: job.queue, group: job.group)
        switch endpoint.format {
        case .wrapped:
            body = Self.envelope(for: job, publishTime: publishTime, subscription: subscription)
            headers.append("Content-Type: application/json")
        case .raw:
            body = job.data
            var attributes: [UInt8] = []
            JSONText.appendObject(job.attributes, to: &attributes)
            headers += [
                "Content-Type: application/octet-stream",
                "Ferry-Job-Id: \(Self.headerValue(job.id))",
                "Ferry-Job-Type: \(Self.headerValue(job.type))",
                "Ferry-Message-Id: \(job.entryID)",
                "Ferry-Publish-Time: \(publishTime)",
                "Ferry-Delivery-Attempt: \(job.deliveryAttempt)",
                "Ferry-Subscription: \(Self.headerValue(subscription))",
                "Ferry-Attributes: \(Self.headerValue(String(decoding: attributes, as: UTF8.self)))",
            ]
        }
        if let traceparent = job.message.traceparent {
            headers.append("traceparent: \(Self.headerValue(traceparent))")
        }
        if let workflow = job.workflow {
            headers += [
                "Ferry-Workflow-Id: \(Self.headerValue(workflow.id))", "Ferry-Workflow-Step: \(Self.headerValue(workflow.step))",
            ]
        }
        headers.removeAll { userHeaderNames.contains($0.prefix { $0 != ":" }.lowercased()) }
        headers += endpoint.headers
        if let signer { headers += signer.headers(body: body) }
        return CurlHTTPClient.Request(
            url: endpoint.url, headers: headers, body: body, timeout: endpoint.timeout, connectTimeout: endpoint.connectTimeout,
            maxResponseBytes: endpoint.maxResponseBytes)
    }

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
