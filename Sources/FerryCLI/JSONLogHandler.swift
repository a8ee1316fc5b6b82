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
    /// (`ferry bench worker --log-format json`). The fields go in a small array, not a
    /// dictionary, and the line goes to the file descriptor with one `write`, not through `Data`
    /// and `FileHandle`: a profile of a logging worker had this function at a fifth of its CPU.
    func log(event: LogEvent) {
        // Reserved before the first field: a literal would allocate, and the reservation again.
        var fields: [(key: String, value: String)] = []
        fields.reserveCapacity(3 + (event.metadata?.count ?? 0) + metadata.count)
        fields.append(("ts", Date().rfc3339))
        fields.append(("level", event.level.rawValue))
        fields.append(("event", event.message.description))
        func add(_ key: String, _ value: Logger.MetadataValue) {
            let name = key.hasPrefix("ferry.") ? String(key.dropFirst("ferry.".count)) : key
            let text = value.description
            if let at = fields.firstIndex(where: { $0.key == name }) {
                fields[at].value = text
            } else {
                fields.append((name, text))
            }
        }
        for (key, value) in metadata where event.metadata?[key] == nil { add(key, value) }
        for (key, value) in event.metadata ?? [:] { add(key, value) }
        fields.sort { $0.key < $1.key }
        var line: [UInt8] = []
        line.reserveCapacity(512)
        JSONText.appendObject(fields, integersAsNumbers: true, to: &line)
        line.append(UInt8(ascii: "\n"))
        let descriptor = output.fileDescriptor
        Self.writing.withLock { _ in
            line.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                    if written > 0 {
                        offset += written
                    } else if written < 0 && errno == EINTR {
                        continue
                    } else {
                        return  // best effort: a closed or full output loses the line, never the job
                    }
                }
            }
        }
    }
}
