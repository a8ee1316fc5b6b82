import Ferry
import Foundation
import Logging
import Synchronization

/// One JSON object per line on standard output, for log collectors: `{"ts": ..., "level": ...,
/// "event": "job_completed", "queue": ..., "job_id": ..., ...}`. Metadata keys lose their
/// `ferry.` prefix; integers are written as JSON numbers.
struct JSONLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    private static let output = Mutex(())

    init(logLevel: Logger.Level) {
        self.logLevel = logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [String: Any] = [
            "ts": Self.timestamp(), "level": event.level.rawValue, "event": event.message.description,
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) {
            let name = key.hasPrefix("ferry.") ? String(key.dropFirst("ferry.".count)) : key
            let text = value.description
            fields[name] = Int64(text).map { $0 as Any } ?? text
        }
        guard var line = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return }
        line.append(10)
        Self.output.withLock { _ in FileHandle.standardOutput.writeBestEffort(line) }
    }

    private static func timestamp() -> String {
        Date().rfc3339
    }
}
