import FerryRedis
import Foundation
import Logging
import Synchronization

/// Keeps the messages a logger was given, so a test can check what a worker said (and did not).
final class LogRecord: Sendable {
    private let lines = Mutex<[String]>([])
    private let lineMetadata = Mutex<[(message: String, metadata: [String: String])]>([])
    /// A message whose first logging holds the logging task for a while, as a loaded machine
    /// might: what widens a moment between two steps of the worker for a test.
    private let pause: (message: String, duration: Duration)?
    private let paused = Mutex(false)

    /// Records every message; with `pausing`, the first time that message is logged blocks its
    /// task for `duration` before returning.
    init(pausing message: String? = nil, for duration: Duration = .zero) {
        pause = message.map { ($0, duration) }
    }

    /// A logger at `level` whose messages land here.
    func logger(level: Logger.Level = .info) -> Logger {
        var logger = Logger(label: "test") { _ in RecordingLogHandler(record: self) }
        logger.logLevel = level
        return logger
    }

    var messages: [String] { lines.withLock { $0 } }

    /// Each line's message with its metadata (the logger's and the line's), as text.
    var entries: [(message: String, metadata: [String: String])] { lineMetadata.withLock { $0 } }

    fileprivate func append(_ message: String, metadata: [String: String]) {
        lines.withLock { $0.append(message) }
        lineMetadata.withLock { $0.append((message, metadata)) }
        if let pause, pause.message == message,
            paused.withLock({ first in
                defer { first = true }; return !first
            })
        {
            usleep(UInt32(pause.duration.milliseconds * 1000))
        }
    }
}

private struct RecordingLogHandler: LogHandler {
    let record: LogRecord
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        record.append(event.message.description, metadata: merged.mapValues(\.description))
    }
}
