import Ferry
import Foundation
import HTTPTypes
import Hummingbird
import OpenAPIHummingbird
import OpenAPIRuntime
import Synchronization

/// A publish request's body as the handlers use it, whichever way it was read: from the
/// generated `NewJob`, or straight from the request's JSON by ``PublishRoute``.
struct PublishBody: Sendable {
    var type: String
    /// The payload's JSON text (`data`), without whitespace: the client's own text when read
    /// straight from the request, keys sorted when decoded by the generated code.
    var data: [UInt8]?
    var dataBase64: String?
    var attributes: [String: String] = [:]
    var jobId: String?
    var key: String?
    var orderingKey: String?
    var maxAttempts: Int?
    var priority: String?
    var timeout: String?
    var delay: String?
    var deliverAt: Date?

    /// The generated body, its `data` written as JSON text.
    init(_ body: Components.Schemas.NewJob) throws {
        type = body._type
        data = try body.data.map(RequestJSON.bytes(of:))
        dataBase64 = body.dataBase64
        attributes = body.attributes?.additionalProperties ?? [:]
        jobId = body.jobId
        key = body.key
        orderingKey = body.orderingKey
        maxAttempts = body.maxAttempts
        priority = body.priority
        timeout = body.timeout
        delay = body.delay
        deliverAt = body.deliverAt
    }

    /// The members ``init(json:)`` reads.
    private static let members = [
        "type", "data", "attributes", "max_attempts", "data_base64", "job_id", "key", "ordering_key", "priority", "timeout",
        "delay",
    ]

    /// The body read straight from its JSON, or nil for anything this reader leaves to the
    /// generated decoder, which answers it as the API document says (a field of the wrong type,
    /// one it does not know or twice, a `null`, `deliver_at`'s date, a number with a fraction
    /// for `max_attempts`, text that is not JSON): a nil here is never an answer of its own, so
    /// both readers answer every body alike. `data` keeps the client's text, checked as JSON.
    init?(json bytes: [UInt8]) {
        var scanner = JSONScanner(bytes)
        var type: String?
        var seen: UInt16 = 0
        guard scanner.take(UInt8(ascii: "{")) else { return nil }
        if !scanner.take(UInt8(ascii: "}")) {
            repeat {
                // A member the envelope does not know, or one given twice, is the generated decoder's.
                guard let name = scanner.string(), scanner.take(UInt8(ascii: ":")),
                    let bit = Self.members.firstIndex(of: name).map({ UInt16(1) << $0 }), seen & bit == 0
                else { return nil }
                seen |= bit
                switch name {
                case "data":
                    var text: [UInt8] = []
                    guard scanner.value(into: &text), !text.elementsEqual("null".utf8) else { return nil }
                    data = text
                case "attributes":
                    guard scanner.take(UInt8(ascii: "{")) else { return nil }
                    if !scanner.take(UInt8(ascii: "}")) {
                        repeat {
                            guard let field = scanner.string(), scanner.take(UInt8(ascii: ":")), let text = scanner.string(),
                                attributes.updateValue(text, forKey: field) == nil
                            else { return nil }
                        } while scanner.take(UInt8(ascii: ","))
                        guard scanner.take(UInt8(ascii: "}")) else { return nil }
                    }
                case "max_attempts":
                    guard let count = scanner.integer() else { return nil }
                    maxAttempts = count
                default:
                    guard let text = scanner.string() else { return nil }
                    switch name {
                    case "type": type = text
                    case "data_base64": dataBase64 = text
                    case "job_id": jobId = text
                    case "key": key = text
                    case "ordering_key": orderingKey = text
                    case "priority": priority = text
                    case "timeout": timeout = text
                    case "delay": delay = text
                    default: return nil
                    }
                }
            } while scanner.take(UInt8(ascii: ","))
            guard scanner.take(UInt8(ascii: "}")) else { return nil }
        }
        guard let type, scanner.isAtEnd() else { return nil }
        self.type = type
    }
}

/// `POST /v1/queues/{queue}/jobs`, the API's busiest route, served without the generated
/// layers where they only cost time: the body is read once by a strict scanner (``JSONScanner``:
/// no `Codable` walk, no object tree, no generic container for `data` to be encoded again) and the answer is
/// written directly, while the same server middlewares run around it (problem answers,
/// authentication and scopes, rate limits, audit) and the same handler code publishes. A
/// request this path does not take (a body ``PublishBody/init(json:)`` leaves alone; not JSON;
/// an `Idempotency-Key` with a percent escape or a comma, which the generated handler decodes)
/// goes to the generated handler, so every answer is the document's. An `Idempotency-Key`'s
/// body check uses the generated body's fingerprint, so the two paths agree on every key.
/// docs/design.md has the figures.
struct PublishRoute: Sendable {
    /// The route in the API document.
    static let path = "/v1/queues/{queue}/jobs"
    /// The handler behind it in the generated server, for the requests this path does not take.
    typealias Generated = @Sendable (HTTPRequest, HTTPBody?, ServerRequestMetadata) async throws -> (HTTPResponse, HTTPBody?)

