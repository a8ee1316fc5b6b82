import FerryRedis
import Foundation

/// A job as the wire format carries it: what a producer publishes and what a worker reads.
///
/// Only ``type`` is required. `redis-cli XADD 'ferry:{emails}:jobs' '*' type send data '{}'` is a
/// complete job; Ferry's own publisher adds `published_at` and `v`. Fields Ferry does not know are
/// kept in ``otherFields`` and written back unchanged, so a redriven job loses nothing.
public struct JobMessage: Sendable, Hashable {
    /// The fields, in one copy-on-write box: a job is handed from the read to its task, its
    /// handler, its outcome and its log lines, and a copy of the box is one reference count where
    /// a copy of the fields was one for each of its strings, arrays and dictionaries.
    private var storage: Storage

    /// Every stored field, in one value: its equality and hashing are the message's.
    private struct Fields: Hashable, Sendable {
        var type: String
        var data: [UInt8]
        var dataReference: PayloadReference? = nil
        var jobID: String? = nil
        var idempotencyKey: String? = nil
        var key: String? = nil
        var orderingKey: String? = nil
        var priority: JobPriority? = nil
        var workflowID: String? = nil
        var step: String? = nil
        var attributes: [String: String]
        var publishedAt: Date? = nil
        var traceparent: String? = nil
        var maxAttempts: Int? = nil
        var timeout: Duration? = nil
        var deliverAt: Date? = nil
        var backoff: Duration? = nil
        var delay: Duration? = nil
        var otherFields: [JobField]
    }

    /// Written only while uniquely referenced (``uniqueStorage()``): a shared box is never
    /// changed, so handing one to another task is safe.
    private final class Storage: @unchecked Sendable {
        var fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    /// The box, copied first if another message shares it.
    private mutating func uniqueStorage() -> Storage {
        if !isKnownUniquelyReferenced(&storage) { storage = Storage(storage.fields) }
        return storage
    }

    /// Two messages are equal when every field is: the same box, or boxes with equal fields.
    public static func == (lhs: JobMessage, rhs: JobMessage) -> Bool {
        lhs.storage === rhs.storage || lhs.storage.fields == rhs.storage.fields
    }

    /// Hashes every field, as equality compares them.
    public func hash(into hasher: inout Hasher) { hasher.combine(storage.fields) }

