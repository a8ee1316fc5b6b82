import Foundation
import Logging
import Testing

@testable import FerryCLI

@Suite("JSON log lines")
struct JSONLogHandlerTests {
    @Test(
        "a line is one JSON object, keys sorted and cut from their ferry. prefix, the event's metadata over the logger's, integers as numbers, text escaped"
    )
    func oneLine() throws {
        let path = FileManager.default.temporaryDirectory.appending(path: "ferry-log-\(UUID().uuidString)").path()
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let output = try #require(FileHandle(forWritingAtPath: path))
        var handler = JSONLogHandler(logLevel: .info, output: output)
        handler[metadataKey: "ferry.queue"] = "emails"
        handler[metadataKey: "ferry.job_id"] = "from-the-logger"
        handler[metadataKey: "trace.traceparent"] = "00-abc-01"
        handler[metadataKey: "ferry.level"] = "not the level"
        handler[metadataKey: "a\u{0}"] = "a name that differs from the next only past its end"
        handler[metadataKey: "a"] = "another field"
        handler.log(
            event: LogEvent(
                level: .info, message: "job_completed",
                metadata: [
                    "ferry.job_id": "from-the-event", "ferry.latency_ms": "007", "ferry.attempt": "-2",
                    "note": "a \"quoted\" \\ line\nnext\u{01} naïve ☃", "ferry.ratio": "+1.5",
                ], source: "test", file: #fileID, function: #function, line: #line))
        try output.close()
        let line = try String(contentsOfFile: path, encoding: .utf8)
        let ts = try #require(line.firstMatch(of: /"ts":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"/)?.1, "\(line)")
        #expect(
            line
                == #"{"a":"another field","a\u0000":"a name that differs from the next only past its end","attempt":-2,"event":"job_completed","job_id":"from-the-event","latency_ms":7,"level":"not the level","#
                + #""note":"a \"quoted\" \\ line\nnext\u0001 naïve ☃","queue":"emails","ratio":"+1.5","#
                + #""trace.traceparent":"00-abc-01","ts":"\#(ts)"}"# + "\n")
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        #expect(object?["note"] as? String == "a \"quoted\" \\ line\nnext\u{01} naïve ☃")
    }
}