    let handlers: APIHandlers
    let generated: Generated
    /// The server middlewares around the quick path's publish, built once: a request's own
    /// part (its body and key) reaches the innermost step as ``Call/current``.
    private let chain: Generated

    /// - Parameter middlewares: the server middlewares the generated handler runs in, the first
    ///   outermost.
    init(handlers: APIHandlers, middlewares: [any ServerMiddleware], generated: @escaping Generated) {
        self.handlers = handlers
        self.generated = generated
        let publish: Generated = { _, _, metadata in
            guard let call = Call.current else { throw APIProblem(.internal, "a quick publish ran without its request") }
            return try await call.publish(metadata: metadata, handlers: handlers)
        }
        chain = middlewares.reversed().reduce(publish) { next, middleware in
            { try await middleware.intercept($0, body: $1, metadata: $2, operationID: "publishJob", next: next) }
        }
    }

    /// One request on the quick path: what its publish needs, and the answer's bytes, which the
    /// publish leaves here rather than in an `HTTPBody` that would be collected again.
    private final class Call: Sendable {
        @TaskLocal static var current: Call?

        let body: PublishBody
        let idempotencyKey: String?
        let fingerprint: String
        /// The `Accepted` answer's JSON, once the publish has made it.
        let answer = Mutex<[UInt8]?>(nil)

        init(body: PublishBody, idempotencyKey: String?, fingerprint: String) {
            self.body = body
            self.idempotencyKey = idempotencyKey
            self.fingerprint = fingerprint
        }

        /// The innermost step: publishes the job, answers 202 with no body (the bytes are in
        /// ``answer``) or throws for the problem middleware to answer.
        func publish(metadata: ServerRequestMetadata, handlers: APIHandlers) async throws -> (HTTPResponse, HTTPBody?) {
            let queue = try handlers.queueName(metadata.pathParameters["queue"].map(APIHandlers.percentDecoded) ?? "")
            var job = try APIHandlers.callersKey(APIHandlers.message(from: body))
            if let idempotencyKey {
                job.idempotencyKey = idempotencyKey
                try await handlers.checkSameRequest(fingerprint: fingerprint, idempotencyKey: idempotencyKey, queue: queue)
            }
            let accepted = try await handlers.publish(job, queue: queue)
            var fields = HTTPFields()
            fields.reserveCapacity(3)
            fields.append(HTTPField(name: .contentType, value: "application/json; charset=utf-8"))
            fields.append(HTTPField(name: .location, value: accepted.statusUrl))
            if accepted.duplicate { fields.append(HTTPField(name: .idempotentReplayed, value: "true")) }
            answer.withLock { $0 = PublishRoute.json(accepted) }
            return (HTTPResponse(status: .accepted, headerFields: fields), nil)
        }
    }