    /// Routes the job to a handler. Non-empty UTF-8.
    public var type: String {
        get { storage.fields.type }
        set { uniqueStorage().fields.type = newValue }
    }
    /// The payload: JSON by convention, but any bytes, possibly empty.
    public var data: [UInt8] {
        get { storage.fields.data }
        _modify { yield &uniqueStorage().fields.data }
        set { uniqueStorage().fields.data = newValue }
    }
    /// Where the payload is instead, when it was stored by reference (`data_ref`): a worker
    /// fetches and checks it into ``data`` before the handler runs.
    public var dataReference: PayloadReference? {
        get { storage.fields.dataReference }
        set { uniqueStorage().fields.dataReference = newValue }
    }
    /// A stable id chosen by the producer; when nil the stream entry ID serves as the job id.
    public var jobID: String? {
        get { storage.fields.jobID }
        set { uniqueStorage().fields.jobID = newValue }
    }
    /// Publishing twice with the same key within the dedup window adds one entry; a worker runs
    /// a key that already completed at most once.
    public var idempotencyKey: String? {
        get { storage.fields.idempotencyKey }
        set { uniqueStorage().fields.idempotencyKey = newValue }
    }
    /// The job's flow-control key (`key`: a user id, a tenant): a per-key limit counts the jobs
    /// of each key apart ("2 running jobs per user"). Non-empty UTF-8.
    public var key: String? {
        get { storage.fields.key }
        set { uniqueStorage().fields.key = newValue }
    }
    /// Pub/Sub's ordering key (`ordering_key`): jobs with the same one run one at a time, in
    /// publish order, in each consumer group; a retry keeps the key's place. Non-empty UTF-8.
    public var orderingKey: String? {
        get { storage.fields.orderingKey }
        set { uniqueStorage().fields.orderingKey = newValue }
    }
    /// How urgent the job is (`priority`); nil is normal. ``Publisher`` writes the job to its
    /// priority's lane, read before less urgent ones (``JobPriority``).
    public var priority: JobPriority? {
        get { storage.fields.priority }
        set { uniqueStorage().fields.priority = newValue }
    }
    /// The workflow whose step this job runs (`workflow`), and the step (`step`): both or none.
    /// Written by the workflow scripts (``Workflows``), not by producers.
    public var workflowStep: (workflow: String, step: String)? {
        guard let workflow = workflowID, let step else { return nil }
        return (workflow, step)
    }
    /// The `workflow` field: the workflow whose step this job runs.
    public var workflowID: String? {
        get { storage.fields.workflowID }
        set { uniqueStorage().fields.workflowID = newValue }
    }
    /// The `step` field: the workflow step this job runs.
    public var step: String? {
        get { storage.fields.step }
        set { uniqueStorage().fields.step = newValue }
    }
    /// Free-form string attributes, like Pub/Sub message attributes (`attr.<name>` fields).
    public var attributes: [String: String] {
        get { storage.fields.attributes }
        _modify { yield &uniqueStorage().fields.attributes }
        set { uniqueStorage().fields.attributes = newValue }
    }
    /// When the producer published the job (`published_at`, milliseconds since the epoch).
    public var publishedAt: Date? {
        get { storage.fields.publishedAt }
        set { uniqueStorage().fields.publishedAt = newValue }
    }
    /// W3C trace context, carried through to handlers.
    public var traceparent: String? {
        get { storage.fields.traceparent }
        set { uniqueStorage().fields.traceparent = newValue }
    }
    /// Overrides the worker's maximum delivery attempts for this job.
    public var maxAttempts: Int? {
        get { storage.fields.maxAttempts }
        set { uniqueStorage().fields.maxAttempts = newValue }
    }
    /// Overrides the worker's job timeout for this job (`timeout_ms`).
    public var timeout: Duration? {
        get { storage.fields.timeout }
        set { uniqueStorage().fields.timeout = newValue }
    }
    /// When the job is to run (`deliver_at`): a worker that reads it earlier parks it until then,
    /// without running it or spending an attempt. ``Publisher`` keeps such a job out of the
    /// stream until it is due instead (``Publisher/schedule(_:_:)``).
    public var deliverAt: Date? {
        get { storage.fields.deliverAt }
        set { uniqueStorage().fields.deliverAt = newValue }
    }
    /// The base of this job's retry backoff (`backoff_ms`), in place of the worker's minimum.
    public var backoff: Duration? {
        get { storage.fields.backoff }
        set { uniqueStorage().fields.backoff = newValue }
    }
    /// Deliver the job this long after Redis receives it: ``Publisher`` schedules it
    /// (``Publisher/schedule(_:_:)`` with `.after`). Not a wire field: the due index holds the time.
    public var delay: Duration? {
        get { storage.fields.delay }
        set { uniqueStorage().fields.delay = newValue }
    }
    /// Fields outside the format, and known fields whose value Ferry could not use, as given.
    public var otherFields: [JobField] {
        get { storage.fields.otherFields }
        _modify { yield &uniqueStorage().fields.otherFields }
        set { uniqueStorage().fields.otherFields = newValue }
    }

    /// A job to publish. Nothing is checked here; ``Publisher`` validates before it writes.
    public init(
        type: String, data: [UInt8] = [], jobID: String? = nil, idempotencyKey: String? = nil,
        attributes: [String: String] = [:], publishedAt: Date? = nil, traceparent: String? = nil,
        maxAttempts: Int? = nil, timeout: Duration? = nil, deliverAt: Date? = nil, backoff: Duration? = nil,
        key: String? = nil, orderingKey: String? = nil, priority: JobPriority? = nil, otherFields: [JobField] = []
    ) {
        storage = Storage(
            Fields(
                type: type, data: data, jobID: jobID, idempotencyKey: idempotencyKey, key: key, orderingKey: orderingKey,
                priority: priority, attributes: attributes, publishedAt: publishedAt, traceparent: traceparent,
                maxAttempts: maxAttempts, timeout: timeout, deliverAt: deliverAt, backoff: backoff, otherFields: otherFields))
    }

