import Crypto

/// A Lua script run with `EVALSHA`, falling back to `EVAL` when Redis answers `NOSCRIPT`; or,
/// when it belongs to a ``RedisFunctionLibrary``, run as that library's function with `FCALL`.
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
    /// The library holding this script as a function, called with `FCALL`; nil for a script
    /// sent with `EVALSHA`.
    public private(set) var library: RedisFunctionLibrary?
    /// The name of this script's function in its library (`ferry_ack_1a2b3c4d5e6f`), made once.
    public private(set) var functionName: String?

    /// Computes the SHA1 once; nothing is sent to Redis until the script runs. With a
    /// `library`, calls go to its function for `name` (the library must register one).
    public init(name: String, source: String, library: RedisFunctionLibrary? = nil) {
        self.name = name
        self.source = source
        self.sha1 = RedisFunctionLibrary.sha1(of: source)
        self.library = library
        self.functionName = library?.functionName(name)
    }

    /// The same script sent with `EVALSHA` (its SHA1 kept, not computed again): for a
    /// connection whose Redis refuses its library.
    var withoutLibrary: RedisScript {
        var script = self
        script.library = nil
        script.functionName = nil
        return script
    }

    /// The `EVALSHA` (or `FCALL`) command for one call, to send alone or inside a pipeline.
    public func command(keys: [RedisArgument], arguments: [RedisArgument]) -> RedisCommand {
        var command =
            if let functionName {
                RedisCommand("FCALL", [.string(functionName), .integer(Int64(keys.count))] + keys + arguments)
            } else {
                RedisCommand("EVALSHA", [.string(sha1), .integer(Int64(keys.count))] + keys + arguments)
            }
        command.script = self
        return command
    }

    public var description: String { "script \(name) (\(sha1.prefix(12)))" }
}

/// A Redis 7 function library: scripts loaded once (`FUNCTION LOAD`) and called by name
/// (`FCALL`), so the code they share is run once at load instead of on every call.
///
/// An `EVALSHA` script re-runs its whole text on each call: a shared prelude of helper
/// functions costs every call the making of its closures (Ferry's: about 3 µs of Redis's thread
/// a call in a busy run and 10-25 µs in a quiet one, against 2-4 µs for an `FCALL`). A library
/// makes them once. Its name carries its version (`<family>_<12 hex digits of its code's SHA1>`)
/// and so do its functions' names, so workers of two releases each call their own code during
/// a rolling upgrade. A connection loads the library when Redis answers that a function is
/// missing (a restart without persistence, a new cluster node, a first call) and keeps at most
/// ``keptVersions`` libraries of the family, deleting others (a release still calling a deleted
/// one loads it again). Where the library cannot be loaded (an ACL without `FUNCTION LOAD`), the
/// call goes as `EVAL` of the script's own text, as it would without a library.
///
/// See <https://redis.io/docs/latest/develop/programmability/functions-intro/>.
public struct RedisFunctionLibrary: Sendable, Hashable {
    /// The libraries of one software share this prefix (`ferry`).
    public let family: String
    /// The version: the first 12 hex digits of the SHA1 of the library's template.
    public let version: String
    /// `<family>_<version>`, as `FUNCTION LIST` shows it.
    public let name: String
    /// The library's code, for `FUNCTION LOAD`.
    public let code: String

    /// How many libraries of one family a connection that loads one leaves in Redis: enough for
    /// the releases a rolling upgrade runs side by side, few enough that Redis's memory for
    /// functions stays bounded however many releases it has seen.
    public static let keptVersions = 4

    /// Makes the library from `template`, whose `placeholder` stands for the version everywhere
    /// it appears (its name line, its functions' names).
    public init(family: String, template: String, placeholder: String) {
        self.family = family
        version = String(Self.sha1(of: template).prefix(12))
        name = "\(family)_\(version)"
        code = template.replacing(placeholder, with: version)
    }

    /// The name the library gives the function of the script `script`.
    public func functionName(_ script: String) -> String { "\(family)_\(script)_\(version)" }

    /// The script name in a function name of this family (`ferry_ack_1a2b…` gives `ack`), of any version.
    public func scriptName(ofFunction function: String) -> String? {
        guard function.hasPrefix(family + "_"), let last = function.lastIndex(of: "_") else { return nil }
        let start = function.index(function.startIndex, offsetBy: family.count + 1)
        return start < last ? String(function[start..<last]) : nil
    }

    /// Libraries compare by name: the name carries the code's hash.
    public static func == (left: Self, right: Self) -> Bool { left.name == right.name }
    /// Hashes the name only: the code is long, and the name stands for it.
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }

    /// The lowercase hex SHA1 of `text`'s UTF-8 bytes.
    static func sha1(of text: String) -> String {
        Insecure.SHA1.hash(data: Array(text.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
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
