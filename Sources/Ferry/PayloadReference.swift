import Crypto
import FerryRedis
import Foundation

/// A payload kept once beside the queue instead of inside each entry (the claim check): the
/// entry carries `data_ref`, `data_sha256` and `data_size` instead of `data`. The worker fetches
/// the bytes and checks their size and SHA-256 before the handler runs; a payload gone or changed
/// dead-letters the job (`payload_missing`, `payload_corrupt`) instead of retrying forever.
///
/// Large payloads cost Redis once: an entry is copied by every read, reclaim, dead letter and
/// redrive, and a workflow's input by every step's job; a reference is a hundred bytes.
public struct PayloadReference: Sendable, Hashable {
    /// Where the bytes are.
    public enum Place: String, Sendable, Hashable {
        /// `ferry:{Q}:payload:<sha256>` (content-addressed: jobs with one payload share it), which
        /// expires ``PayloadReference/defaultTTL`` after it was stored or last delivered.
        case redis
        /// The input of the workflow whose step the job runs: `ferry:{Q}:wf:<id>:payloads`,
        /// field `:input`, which lives as long as the workflow.
        case workflow
    }

    /// Where the bytes are.
    public var place: Place
    /// Their SHA-256, lower-case hex: the key of a `redis` payload, and the check of every one.
    public var sha256: String
    /// Their length.
    public var size: Int

    /// The largest payload kept inside its entry by default (64 KiB): a larger one goes by
    /// reference (``Publisher/Configuration/inlinePayloadLimit``).
    public static let defaultInlineLimit = 65_536
    /// How long a `redis` payload lives after it was stored or last delivered, at least (7 days by
    /// default: each delivery renews it, a scheduled job's adds its delay, a dead letter's keeps
    /// it as long as the dead letter).
    public static let defaultTTL: Duration = .seconds(7 * 86_400)

    /// The reference to `bytes`, kept in `place`.
    public init(of bytes: [UInt8], in place: Place = .redis) {
        self.init(place: place, sha256: Self.sha256(bytes), size: bytes.count)
    }

    /// A reference as an entry carries it.
    public init(place: Place, sha256: String, size: Int) {
        self.place = place
        self.sha256 = sha256
        self.size = size
    }

    /// The SHA-256 of `bytes` in lower-case hex.
    static func sha256(_ bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).hexText
    }

    /// The command that fetches the bytes (renewing a `redis` payload's life by `ttl` when it would
    /// end sooner): one or two replies, the bytes first. `workflow` is the job's workflow id.
    func fetchCommands(_ keys: QueueKeys, workflow: String?, ttl: Duration) -> [RedisCommand] {
        switch place {
        case .redis:
            let key = keys.payload(sha256: sha256)
            return [RedisCommand("GET", [.string(key)]), Self.renew(key, ttl)]
        case .workflow:
            return [RedisCommand("HGET", [.string(keys.workflowPayloads(id: workflow ?? "")), .string(Self.inputField)])]
        }
    }

    /// `PEXPIRE key ttl GT`: longer, never shorter (another job may need the payload longer).
    static func renew(_ key: String, _ ttl: Duration) -> RedisCommand {
        RedisCommand("PEXPIRE", [.string(key), .integer(ttl.milliseconds), "GT"])
    }

    /// The field of `ferry:{Q}:wf:<id>:payloads` that holds a workflow's input (no step name has a `:`).
    static let inputField = ":input"

    /// Checks fetched bytes against the reference: returns them, or throws ``PermanentJobError``
    /// with `payload_missing` (nil: gone) or `payload_corrupt` (another size or SHA-256). `place`
    /// names where they were looked for.
    func verify(_ bytes: [UInt8]?, place described: String) throws(PermanentJobError) -> [UInt8] {
        guard let bytes else {
            throw PermanentJobError(
                "the payload (\(size) bytes, SHA-256 \(sha256)) is gone from \(described): it expired or was deleted; publish the job again",
                errorClass: "payload_missing")
        }
        let found = PayloadReference(of: bytes, in: place)
        guard found == self else {
            throw PermanentJobError(
                "the payload in \(described) is \(found.size) bytes with SHA-256 \(found.sha256), not the \(size) bytes with SHA-256 \(sha256) the job names",
                errorClass: "payload_corrupt")
        }
        return bytes
    }

    /// Where a reference's bytes are, for messages.
    func describe(_ keys: QueueKeys, workflow: String?) -> String {
        switch place {
        case .redis: keys.payload(sha256: sha256)
        case .workflow: "\(keys.workflowPayloads(id: workflow ?? "")) field \(Self.inputField)"
        }
    }

    /// Fetches and checks the payload of `message`.
    ///
    /// - Throws: ``PermanentJobError`` (`payload_missing`, `payload_corrupt`) when it cannot be
    ///   used; a Redis error when Redis fails (the job is retried).
    func fetch(
        for message: JobMessage, _ keys: QueueKeys, ttl: Duration,
        pipeline: ([RedisCommand]) async throws(RedisError) -> [RedisReply]
    ) async throws -> [UInt8] {
        let commands = fetchCommands(keys, workflow: message.workflowID, ttl: ttl)
        let replies = try await pipeline(commands)
        if case .error(let error) = replies[0] { throw RedisError.server(error, command: commands[0].name) }
        return try verify(replies[0].bytes, place: describe(keys, workflow: message.workflowID))
    }

    /// Stores `bytes` as a `redis` payload that lives at least `ttl`: the commands go before the
    /// entry that names them (`SET NX`: a payload already stored is not sent again by Redis to its
    /// replicas; then `PEXPIRE GT`).
    static func store(_ bytes: [UInt8], _ keys: QueueKeys, ttl: Duration) -> (PayloadReference, [RedisCommand]) {
        let reference = PayloadReference(of: bytes)
        let key = keys.payload(sha256: reference.sha256)
        return (
            reference,
            [RedisCommand("SET", [.string(key), .bytes(bytes), "NX", "PX", .integer(ttl.milliseconds)]), renew(key, ttl)]
        )
    }
}
