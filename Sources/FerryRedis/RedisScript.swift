import Crypto

/// A Lua script run with `EVALSHA`, falling back to `EVAL` when Redis answers `NOSCRIPT`.
///
/// Scripts make multi-key steps atomic (publish with dedup, dead-lettering). Sending the SHA1
/// instead of the source keeps each call small; the script cache is empty after a restart or
/// `SCRIPT FLUSH`, and the `EVAL` fallback refills it. Every key a script touches must be passed
/// in `keys`, so the script stays legal on Redis Cluster.
///
/// See <https://redis.io/docs/latest/commands/evalsha/>.
public struct RedisScript: Sendable, Hashable, CustomStringConvertible {
    /// A short name for logs and errors (`publish`).
    public let name: String
    /// The Lua source, sent with `EVAL` when Redis answers `NOSCRIPT`.
    public let source: String
    /// The lowercase hex SHA1 of ``source``, as `SCRIPT LOAD` returns it.
    public let sha1: String

    /// Computes the SHA1 once; nothing is sent to Redis until the script runs.
    public init(name: String, source: String) {
        self.name = name
        self.source = source
        self.sha1 = Insecure.SHA1.hash(data: Array(source.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// The `EVALSHA` command for one call, to send alone or inside a pipeline.
    public func command(keys: [RedisArgument], arguments: [RedisArgument]) -> RedisCommand {
        var command = RedisCommand("EVALSHA", [.string(sha1), .integer(Int64(keys.count))] + keys + arguments)
        command.script = self
        return command
    }

    public var description: String { "script \(name) (\(sha1.prefix(12)))" }
}

extension RedisConnection {
    /// Runs a script and returns its reply.
    ///
    /// - Throws: ``RedisError``; an error raised by the script (`redis.error_reply`) keeps its prefix.
    @discardableResult
    public func run(_ script: RedisScript, keys: [RedisArgument], arguments: [RedisArgument]) throws(RedisError) -> RedisReply {
        try send(script.command(keys: keys, arguments: arguments))
    }
}

extension RedisConnection {
    /// Every key matching `pattern` on this connection's node, found with `SCAN` (never `KEYS`,
    /// which blocks Redis while it walks the whole key space), as raw bytes; only keys of
    /// `type` (`stream`, `zset`, …) when given.
    public func scanKeys(matching pattern: String, type: String? = nil) throws(RedisError) -> [[UInt8]] {
        var found: [[UInt8]] = []
        var cursor = "0"
        repeat {
            var arguments: [RedisArgument] = [.string(cursor), "MATCH", .string(pattern), "COUNT", 1000]
            if let type { arguments += ["TYPE", .string(type)] }
            let reply = try send(RedisCommand("SCAN", arguments))
            guard let parts = reply.array, parts.count == 2 else { break }
            cursor = parts[0].string ?? "0"
            found += parts[1].array?.compactMap(\.bytes) ?? []
        } while cursor != "0"
        return found
    }
}
