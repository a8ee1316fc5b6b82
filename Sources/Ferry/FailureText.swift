/// Shortens a failure's text for the places that keep it (the dead-letter entry, the job's
/// `last_error`, webhook events, log lines) by keeping its end: a handler's error is almost
/// always its last line, after pages of progress output.
public enum FailureText {
    /// How much of a failure the dead-letter entry, the status and events keep.
    public static let storedLimit = 4096
    /// How much of a failure one log line carries.
    public static let loggedLimit = 300

    /// `text` when it has at most `limit` characters; otherwise `…` and its last `limit - 1`.
    public static func keepingEnd(_ text: String, limit: Int = storedLimit) -> String {
        guard text.count > limit else { return text }
        return "…" + text.suffix(max(limit - 1, 0))
    }
}
