/// The Lua scripts a producer in another language runs to publish as Ferry's publisher does,
/// exactly as this build embeds them (shared parts included): `ferry script NAME` prints them
/// for `SCRIPT LOAD` (ops/lua/README.md).
public enum ProducerScripts {
    /// Each script's name and source: `publish` (once per idempotency key), `publish_priority`
    /// (to a priority lane), `schedule` (for later delivery).
    public static let all: KeyValuePairs<String, String> = [
        "publish": EmbeddedLuaScripts.publish, "publish_priority": EmbeddedLuaScripts.publish_priority,
        "schedule": EmbeddedLuaScripts.schedule,
    ]

    /// The source of the script called `name`; nil for a name not in ``all``.
    public static func source(named name: String) -> String? { all.first { $0.key == name }?.value }
}
