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
        // The fields in one array, each ranked by where it came from so that a later source
        // wins a name (the event's metadata over the handler's over ts, level and event), then
        // sorted by name and rank: no dictionary lookups and no search per field, and names cut
        // from their `ferry.` prefix in UTF-8, not by `Character` (both showed in a profile).
        var fields: [LogField] = []
        fields.reserveCapacity(3 + (event.metadata?.count ?? 0) + metadata.count)
        fields.append(LogField(name: "ts", value: Date().rfc3339, rank: 0))
        fields.append(LogField(name: "level", value: event.level.rawValue, rank: 0))
        fields.append(LogField(name: "event", value: event.message.description, rank: 0))
        for (key, value) in metadata { fields.append(LogField(key: key, value: value, rank: 1)) }
        for (key, value) in event.metadata ?? [:] { fields.append(LogField(key: key, value: value, rank: 2)) }
        fields.sort { $0.precedes($1) }
        var line: [UInt8] = []
        line.reserveCapacity(512)
        // Of fields with one name, the last (highest rank) is written.
        let members = fields.indices.lazy
            .filter { $0 + 1 == fields.count || !fields[$0 + 1].hasName(of: fields[$0]) }
            .map { (key: fields[$0].name, value: fields[$0].value) }
        JSONText.appendObject(members, integersAsNumbers: true, to: &line)
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

/// One field of a log line: its name (a metadata key without its `ferry.` prefix), its value as
/// text, and the rank of where it came from (a higher rank wins a name).
private struct LogField {
    let name: Substring
    let value: String
    let rank: Int
    /// The name's first eight bytes, big-endian, zero-padded: names compare as integers, and as
    /// strings only when these are equal (`Substring` comparison led a profile of a logging worker).
    let order: UInt64

    init(name: Substring, value: String, rank: Int) {
        self.name = name
        self.value = value
        self.rank = rank
        var name = name
        self.order = name.withUTF8 { bytes in
            var order: UInt64 = 0
            for at in 0..<8 { order = order << 8 | UInt64(at < bytes.count ? bytes[at] : 0) }
            return order
        }
    }

    init(key: String, value: Logger.MetadataValue, rank: Int) {
        var key = key
        let prefixed = key.withUTF8 { $0.starts(with: "ferry.".utf8) }
        let name = prefixed ? Substring(key.utf8.dropFirst(6)) : Substring(key)
        let text: String
        if case .string(let string) = value { text = string } else { text = value.description }
        self.init(name: name, value: text, rank: rank)
    }

    /// Whether this field sorts before `other`: by name in UTF-8 byte order, then by rank.
    func precedes(_ other: LogField) -> Bool {
        if order != other.order { return order < other.order }
        if !hasName(of: other) { return name.utf8.lexicographicallyPrecedes(other.name.utf8) }
        return rank < other.rank
    }

    /// Whether `other` has this field's name, byte for byte.
    func hasName(of other: LogField) -> Bool {
        let count = name.utf8.count
        return order == other.order && count == other.name.utf8.count
            && (count <= 8 || name.utf8.elementsEqual(other.name.utf8))
    }
}
