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

    @Test("a value is a number when it is a decimal integer, written canonically; anything else stays a string")
    func numbersOrStrings() {
        func written(_ value: String) -> String {
            var json: [UInt8] = []
            JSONText.appendNumberOrString(value, to: &json)
            return String(decoding: json, as: UTF8.self)
        }
        #expect(written("007") == "7" && written("-12") == "-12" && written("+5") == "5" && written("-0") == "0")
        #expect(written("1.5") == #""1.5""# && written("12a") == #""12a""# && written("") == #""""#)
        #expect(written("99999999999999999999") == #""99999999999999999999""#, "past Int64: text, not a rounded number")
        var json: [UInt8] = []
        JSONText.appendString("ferry.a\"b".dropFirst(6), to: &json)
        #expect(String(decoding: json, as: UTF8.self) == #""a\"b""#, "a substring is written from its own bytes")
    }
}

@Suite("Hex text")
struct HexTextTests {
    @Test("bytes are written as two lowercase hex digits each, as printf's %02x writes them")
    func hexDigits() {
        #expect([UInt8]([0, 9, 10, 15, 16, 0xa5, 255]).hexText == "00090a0f10a5ff")
        #expect([UInt8]().hexText == "")
        let every = [UInt8](0...255)
        #expect(every.hexText == every.map { String(format: "%02x", $0) }.joined())
    }
}
