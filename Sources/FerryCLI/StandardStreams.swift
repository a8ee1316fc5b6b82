import Foundation

extension FileHandle {
    /// Writes without ever trapping. Foundation's non-throwing `write(_:)` traps on an error, and
    /// with SIGPIPE ignored (see FerryRedis) a reader that went away (`ferry worker | head`, a log
    /// collector restarting) is an `EPIPE` error: the output is lost, the work goes on.
    func writeBestEffort(_ data: Data) {
        try? write(contentsOf: data)
    }

    func writeBestEffort(_ text: String) {
        writeBestEffort(Data(text.utf8))
    }
}