    /// Convenience for text payloads such as JSON.
    public init(
        type: String, data: String, jobID: String? = nil, idempotencyKey: String? = nil, attributes: [String: String] = [:]
    ) {
        self.init(type: type, data: Array(data.utf8), jobID: jobID, idempotencyKey: idempotencyKey, attributes: attributes)
    }
}

/// One field of a stream entry, name and value as raw bytes.
public struct JobField: Sendable, Hashable {
    /// Bytes, not a string: a producer in another language may write any.
    public var name: [UInt8]
    /// Bytes, as stored in the entry.
    public var value: [UInt8]

    /// A field as raw bytes, for payloads and names that are not UTF-8.
    public init(name: [UInt8], value: [UInt8]) {
        self.name = name
        self.value = value
    }

    /// A text field, stored as its UTF-8 bytes.
    public init(_ name: String, _ value: String) {
        self.init(name: Array(name.utf8), value: Array(value.utf8))
    }

    var nameText: String { String(decoding: name, as: UTF8.self) }
}

// MARK: - Validation and encoding

extension JobMessage {
    /// Checks what a publisher must refuse before writing anything.
    ///
    /// - Throws: ``FerryError`` with code ``FerryError/Code/invalidInput`` naming the problem.
    public func validateForPublishing(maxPayloadBytes: Int) throws(FerryError) {
        func invalid(_ message: String) -> FerryError { FerryError(.invalidInput, message) }
        if type.isEmpty { throw invalid("the job type is empty; give it a type such as --type send-email") }
        if data.count > maxPayloadBytes {
            throw invalid(
                "the payload is \(data.count) bytes, over the limit of \(maxPayloadBytes) bytes; store large content elsewhere (object storage) and publish a reference to it"
            )
        }
        if jobID == "" { throw invalid("the job id is empty; omit it to use the stream entry ID") }
        if idempotencyKey == "" { throw invalid("the idempotency key is empty; omit it to publish without deduplication") }
        if key == "" { throw invalid("the job's key is empty; omit it for a job no per-key limit counts") }
        if orderingKey == "" { throw invalid("the ordering key is empty; omit it for a job that may run in any order") }
        if orderingKey != nil, let priority, priority != .normal {
            throw invalid(
                "a job with an ordering key runs when its key's turn comes, so it cannot have the priority \(priority); omit one of them"
            )
        }
        if let maxAttempts, maxAttempts < 1 { throw invalid("max attempts must be a positive integer (got \(maxAttempts))") }
        if let timeout, timeout.milliseconds < 1 { throw invalid("the job timeout must be at least 1 ms") }
        if let backoff, backoff.milliseconds < 1 { throw invalid("the job's backoff must be at least 1 ms") }
        if let deliverAt, deliverAt.millisecondsSince1970 < 0 { throw invalid("the delivery time is before 1970") }
        if attributes.keys.contains("") { throw invalid("an attribute name is empty; write attributes as name=value") }
    }

    /// The entry's fields as XADD arguments, in a fixed order that reads well in `XRANGE`:
    /// type, data, ids, times, overrides, attributes (sorted by name), unknown fields, `v`.
    public func encodedFields() -> [RedisArgumentPair] {
        var fields: [RedisArgumentPair] = []
        encode { fields.append(($0, $1)) }
        return fields
    }

    /// Appends the entry's fields to an `XADD` (or publish script) command, in the order of
    /// ``encodedFields()``, without building intermediate arrays: this is the publish hot path.
    ///
    /// - Parameter defaultPublishedAt: written as `published_at` when ``publishedAt`` is nil.
    public func appendFields(to command: inout RedisCommand, defaultPublishedAt: Date? = nil) {
        encode(defaultPublishedAt: defaultPublishedAt) { name, value in
            command.append(name)
            command.append(value)
        }
    }

