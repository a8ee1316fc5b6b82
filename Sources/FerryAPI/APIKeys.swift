import Crypto
import Ferry
import FerryRedis
import Foundation

/// The API keys `ferry serve` accepts, kept in Redis (`ferry:api-keys`, a hash: key id → its
/// record as JSON) so every `ferry serve` process behind a load balancer knows the same keys and
/// a revoked key stops working at the next request.
///
/// A key is shown once, when it is created: `ferry_<id>_<secret>`, with a 16-hex-digit id and a
/// 64-hex-digit secret. Redis holds only the secret's SHA-256; a request's secret is hashed and
/// compared in constant time. A secret of 256 random bits needs no slow hash: nothing can be
/// guessed from its SHA-256.
public struct APIKeys: Sendable {
    /// What a key may do.
    public enum Scope: String, Sendable, Hashable, Codable, CaseIterable {
        /// Publish jobs and start workflows.
        case publish
        /// Read queues, jobs, dead letters and workflows.
        case read
        /// Cancel and retry jobs, and everything `publish` and `read` may.
        case admin
    }

    /// A key as Redis keeps it.
    public struct Key: Sendable, Hashable, Codable {
        /// Its id: the part of the token before the secret, for listing and revoking.
        public var id: String
        /// Who or what it is for.
        public var name: String
        /// What it may do.
        public var scopes: [Scope]
        /// The queues it may see; nil for every queue.
        public var queues: [String]?
        /// When it was created, in milliseconds since the epoch.
        public var createdAt: Int64
        /// The secret's SHA-256 in hex.
        var secretSHA256: String

        enum CodingKeys: String, CodingKey {
            case id, name, scopes, queues
            case createdAt = "created_at"
            case secretSHA256 = "secret_sha256"
        }
    }

    /// The hash that holds every key. Not a queue's key: keys span queues.
    public static let redisKey = "ferry:api-keys"

    private let connection: RedisConnection

    /// Keys kept through `connection`.
    public init(connection: RedisConnection) { self.connection = connection }

    /// Creates a key and returns it with its token, the only time the token is known.
    ///
    /// - Throws: ``FerryError`` `invalidInput` for an empty name or no scope.
    public func create(
        name: String, scopes: [Scope], queues: [String]? = nil
    ) async throws(FerryError) -> (
        key: Key, token: String
    ) {
        guard !name.isEmpty else { throw FerryError(.invalidInput, "an API key needs a name; say whom it is for") }
        guard !scopes.isEmpty else {
            throw FerryError(.invalidInput, "an API key needs at least one scope: publish, read or admin")
        }
        for queue in queues ?? [] { _ = try QueueName(queue) }
        let id = Self.randomHex(bytes: 8)
        let secret = Self.randomHex(bytes: 32)
        let key = Key(
            id: id, name: name, scopes: scopes, queues: queues, createdAt: Date().millisecondsSince1970,
            secretSHA256: Self.sha256(secret))
        let record = (try? JSONEncoder().encode(key)).map { Array($0) } ?? []
        try await send(RedisCommand("HSET", [.string(Self.redisKey), .string(id), .bytes(record)]))
        return (key, "ferry_\(id)_\(secret)")
    }

    /// Every key, by name.
    public func list() async throws(FerryError) -> [Key] {
        let flat = try await send(RedisCommand("HGETALL", [.string(Self.redisKey)])).array ?? []
        var keys: [Key] = []
        var index = 1
        while index < flat.count {
            if let bytes = flat[index].bytes, let key = try? JSONDecoder().decode(Key.self, from: Data(bytes)) {
                keys.append(key)
            }
            index += 2
        }
        return keys.sorted { ($0.name, $0.id) < ($1.name, $1.id) }
    }

    /// Revokes a key: the next request with it is refused. Returns whether there was one.
    public func revoke(id: String) async throws(FerryError) -> Bool {
        try await send(RedisCommand("HDEL", [.string(Self.redisKey), .string(id)])).integer == 1
    }

    /// The key a bearer token names, if the token is one of them.
    func authenticate(token: String) async throws(FerryError) -> Key? {
        let parts = token.split(separator: "_", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "ferry", parts[1].count == 16, parts[2].count == 64 else { return nil }
        guard let bytes = try await send(RedisCommand("HGET", [.string(Self.redisKey), .string(String(parts[1]))])).bytes,
            let key = try? JSONDecoder().decode(Key.self, from: Data(bytes))
        else { return nil }
        let presented = Array(Self.sha256(String(parts[2])).utf8)
        let expected = Array(key.secretSHA256.utf8)
        guard presented.count == expected.count else { return nil }
        // Constant time: every byte is compared whatever the first difference.
        return zip(presented, expected).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0 ? key : nil
    }

    /// `bytes` bytes from the system's secure generator, as lowercase hex: key ids and
    /// secrets, dashboard sessions and CSRF tokens.
    static func randomHex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) }.hexText
    }

    static func sha256(_ text: String) -> String {
        SHA256.hash(data: Array(text.utf8)).hexText
    }

    @discardableResult
    private func send(_ command: RedisCommand) async throws(FerryError) -> RedisReply {
        do {
            return try await connection.send(command)
        } catch {
            throw FerryError(error)
        }
    }
}
