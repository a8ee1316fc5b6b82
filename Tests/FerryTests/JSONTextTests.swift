import Ferry
import Foundation
import Testing

@Suite("JSON written by hand")
struct JSONTextTests {
    @Test(
        "a string is quoted and escaped as RFC 8259 asks, whether or not it needs escapes, and reads back the same",
        arguments: ["plain text", "", "a \"quoted\" \\ path/x", "line\nbreak\ttab\r\u{01}\u{1f}", "naïve ☃ 日本"])
    func stringsRoundTrip(text: String) throws {
        var json: [UInt8] = []
        JSONText.appendString(text, to: &json)
        let read = try JSONSerialization.jsonObject(with: Data(json), options: .fragmentsAllowed) as? String
        #expect(read == text)
        #expect(json.allSatisfy { $0 >= 0x20 }, "no raw control character")
    }

    @Test("an object's fields keep the order given; integers become numbers on request; a dictionary is written sorted")
    func objects() {
        var json: [UInt8] = []
        JSONText.appendObject([(key: "z", value: "007"), (key: "a", value: "x")], integersAsNumbers: true, to: &json)
        #expect(String(decoding: json, as: UTF8.self) == #"{"z":7,"a":"x"}"#)
        json = []
        JSONText.appendObject(["z": "1", "a": "b\"c"], to: &json)
        #expect(String(decoding: json, as: UTF8.self) == #"{"a":"b\"c","z":"1"}"#)
    }
}