    private func encode(defaultPublishedAt: Date? = nil, _ field: (RedisArgument, RedisArgument) -> Void) {
        typealias F = WireFormat.Field
        field(.string(F.type), .string(type))
        if let dataReference {
            field(.string(F.dataReference), .string(dataReference.place.rawValue))
            field(.string(F.dataSHA256), .string(dataReference.sha256))
            field(.string(F.dataSize), .integer(Int64(dataReference.size)))
        } else {
            field(.string(F.data), .bytes(data))
        }
        if let jobID { field(.string(F.jobID), .string(jobID)) }
        if let idempotencyKey { field(.string(F.idempotencyKey), .string(idempotencyKey)) }
        if let key { field(.string(F.key), .string(key)) }
        if let orderingKey { field(.string(F.orderingKey), .string(orderingKey)) }
        if let priority { field(.string(F.priority), .string(priority.description)) }
        if let workflowID { field(.string(F.workflow), .string(workflowID)) }
        if let step { field(.string(F.step), .string(step)) }
        if let publishedAt = publishedAt ?? defaultPublishedAt {
            field(.string(F.publishedAt), .integer(publishedAt.millisecondsSince1970))
        }
        if let traceparent { field(.string(F.traceparent), .string(traceparent)) }
        if let maxAttempts { field(.string(F.maxAttempts), .integer(Int64(maxAttempts))) }
        if let timeout { field(.string(F.timeoutMilliseconds), .integer(timeout.milliseconds)) }
        if let deliverAt { field(.string(F.deliverAt), .integer(deliverAt.millisecondsSince1970)) }
        if let backoff { field(.string(F.backoffMilliseconds), .integer(backoff.milliseconds)) }
        if !attributes.isEmpty {
            for name in attributes.keys.sorted() {
                field(.string(F.attributePrefix + name), .string(attributes[name]!))
            }
        }
        for other in otherFields where other.nameText != F.version {
            field(.bytes(other.name), .bytes(other.value))
        }
        field(.string(F.version), .string(WireFormat.version))
    }
}

/// A field name and value ready to append to a command.
public typealias RedisArgumentPair = (name: RedisArgument, value: RedisArgument)

// MARK: - Decoding

extension JobMessage {
    /// Reads a stream entry's fields strictly, the way a worker must before running a job.
    ///
    /// Accepts anything a producer may legally write (no `data`, no `v`, unknown fields) and
    /// refuses what breaks the format: a missing, empty or non-UTF-8 `type`; a `v` other than
    /// `1`; `max_attempts`, `timeout_ms`, `backoff_ms` or `deliver_at` that is not a positive
    /// integer; a reserved field given
    /// twice; `data` over `maxPayloadBytes`; a `job_id`, `idempotency_key`, `key`
    /// or `ordering_key` that is not UTF-8; a `priority` other than high, normal, low or 0–9.
    ///
    /// - Throws: ``WireFormatError`` naming the first offending field.
    public init(decoding fields: [JobField], maxPayloadBytes: Int = WireFormat.defaultMaxPayloadBytes) throws(WireFormatError) {
        typealias F = WireFormat.Field
        var seenReserved: Set<String> = []
        var type: String?
        var place: PayloadReference.Place?, sha256: String?, size: Int?
        var message = JobMessage(type: "")

        func text(_ field: JobField, _ name: String) throws(WireFormatError) -> String {
            guard let text = String(validating: field.value, as: UTF8.self) else {
                throw WireFormatError(field: name, problem: "the value is not valid UTF-8")
            }
            return text
        }
        /// An id or key field: UTF-8, and absent when empty.
        func nonEmptyText(_ field: JobField, _ name: String) throws(WireFormatError) -> String? {
            let value = try text(field, name)
            return value.isEmpty ? nil : value
        }
        func positiveInteger(_ field: JobField, _ name: String) throws(WireFormatError) -> Int {
            let digits = field.value
            guard !digits.isEmpty, digits.count <= 18, digits.allSatisfy({ (48...57).contains($0) }),
                let value = Int(String(decoding: digits, as: UTF8.self)), value > 0
            else {
                throw WireFormatError(
                    field: name,
                    problem:
                        "must be a positive integer in decimal digits, got \"\(String(decoding: digits.prefix(40), as: UTF8.self).debugEscaped)\""
                )
            }
            return value
        }

        for field in fields {
            let name = field.nameText
            if F.reserved.contains(name) {
                guard seenReserved.insert(name).inserted else {
                    throw WireFormatError(field: name, problem: "given more than once; each reserved field may appear once")
                }
            }
            switch name {
            case F.type:
                type = try text(field, name)
            case F.data:
                guard field.value.count <= maxPayloadBytes else {
                    throw WireFormatError(
                        field: name, problem: "\(field.value.count) bytes, over the limit of \(maxPayloadBytes) bytes")
                }
                message.data = field.value
            case F.jobID:
                message.jobID = try nonEmptyText(field, name)
            case F.idempotencyKey:
                message.idempotencyKey = try nonEmptyText(field, name)
            case F.key:
                message.key = try nonEmptyText(field, name)
            case F.orderingKey:
                message.orderingKey = try nonEmptyText(field, name)
            case F.dataReference:
                guard let found = PayloadReference.Place(rawValue: String(decoding: field.value, as: UTF8.self)) else {
                    throw WireFormatError(
                        field: name,
                        problem:
                            "\"\(String(decoding: field.value.prefix(40), as: UTF8.self).debugEscaped)\" is not a place this worker reads payloads from; write redis (the payload in ferry:{Q}:payload:<data_sha256>)"
                    )
                }
                place = found
            case F.dataSHA256:
                let hex = try text(field, name)
                guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                    throw WireFormatError(field: name, problem: "must be a SHA-256 in 64 lower-case hex digits")
                }
                sha256 = hex
            case F.dataSize:
                size = try positiveInteger(field, name)
            case F.workflow:
                message.workflowID = try nonEmptyText(field, name)
            case F.step:
                message.step = try nonEmptyText(field, name)
            case F.priority:
                guard let priority = JobPriority(text: String(decoding: field.value, as: UTF8.self)) else {
                    throw WireFormatError(
                        field: name,
                        problem:
                            "must be high, normal, low or a digit 0 (most urgent) to 9, got \"\(String(decoding: field.value.prefix(40), as: UTF8.self).debugEscaped)\""
                    )
                }
                message.priority = priority
            case F.maxAttempts:
                message.maxAttempts = try positiveInteger(field, name)
            case F.timeoutMilliseconds:
                message.timeout = .milliseconds(try positiveInteger(field, name))
            case F.deliverAt:
                message.deliverAt = Date(millisecondsSince1970: Int64(try positiveInteger(field, name)))
            case F.backoffMilliseconds:
                message.backoff = .milliseconds(try positiveInteger(field, name))
            case F.version:
                guard field.value == Array(WireFormat.version.utf8) else {
                    throw WireFormatError(
                        field: name,
                        problem:
                            "unsupported format version \"\(String(decoding: field.value.prefix(20), as: UTF8.self).debugEscaped)\"; this worker reads version \(WireFormat.version)"
                    )
                }
            case F.publishedAt where message.publishedAt == nil:
                if let milliseconds = Int64(String(decoding: field.value, as: UTF8.self)), milliseconds >= 0 {
                    message.publishedAt = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
                } else {
                    message.otherFields.append(field)
                }
            case F.traceparent where message.traceparent == nil:
                if let value = String(validating: field.value, as: UTF8.self) {
                    message.traceparent = value
                } else {
                    message.otherFields.append(field)
                }
            default:
                if name.hasPrefix(F.attributePrefix),
                    let value = String(validating: field.value, as: UTF8.self),
                    case let attribute = String(name.dropFirst(F.attributePrefix.count)),
                    !attribute.isEmpty, message.attributes[attribute] == nil,
                    String(validating: field.name, as: UTF8.self) != nil
                {
                    message.attributes[attribute] = value
                } else {
                    message.otherFields.append(field)
                }
            }
        }
        guard let type else {
            throw WireFormatError(field: F.type, problem: "missing; every job needs a type that routes it to a handler")
        }
        guard !type.isEmpty else {
            throw WireFormatError(field: F.type, problem: "empty; every job needs a type that routes it to a handler")
        }
        message.type = type
        if place != nil || sha256 != nil || size != nil {
            guard let place, let sha256, let size else {
                throw WireFormatError(
                    field: F.dataReference, problem: "data_ref, data_sha256 and data_size go together; one is missing")
            }
            guard message.data.isEmpty else {
                throw WireFormatError(field: F.data, problem: "a job with data_ref carries its payload there; leave data out")
            }
            guard size <= maxPayloadBytes else {
                throw WireFormatError(field: F.dataSize, problem: "\(size) bytes, over the limit of \(maxPayloadBytes) bytes")
            }
            guard place != .workflow || message.workflowID != nil else {
                throw WireFormatError(
                    field: F.dataReference, problem: "workflow names a workflow's input, but the job is no workflow's step")
            }
            message.dataReference = PayloadReference(place: place, sha256: sha256, size: size)
        }
        self = message
    }
}
