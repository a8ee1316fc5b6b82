import FerryRedis

/// Ferry's Lua scripts by the SHA1 that `EVALSHA` names them with: Redis's slowlog and
/// `MONITOR` show a script call only by its SHA1, and a benchmark that says where Redis spent
/// its time must name the script (`ferry bench worker`'s per-script breakdown).
public enum ScriptNames {
    private static let bySHA1: [String: String] = Dictionary(
        EmbeddedLuaScripts.all.map { (RedisScript(name: $0.name, source: $0.text).sha1, $0.name) },
        uniquingKeysWith: { first, _ in first })

    /// The name of the script whose SHA1 is `sha1` (`ack`, `start_batch`); nil for a script
    /// this build of Ferry does not have.
    public static func name(ofSHA1 sha1: String) -> String? { bySHA1[sha1.lowercased()] }
}
