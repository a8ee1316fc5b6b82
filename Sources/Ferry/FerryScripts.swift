import FerryRedis

/// Ferry's Lua scripts as Ferry calls them: each a function of one Redis function library
/// (`ferry_<version>`, every `Scripts/*.lua`), so the prelude the scripts share is run once when
/// Redis loads the library instead of on every call (docs/design.md, "Scripts as a function
/// library"). The scripts' own texts stay what producers in other languages send with `EVAL`.
public enum FerryScripts {
    /// Every script of this build as one library, loaded by the first call that finds it missing.
    public static let library = RedisFunctionLibrary(
        family: "ferry", template: EmbeddedLuaScripts.functionLibrary, placeholder: "FERRY_LIBRARY_VERSION")

    /// The script `name` (its text `source`, for the `EVAL` fallback), called as its function.
    static func script(_ name: String, _ source: String) -> RedisScript {
        RedisScript(name: name, source: source, library: library)
    }

    private static let bySHA1: [String: String] = Dictionary(
        EmbeddedLuaScripts.all.map { (RedisScript(name: $0.name, source: $0.text).sha1, $0.name) },
        uniquingKeysWith: { first, _ in first })

    /// The name of the script whose SHA1 is `sha1` (`ack`, `start_batch`); nil for a script
    /// this build of Ferry does not have. Redis's slowlog and `MONITOR` show an `EVALSHA` call
    /// only by its SHA1, and a benchmark that says where Redis spent its time must name it.
    public static func name(ofSHA1 sha1: String) -> String? { bySHA1[sha1.lowercased()] }

    /// The name of the script a Ferry function calls (`ferry_ack_1a2b3c4d5e6f` gives `ack`), of
    /// this release's library or another's; nil for a function of no Ferry library.
    public static func name(ofFunction function: String) -> String? { library.scriptName(ofFunction: function) }
}
