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
    private let output: FileHandle
    /// One line at a time, whichever handler writes it.
    private static let writing = Mutex(())

    init(logLevel: Logger.Level, output: FileHandle = .standardOutput) {
        self.logLevel = logLevel
        self.output = output
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Written by hand, keys sorted: with `JSONSerialization` (and Foundation's date formatting)
    /// a worker logging at info, two lines per job, ran at a tenth of its speed without logs
    /// (`ferry bench worker --log-format json`).
    func log(event: LogEvent) {
        var fields: [String: String] = [
            "ts": Date().rfc3339, "level": event.level.rawValue, "event": event.message.description,
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) {
            fields[key.hasPrefix("ferry.") ? String(key.dropFirst("ferry.".count)) : key] = value.description
        }
        var line: [UInt8] = []
        line.reserveCapacity(512)
        JSONText.appendObject(fields, integersAsNumbers: true, to: &line)
        line.append(UInt8(ascii: "\n"))
        Self.writing.withLock { _ in output.writeBestEffort(Data(line)) }
    }
}
