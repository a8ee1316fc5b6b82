import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@testable import FerryAPI

/// `POST /v1/queues/{queue}/jobs` is served by `PublishRoute`: bodies it reads itself, and the
/// rest through the generated handler; both must answer as the document says.
@Suite("HTTP API: the publish route's two paths")
struct PublishRouteTests {
    @Test(
        "the quick reader keeps data's text as written, whitespace outside strings removed, and reads the members it knows",
        arguments: [
            (
                #"{"type": "t", "data": {"b": [1, {"c": "x, y: }\" z"}], "a" : true }, "job_id": "j"}"#,
                #"{"b":[1,{"c":"x, y: }\" z"}],"a":true}"#
            ),
            (#"{"job_id": "data", "data": "s \"q\" {\u00e9\ud83d\ude00", "type": "t"}"#, #""s \"q\" {\u00e9\ud83d\ude00""#),
            (#"{"type":"t","data":-1.5e3}"#, "-1.5e3"),
            (#" { "data" : [ ] , "type": "t" } "#, "[]"),
            (#"{"type": "t", "data": [0, -0.25, 1E+2, false, null, {}, "\u0000"]}"#, #"[0,-0.25,1E+2,false,null,{},"\u0000"]"#),
        ])
    func quickReader(body: String, expected: String) throws {
        let read = try #require(PublishBody(json: Array(body.utf8)))
        #expect(read.type == "t")
        #expect(read.data == Array(expected.utf8))
        // The text kept is the same JSON value as the client's.
        let kept = try JSONSerialization.jsonObject(with: Data(read.data ?? []), options: .fragmentsAllowed) as? NSObject
        let sent = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        #expect(kept == sent?["data"] as? NSObject)
    }

    @Test("the quick reader decodes the strings it reads, and the envelope's members")
    func quickReaderMembers() throws {
        let body = #"""
            {"type": "caf\u00e9 \ud83d\ude00 \"t\"\n", "attributes": {"a\/b": "v\tw", "e": ""}, "max_attempts": 12,
             "job_id": "j", "key": "k", "ordering_key": "o", "priority": "high", "timeout": "5s", "delay": "1m",
             "data_base64": "aGk="}
            """#
        let read = try #require(PublishBody(json: Array(body.utf8)))
        #expect(read.type == "caf\u{e9} \u{1F600} \"t\"\n")
        #expect(read.attributes == ["a/b": "v\tw", "e": ""])
        #expect(read.maxAttempts == 12 && read.jobId == "j" && read.key == "k" && read.orderingKey == "o")
        #expect(read.priority == "high" && read.timeout == "5s" && read.delay == "1m" && read.dataBase64 == "aGk=")
        #expect(read.data == nil)
    }

    @Test(
        "the quick reader leaves to the generated decoder every body that is not strict JSON or not a plain envelope",
        arguments: [
            // Not JSON, though Foundation's reader lets some through.
            #"{"type": "t", "data": [1, ]}"#, #"{"type": "t", "data": {"a": 1,}}"#, #"{"type": "t",}"#,
            #"{"type": "t", "data": {"a": [{"b": 2,}]}}"#, #"{"type": "t", "data": 01}"#, #"{"type": "t", "data": 1.}"#,
            #"{"type": "t", "data": .5}"#, #"{"type": "t", "data": -}"#, #"{"type": "t", "data": 1e}"#,
            #"{"type": "t", "data": NaN}"#, #"{"type": "t", "data": tru}"#, #"{"type": "t", "data": "a\x"}"#,
            #"{"type": "t", "data": "\ud800"}"#, #"{"type": "t", "data": "\udc00"}"#, #"{"type": "t", "data": "\u12"}"#,
            "{\"type\": \"t\", \"data\": \"a\u{1}b\"}", "{\"type\": \"a\tb\"}", #"{"type": "t"} x"#,
            #"{"type": "t""#, #"{"type": "t", "data": [1, 2"#, #"{"type": 't'}"#, #"{type: "t"}"#, #"["t"]"#, "",
            // JSON the generated decoder answers: nulls, wrong types, unknown or repeated members.
            #"{"data": 1}"#, #"{"type": null}"#, #"{"type": "t", "data": null}"#, #"{"type": 7}"#,
            #"{"type": "t", "max_attempts": 3.0}"#, #"{"type": "t", "max_attempts": "3"}"#,
            #"{"type": "t", "max_attempts": true}"#, #"{"type": "t", "attributes": {"k": 1}}"#,
            #"{"type": "t", "attributes": {"k": "a", "k": "b"}}"#, #"{"type": "t", "type": "u"}"#,
            #"{"type": "t", "extra": 1}"#, #"{"type": "t", "deliver_at": "2026-01-01T00:00:00Z"}"#,
        ])
    func quickReaderRefuses(body: String) {
        #expect(PublishBody(json: Array(body.utf8)) == nil)
    }

    @Test(
        "a Content-Type names JSON in any case, with parameters or not",
        arguments: [
            ("application/json", true), ("Application/JSON; charset=utf-8", true), ("APPLICATION/json", true),
            ("application/js", false), ("text/json", false), ("", false), ("application/xml", false),
        ])
    func contentTypeIsJSON(value: String, expected: Bool) {
        #expect(PublishRoute.isJSON(value) == expected)
    }

    @Test("the quick reader refuses bytes that are not UTF-8 and values nested past its depth")
    func quickReaderRefusesBytes() {
        #expect(PublishBody(json: Array(#"{"type": ""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)) == nil)
        #expect(PublishBody(json: Array(#"{"type": "t", "data": ""#.utf8) + [0xFF] + Array(#""}"#.utf8)) == nil)
        let deep =
            String(repeating: "[", count: JSONScanner.maximumDepth + 1)
            + String(repeating: "]", count: JSONScanner.maximumDepth + 1)
        #expect(PublishBody(json: Array(#"{"type": "t", "data": \#(deep)}"#.utf8)) == nil)
        let deepest =
            String(repeating: "[", count: JSONScanner.maximumDepth)
            + String(repeating: "]", count: JSONScanner.maximumDepth)
        #expect(PublishBody(json: Array(#"{"type": "t", "data": \#(deepest)}"#.utf8))?.data == Array(deepest.utf8))
    }

    @Test(
        "the publish path taken before the router is /v1/queues/{queue}/jobs exactly; any other spelling is left to the router",
        arguments: [
            ("/v1/queues/q/jobs", "q"), ("/v1/queues/a%2Fb:pause/jobs", "a%2Fb:pause"), ("/v1/queues//jobs", nil),
            ("/v1/queues/q/jobs/", nil), ("//v1/queues/q/jobs", nil), ("/v1/queues/a/b/jobs", nil),
            ("/v1/queues/q/jobs:batch", nil),
            ("/v1/queues/jobs", nil), ("/v1/queues/q/jobs/j-1", nil),
        ] as [(String, String?)])
    func publishPathBeforeTheRouter(path: String, queue: String?) {
        #expect(PublishFirstResponder.publishQueue(inPath: path).map(String.init) == queue)
    }

    @Test(
        "percent escapes in a path component are decoded; text without any, or with a malformed one, is kept as it is",
        arguments: [("a%2Fb%20c", "a/b c"), ("plain-name_1", "plain-name_1"), ("bad%zz", "bad%zz"), ("%E2%9C%93", "\u{2713}")])
    func percentDecoded(text: String, expected: String) {
        #expect(APIHandlers.percentDecoded(text) == expected)
        #expect(APIHandlers.percentDecoded(Substring(text)) == expected)
    }

    @Test(
        "idempotency keys' body checks made at once share round trips, each keeps its own answer: a new key or the same body is accepted, another body is 409; the first body is kept for the dedup window"
    )
    func fingerprintsShareRoundTrips() async throws {
        let setup = try await TestQueue("api-fingerprints")
        let window = Duration.seconds(300)
        let checks = RequestFingerprints(queue: setup.queue, connection: setup.redis, window: window)
        let keys = (0..<30).map { "order-\($0)" }
        // Each call's own outcome: nil accepted, else the problem's kind.
        func checkAll(_ fingerprint: String) async -> [String?] {
            await withTaskGroup(of: (Int, String?).self) { group in
                for (index, key) in keys.enumerated() {
                    group.addTask {
                        do {
                            try await checks.check(fingerprint, idempotencyKey: key)
                            return (index, nil)
                        } catch let problem as APIProblem {
                            return (index, problem.kind.rawValue)
                        } catch {
                            return (index, "\(error)")
                        }
                    }
                }
                var outcomes = [String?](repeating: "missing", count: keys.count)
                for await (index, outcome) in group { outcomes[index] = outcome }
                return outcomes
            }
        }
        #expect(await checkAll("body-a").allSatisfy { $0 == nil }, "new keys are accepted")
        #expect(await checkAll("body-a").allSatisfy { $0 == nil }, "the same body again is accepted")
        #expect(await checkAll("body-b").allSatisfy { $0 == "conflict" }, "another body is 409")
        #expect(checks.combinedRoundTrips > 0, "90 checks at once shared no round trip")
        let stored = try await setup.redis.send(
            RedisCommand("GET", [.string(setup.keys.apiRequestFingerprint(idempotencyKey: "order-7"))]))
        #expect(stored.string == "body-a", "the first body stays the key's")
        let ttl =
            try await setup.redis.send(
                RedisCommand("PTTL", [.string(setup.keys.apiRequestFingerprint(idempotencyKey: "order-7"))])
            ).integer ?? -1
        #expect(ttl > 0 && ttl <= window.milliseconds, "kept for the dedup window: \(ttl) ms")
    }

    @Test("the quick path's answer is the document's Accepted as the generated code encodes it")
    func acceptedEncoding() throws {
        let accepted = Components.Schemas.Accepted(
            jobId: "a \"b\"\n", state: .scheduled, statusUrl: "/v1/queues/q/jobs/a%20%22b%22%0A", duplicate: true)
        let quick = try JSONSerialization.jsonObject(with: Data(PublishRoute.json(accepted))) as? NSDictionary
        let generated = try JSONSerialization.jsonObject(with: JSONEncoder().encode(accepted)) as? NSDictionary
        #expect(quick == generated)
    }

    @Test(
        "the same job published by the quick and the generated path (an Idempotency-Key with an escape) answers alike and stores the same payload; bodies the quick path leaves alone get the document's 400"
    )
    func bothPathsAnswerAlike() async throws {
        let (server, setup, path, key) = try await publishing("api-paths")
        let body =
            #"{"type": "t", "data": {"b": [1, {"c": "x, y: }\" z"}], "a": true}, "attributes": {"k": "v"}, "max_attempts": 3, "job_id": "#
        let quick = try await server.send("POST", path, json: body + #""id {1}"}"#, key: key)
        let generated = try await server.send(
            "POST", path, json: body + #""id {2}"}"#, key: key, headers: ["Idempotency-Key": "k%2D2"])
        for (answer, id) in [(quick, "id {1}"), (generated, "id {2}")] {
            #expect(answer.status == 202, "\(answer.text)")
            #expect(answer.json?["job_id"] as? String == id && answer.json?["state"] as? String == "queued")
            #expect(answer.json?["duplicate"] as? Bool == false)
            let escaped = id.replacingOccurrences(of: " ", with: "%20").replacingOccurrences(of: "{", with: "%7B")
                .replacingOccurrences(of: "}", with: "%7D")
            #expect(answer.headers["location"] == "/v1/queues/\(setup.name)/jobs/\(escaped)", "\(answer.headers)")
            #expect(answer.json?["status_url"] as? String == answer.headers["location"])
        }
        let entries = StreamEntry.entries(
            from: try await setup.redis.send(RedisCommand("XRANGE", [.string(setup.keys.jobs), "-", "+"])))
        #expect(entries.count == 2)
        let payloads = try entries.map {
            try JSONSerialization.jsonObject(with: Data($0.value(of: "data") ?? [])) as? NSDictionary
        }
        #expect(payloads[0] != nil && payloads[0] == payloads[1], "the same JSON value either way")
        #expect(entries[0].value(of: "data") == Array(#"{"b":[1,{"c":"x, y: }\" z"}],"a":true}"#.utf8), "the client's text")
        #expect(
            entries.allSatisfy { $0.value(of: "attr.k") == Array("v".utf8) && $0.value(of: "max_attempts") == Array("3".utf8) })

        for refused in [
            #"{"type": "t", "extra": 1}"#, #"{"type": "t", "max_attempts": "3"}"#, #"{"type": 7}"#, #"{"data": 1}"#,
            #"{"type": "t", "max_attempts": true}"#, #"{"type": "t""#, #"{"type": "t", "data": {"a": tru}}"#,
            #"{"type": "t", "attributes": {"k": 1}}"#,
        ] {
            let answer = try await server.send("POST", path, json: refused, key: key)
            #expect(answer.status == 400 && answer.problem == "invalid-request", "\(refused): \(answer.text)")
        }
        #expect(try await setup.length(setup.keys.jobs) == 2, "nothing refused was written")
        // Foundation's readers let a trailing comma through; the payload a job gets is JSON all the same.
        let lenient = try await server.send("POST", path, json: #"{"type": "t", "data": {"a": [1, 2,],}}"#, key: key)
        #expect(lenient.status == 202, "\(lenient.text)")
        let last = StreamEntry.entries(
            from: try await setup.redis.send(RedisCommand("XREVRANGE", [.string(setup.keys.jobs), "+", "-", "COUNT", "1"])))
        #expect(
            last.first?.value(of: "data") == Array(#"{"a":[1,2]}"#.utf8),
            "\(String(decoding: last.first?.value(of: "data") ?? [], as: UTF8.self))")
    }

    @Test(
        "an Idempotency-Key's body check agrees across the two paths: a key first used through the generated handler (spelled with an escape) replays on the quick path with the same body, and is 409 with another"
    )
    func idempotencyAcrossPaths() async throws {
        let (server, setup, path, key) = try await publishing("api-idem-paths")
        let body = #"{"type": "t", "data": {"b": 1, "a": [true, "x"]}, "attributes": {"k": "v"}}"#
        let first = try await server.send("POST", path, json: body, key: key, headers: ["Idempotency-Key": "order%2D9"])
        #expect(first.status == 202 && first.headers["idempotent-replayed"] == nil, "\(first.text)")
        let again = try await server.send("POST", path, json: body, key: key, headers: ["Idempotency-Key": "order-9"])
        #expect(again.status == 202 && again.headers["idempotent-replayed"] == "true", "\(again.text)")
        #expect(again.json?["job_id"] as? String == first.json?["job_id"] as? String)
        let other = try await server.send(
            "POST", path, json: #"{"type": "t", "data": {"b": 2}}"#, key: key, headers: ["Idempotency-Key": "order-9"])
        #expect(other.status == 409 && other.problem == "conflict", "\(other.text)")
        #expect(other.json?["job_id"] as? String == first.json?["job_id"] as? String)
        // The quick path's own: a new key, then the same body again, then another body.
        let quick = try await server.send("POST", path, json: body, key: key, headers: ["Idempotency-Key": "order-10"])
        let replay = try await server.send("POST", path, json: body, key: key, headers: ["Idempotency-Key": "order-10"])
        #expect(quick.status == 202 && replay.headers["idempotent-replayed"] == "true", "\(replay.text)")
        #expect(replay.json?["job_id"] as? String == quick.json?["job_id"] as? String)
        #expect(try await setup.length(setup.keys.jobs) == 2, "one entry per key")
        // Which path wrote each: the generated one sorts the payload's keys, the quick one keeps the client's text.
        let entries = StreamEntry.entries(
            from: try await setup.redis.send(RedisCommand("XRANGE", [.string(setup.keys.jobs), "-", "+"])))
        #expect(
            entries.map { $0.value(of: "data") }
                == [#"{"a":[true,"x"],"b":1}"#, #"{"b":1,"a":[true,"x"]}"#].map { Array($0.utf8) })
    }

    /// A server, a queue of the test's own, its publish path and a key that may publish to it.
    private func publishing(_ prefix: String) async throws -> (APIServerProcess, TestQueue, String, String) {
        let server = try await APIServerProcess()
        let setup = try await TestQueue(prefix)
        let key = try await APIKeys(connection: setup.redis).create(name: uniqueName(prefix), scopes: [.publish]).token
        return (server, setup, "/v1/queues/\(setup.name)/jobs", key)
    }
}
