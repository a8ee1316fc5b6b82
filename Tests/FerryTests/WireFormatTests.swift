import Ferry
import FerryRedis
import Foundation
import Testing

@Suite("Wire format v1: decoding what any producer wrote")
struct WireFormatTests {
    private func fields(_ pairs: [(String, String)]) -> [JobField] {
        pairs.map { JobField($0.0, $0.1) }
    }

    @Test("the redis-cli minimum, type and data, is a valid job; without data the payload is empty")
    func minimalEntries() throws {
        let job = try JobMessage(decoding: fields([("type", "send"), ("data", #"{"to":"a@example.com"}"#)]))
        #expect(job.type == "send")
        #expect(job.data == Array(#"{"to":"a@example.com"}"#.utf8))
        #expect(job.jobID == nil)
        let empty = try JobMessage(decoding: fields([("type", "ping")]))
        #expect(empty.data.isEmpty)
    }

    @Test(
        "a message is a value: a copy changed in any field, or in place in its payload, attributes or other fields, leaves the original as it was; equality and hashing compare fields"
    )
    func valueSemantics() throws {
        let original = try JobMessage(
            decoding: fields([
                ("type", "export"), ("data", "x"), ("job_id", "j-1"), ("attr.tenant", "acme"), ("custom", "kept"),
            ]))
        let snapshot = (original.type, original.data, original.jobID, original.attributes, original.otherFields)
        var copy = original
        #expect(copy == original)
        copy.data.append(UInt8(ascii: "y"))  // in place, through the copy's own box
        copy.attributes["region"] = "eu"
        copy.otherFields.append(JobField("more", "1"))
        copy.type = "import"
        copy.jobID = nil
        copy.idempotencyKey = "k"
        copy.key = "user-1"
        copy.orderingKey = "o"
        copy.priority = .high
        copy.maxAttempts = 3
        copy.timeout = .seconds(1)
        copy.backoff = .seconds(2)
        copy.delay = .seconds(3)
        copy.deliverAt = Date(timeIntervalSince1970: 5)
        copy.publishedAt = Date(timeIntervalSince1970: 6)
        copy.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        #expect((original.type, original.data, original.jobID) == (snapshot.0, snapshot.1, snapshot.2))
        #expect(original.attributes == snapshot.3 && original.otherFields == snapshot.4)
        #expect(
            original.idempotencyKey == nil && original.key == nil && original.orderingKey == nil && original.priority == nil
                && original.maxAttempts == nil && original.timeout == nil && original.backoff == nil
                && original.delay == nil && original.deliverAt == nil && original.publishedAt == nil
                && original.traceparent == nil)
        #expect(copy.data == Array("xy".utf8) && copy.attributes == ["tenant": "acme", "region": "eu"])
        #expect(copy != original)
        // Two messages made apart with the same fields are equal and hash alike; one field apart, not.
        let twin = try JobMessage(
            decoding: fields([
                ("type", "export"), ("data", "x"), ("job_id", "j-1"), ("attr.tenant", "acme"), ("custom", "kept"),
            ]))
        #expect(twin == original && twin.hashValue == original.hashValue)
        #expect(Set([original, twin, copy]).count == 2)
        var apart = twin
        apart.delay = .seconds(1)
        #expect(apart != twin)
    }

    @Test("every known field is read, and unknown fields are kept in order")
    func allFields() throws {
        let job = try JobMessage(
            decoding: fields([
                ("type", "export"), ("data", "x"), ("job_id", "j-1"), ("idempotency_key", "k-1"),
                ("attr.tenant", "acme"), ("attr.region", "eu"), ("published_at", "1700000000123"),
                ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                ("max_attempts", "7"), ("timeout_ms", "2500"), ("v", "1"), ("custom", "kept"), ("x-trace", "also"),
            ]))
        #expect(job.jobID == "j-1")
        #expect(job.idempotencyKey == "k-1")
        #expect(job.attributes == ["tenant": "acme", "region": "eu"])
        #expect(job.publishedAt == Date(timeIntervalSince1970: 1_700_000_000.123))
        #expect(job.traceparent?.hasPrefix("00-4bf9") == true)
        #expect(job.maxAttempts == 7)
        #expect(job.timeout == .milliseconds(2500))
        #expect(job.otherFields == [JobField("custom", "kept"), JobField("x-trace", "also")])
    }

    static let malformed: [([(String, String)], String, String)] = [
        ([("data", "x")], "type", "missing"),
        ([("type", ""), ("data", "x")], "type", "empty"),
        ([("type", "a"), ("v", "2")], "v", "unsupported format version"),
        ([("type", "a"), ("max_attempts", "0")], "max_attempts", "positive integer"),
        ([("type", "a"), ("max_attempts", "-3")], "max_attempts", "positive integer"),
        ([("type", "a"), ("max_attempts", "+3")], "max_attempts", "positive integer"),
        ([("type", "a"), ("timeout_ms", "1.5")], "timeout_ms", "positive integer"),
        ([("type", "a"), ("timeout_ms", "")], "timeout_ms", "positive integer"),
        ([("type", "a"), ("type", "b")], "type", "more than once"),
        ([("type", "a"), ("data", "1"), ("data", "2")], "data", "more than once"),
        ([("type", "a"), ("job_id", "1"), ("job_id", "2")], "job_id", "more than once"),
        ([("type", "a"), ("v", "1"), ("v", "1")], "v", "more than once"),
        (
            [("type", "a"), ("data_ref", "s3"), ("data_sha256", String(repeating: "a", count: 64)), ("data_size", "9")],
            "data_ref", "write redis"
        ),
        ([("type", "a"), ("data_ref", "redis"), ("data_size", "9")], "data_ref", "go together"),
        ([("type", "a"), ("data_ref", "redis"), ("data_sha256", "ABC"), ("data_size", "9")], "data_sha256", "64 lower-case hex"),
        (
            [
                ("type", "a"), ("data", "x"), ("data_ref", "redis"), ("data_sha256", String(repeating: "a", count: 64)),
                ("data_size", "9"),
            ], "data", "leave data out"
        ),
        (
            [("type", "a"), ("data_ref", "redis"), ("data_sha256", String(repeating: "a", count: 64)), ("data_size", "2000000")],
            "data_size", "over the limit"
        ),
        (
            [("type", "a"), ("data_ref", "workflow"), ("data_sha256", String(repeating: "a", count: 64)), ("data_size", "9")],
            "data_ref", "no workflow's step"
        ),
    ]

    @Test("an entry that breaks the format is refused, naming the field", arguments: malformed)
    func malformedEntries(pairs: [(String, String)], field: String, problem: String) {
        #expect {
            try JobMessage(decoding: fields(pairs))
        } throws: { error in
            guard let error = error as? WireFormatError else { return false }
            return error.field == field && error.description.contains(problem)
        }
    }

    @Test("a type that is not UTF-8 is refused")
    func nonUTF8Type() {
        #expect(throws: WireFormatError(field: "type", problem: "the value is not valid UTF-8")) {
            try JobMessage(decoding: [JobField(name: Array("type".utf8), value: [0xFF, 0xFE])])
        }
    }

    @Test("data of exactly the limit is accepted and one byte more is not")
    func payloadLimit() throws {
        let limit = WireFormat.defaultMaxPayloadBytes
        let atLimit = [JobField("type", "a"), JobField(name: Array("data".utf8), value: [UInt8](repeating: 1, count: limit))]
        #expect(try JobMessage(decoding: atLimit).data.count == limit)
        let over = [JobField("type", "a"), JobField(name: Array("data".utf8), value: [UInt8](repeating: 1, count: limit + 1))]
        #expect(throws: WireFormatError.self) { try JobMessage(decoding: over) }
    }

    @Test("encoding then decoding gives the same job back, binary payload included")
    func roundTrip() throws {
        var job = JobMessage(
            type: "t", data: [0, 255, 10, 13, 0xC3], jobID: "id", idempotencyKey: "k", attributes: ["b": "2", "a": "1"],
            publishedAt: Date(timeIntervalSince1970: 1_700_000_000.5), traceparent: "tp", maxAttempts: 3,
            timeout: .seconds(2), otherFields: [JobField("extra", "kept")])
        let encoded = job.encodedFields().map { pair -> JobField in
            JobField(name: bytes(pair.name), value: bytes(pair.value))
        }
        #expect(encoded.first?.name == Array("type".utf8))
        #expect(encoded.last == JobField("v", "1"))
        let decoded = try JobMessage(decoding: encoded)
        job.publishedAt = Date(timeIntervalSince1970: 1_700_000_000.5)
        #expect(decoded == job)
    }
}

func bytes(_ argument: RedisArgument) -> [UInt8] {
    switch argument {
    case .string(let text): return Array(text.utf8)
    case .bytes(let bytes): return bytes
    case .integer(let value): return Array(String(value).utf8)
    }
}

@Suite("Times as the wire format and every view write them")
struct TimeFormatTests {
    @Test("RFC 3339 with milliseconds, UTC: the date and time Foundation gives, the milliseconds exact")
    func rfc3339() throws {
        var generator = SystemRandomNumberGenerator()
        let wholeSeconds = Date.ISO8601FormatStyle()
        let samples: [Int64] =
            [0, 1, 999, 951_782_400_000, 1_700_000_000_123, 4_102_444_799_999, 253_402_300_799_999]
            + (0..<2000).map { _ in Int64.random(in: 0...4_102_444_800_000, using: &generator) }
        for milliseconds in samples {
            let text = Date(millisecondsSince1970: milliseconds).rfc3339
            // Whole seconds are exact in a Double, so Foundation's formatter is a fair reference.
            let seconds = wholeSeconds.format(Date(timeIntervalSince1970: Double(milliseconds / 1000)))
            #expect(text == seconds.dropLast() + String(format: ".%03dZ", Int(milliseconds % 1000)), "\(milliseconds)")
        }
    }

    @Test("a millisecond count survives the trip through Date, though a Double cannot hold most exactly")
    func millisecondsRoundTrip() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<10_000 {
            let milliseconds = Int64.random(in: 0...4_102_444_800_000, using: &generator)
            #expect(Date(millisecondsSince1970: milliseconds).millisecondsSince1970 == milliseconds)
        }
    }
}