    /// Answers a publish to `queue`, the path's segment as the client sent it.
    func respond(to request: Request, queue: Substring) async throws -> Response {
        var request = request
        let bytes = Array(buffer: try await request.collectBody(upTo: .max))
        let metadata = ServerRequestMetadata(pathParameters: ["queue": queue])
        let isJSON = request.headers.value(of: .contentType).map(Self.isJSON) ?? false
        let idempotencyKey = request.headers.value(of: .idempotencyKey)
        guard isJSON, idempotencyKey.map(Self.needsNoDecoding) ?? true, let body = PublishBody(json: bytes),
            let fingerprint = try Self.fingerprint(of: bytes, idempotencyKey: idempotencyKey)
        else {
            let (head, answer) = try await generated(request.head, HTTPBody(bytes), metadata)
            return try await Response(head: head, answer: answer)
        }
        let call = Call(body: body, idempotencyKey: idempotencyKey, fingerprint: fingerprint)
        let (head, answer) = try await Call.$current.withValue(call) { try await chain(request.head, nil, metadata) }
        // The publish's own answer comes without a body, its bytes in the call; every other
        // answer (a problem from a middleware) has its body.
        if answer == nil, let bytes = call.answer.withLock({ $0 }) {
            return Response(status: head.status, headers: head.headerFields, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        return try await Response(head: head, answer: answer)
    }

    /// The body's fingerprint for an `Idempotency-Key`'s check, as the generated handler computes
    /// it (``RequestFingerprints/fingerprint(of:)`` of its `NewJob`, decoded from the same
    /// bytes): "" without a key, nil when the bytes do not decode (the generated handler answers).
    private static func fingerprint(of bytes: [UInt8], idempotencyKey: String?) throws -> String? {
        guard idempotencyKey != nil else { return "" }
        guard let body = try? JSONDecoder().decode(Components.Schemas.NewJob.self, from: Data(bytes)) else { return nil }
        return try RequestFingerprints.fingerprint(of: body)
    }

    /// Whether a `Content-Type` names JSON (`application/json`, in any case, with parameters or
    /// not), compared byte by byte rather than lowercased into a new string.
    static func isJSON(_ contentType: String) -> Bool {
        let expected = "application/json".utf8
        let given = contentType.utf8
        return given.count >= expected.count
            && zip(given, expected).allSatisfy { byte, wanted in
                (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 == wanted : byte == wanted
            }
    }

    /// Whether a header value reads the same undecoded: the generated handler reads an
    /// `Idempotency-Key` as OpenAPI's simple style (percent escapes decoded, commas meaningful),
    /// so a key with either goes to it, and both paths agree on every key.
    private static func needsNoDecoding(_ value: String) -> Bool {
        !value.utf8.contains { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: ",") }
    }

    /// The answer as the document's `Accepted` (a test compares it with the generated encoding).
    static func json(_ accepted: Components.Schemas.Accepted) -> [UInt8] {
        var json: [UInt8] = []
        // Room for the text and a few escapes: one allocation.
        json.reserveCapacity(80 + accepted.jobId.utf8.count + accepted.statusUrl.utf8.count)
        json.append(contentsOf: #"{"job_id":"#.utf8)
        JSONText.appendString(accepted.jobId, to: &json)
        json.append(contentsOf: #","state":"#.utf8)
        JSONText.appendString(accepted.state.rawValue, to: &json)
        json.append(contentsOf: #","status_url":"#.utf8)
        JSONText.appendString(accepted.statusUrl, to: &json)
        json.append(contentsOf: (accepted.duplicate ? #","duplicate":true}"# : #","duplicate":false}"#).utf8)
        return json
    }
}

extension Response {
    /// A generated handler's answer as Hummingbird writes it in one step: a body of known length
    /// (every answer of the API but the events stream) collected into one buffer, so its head,
    /// body and end go to the connection together instead of as three writes, each a hop to the
    /// event loop and a flush. A body of unknown length stays a stream.
    init(head: HTTPResponse, answer: HTTPBody?) async throws {
        let body: ResponseBody
        switch answer.map({ ($0, $0.length) }) {
        case nil: body = ResponseBody(byteBuffer: ByteBuffer())
        case let (answer, .known)?:
            body = ResponseBody(byteBuffer: ByteBuffer(bytes: try await [UInt8](collecting: answer, upTo: .max)))
        case let (answer, .unknown)?: body = ResponseBody(asyncSequence: answer.map { ByteBuffer(bytes: $0) })
        }
        self.init(status: head.status, headers: head.headerFields, body: body)
    }
}

extension HTTPFields {
    /// What `self[name]` is (every value of the field, joined by ", "), without the subscript's
    /// joining into a new string when the field comes once, as a request's headers mostly do.
    func value(of name: HTTPField.Name) -> String? {
        guard let first = firstIndex(where: { $0.name == name }) else { return nil }
        guard !self[index(after: first)...].contains(where: { $0.name == name }) else { return self[name] }
        return self[first].value
    }
}

extension HTTPField.Name {
    /// The request header naming a publish's idempotency key.
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    /// The answer header saying a publish was a replay of an earlier one.
    static let idempotentReplayed = HTTPField.Name("Idempotent-Replayed")!
}

/// The server's routes as the generator registers them, but ``PublishRoute/path``'s `POST`,
/// which is kept for ``PublishRoute`` to call.
final class RoutesButPublish: ServerTransport {
    let router: Router<BasicRequestContext>
    /// The generated handler of the publish route, once `registerHandlers` has run.
    private(set) var publish: PublishRoute.Generated?

    init(router: Router<BasicRequestContext>) { self.router = router }

    func register(
        _ handler: @escaping PublishRoute.Generated, method: HTTPRequest.Method, path: String
    ) throws {
        if method == .post && path == PublishRoute.path {
            publish = handler
            return
        }
        // As swift-openapi-hummingbird registers a handler, but with the answer in one write
        // (``Response/init(head:answer:)``), where its transport streams every body.
        router.on(RouterPath(path), method: method) { request, context in
            let length = request.headers.value(of: .contentLength).flatMap(Int64.init).map(HTTPBody.Length.known) ?? .unknown
            let body = HTTPBody(request.body.map { [UInt8](buffer: $0) }, length: length, iterationBehavior: .single)
            let parameters = [String: Substring](context.parameters.map { (String($0.0), $0.1) }) { first, _ in first }
            let (head, answer) = try await handler(request.head, body, ServerRequestMetadata(pathParameters: parameters))
            return try await Response(head: head, answer: answer)
        }
    }
}
