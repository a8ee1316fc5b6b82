import Crypto
import Ferry
import FerryAPI
import FerryRedis
import FerryTestSupport
import Foundation
import JWTKit
import Testing

/// JWT bearer tokens against a real `ferry serve`: tokens signed by jwt-kit and by the openssl
/// command line (an independent signer), with the keys given as files as an operator would.
@Suite("HTTP API: JWT bearer tokens")
struct JWTTests {
    /// The claims a token carries, as an identity provider would write them.
    struct Claims: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var iss: IssuerClaim?
        var aud: AudienceClaim?
        var scope: String?
        var queues: [String]?

        enum CodingKeys: String, CodingKey {
            case sub, exp, iss, aud, scope
            case queues = "ferry_queues"
        }

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    static func claims(
        _ subject: String, scope: String = "publish read", expiresIn: TimeInterval = 600, issuer: String? = "https://id.example",
        audience: String? = "ferry", queues: [String]? = nil
    ) -> Claims {
        Claims(
            sub: .init(value: subject), exp: .init(value: Date(timeIntervalSinceNow: expiresIn)),
            iss: issuer.map { .init(value: $0) },
            aud: audience.map { .init(value: [$0]) }, scope: scope, queues: queues)
    }

    /// 40 random bytes for an HS256 secret, none of them a line end: the server drops line ends
    /// at the end of a secret file, so a secret that happened to end in one would differ there
    /// (the tests failed 1 run in 128).
    static func secret() -> [UInt8] {
        (0..<40).map { _ in UInt8.random(in: 0...255) }.map { $0 == 0x0A || $0 == 0x0D ? 0x41 : $0 }
    }

    /// A file in a fresh temporary directory with `contents`.
    static func file(_ name: String, _ contents: some DataProtocol) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appending(path: uniqueName("jwt"))
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appending(path: name)
        try Data(contents).write(to: url)
        return url.path()
    }

    @Test(
        "HS256: a token publishes with its subject as the job's key; expired, wrong issuer or audience, another secret, a missing scope, another queue or another's key are refused"
    )
    func sharedSecret() async throws {
        let secret = Self.secret()
        // A trailing newline, as `echo` or an editor leaves it, is not part of the secret.
        let secretFile = try Self.file("secret", secret + [0x0A])
        let server = try await APIServerProcess([
            "--jwt-secret-file", secretFile, "--jwt-issuer", "https://id.example", "--jwt-audience", "ferry",
            "--jwt-subject-is-key",
        ])
        let setup = try await TestQueue("api-jwt")
        let signer = JWTKeyCollection()
        await signer.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: .sha256)
        let other = JWTKeyCollection()
        await other.add(hmac: HMACKey(key: SymmetricKey(data: Array(repeating: 7, count: 40))), digestAlgorithm: .sha256)
        let path = "/v1/queues/\(setup.name)/jobs"

        let token = try await signer.sign(Self.claims("user-7"))
        let published = try await server.send("POST", path, json: #"{"type": "t", "job_id": "j1"}"#, key: token)
        #expect(published.status == 202, "\(published.text)")
        let entry = try #require(
            StreamEntry.entries(from: try await setup.redis.send(RedisCommand("XRANGE", [.string(setup.keys.jobs), "-", "+"])))
                .first)
        #expect(entry.value(of: "key") == Array("user-7".utf8), "the subject is the job's key")
        let ownKey = try await server.send("POST", path, json: #"{"type": "t", "key": "user-7"}"#, key: token)
        #expect(ownKey.status == 202, "\(ownKey.text)")
        let othersKey = try await server.send("POST", path, json: #"{"type": "t", "key": "user-8"}"#, key: token)
        #expect(othersKey.status == 403 && othersKey.problem == "forbidden", "\(othersKey.text)")
        #expect((othersKey.json?["detail"] as? String)?.contains("user-7") == true)

        let refusals: [(token: String, says: String)] = [
            (try await signer.sign(Self.claims("user-7", expiresIn: -60)), "expired"),
            (try await signer.sign(Self.claims("user-7", issuer: "https://evil.example")), "issuer"),
            (try await signer.sign(Self.claims("user-7", issuer: nil)), "issuer"),
            (try await signer.sign(Self.claims("user-7", audience: "billing")), "audience"),
            (try await other.sign(Self.claims("user-7")), "signature"),
            ("not.a.jwt", "not accepted"),
        ]
        for (refused, says) in refusals {
            let answer = try await server.send("POST", path, json: #"{"type": "t"}"#, key: refused)
            #expect(answer.status == 401 && answer.problem == "unauthenticated", "\(answer.text)")
            #expect((answer.json?["detail"] as? String)?.contains(says) == true, "\(says): \(answer.text)")
        }
        let reader = try await server.send(
            "POST", path, json: #"{"type": "t"}"#, key: try await signer.sign(Self.claims("user-7", scope: "read")))
        #expect(reader.status == 403 && reader.problem == "forbidden", "\(reader.text)")
        let elsewhere = try await signer.sign(Self.claims("user-7", queues: ["another-queue"]))
        #expect(try await server.send("GET", "/v1/queues/\(setup.name)", key: elsewhere).status == 403)
        #expect(try await server.send("GET", "/v1/queues/\(setup.name)", key: token).status == 200)
        #expect(try await setup.length(setup.keys.jobs) == 2, "only the accepted publishes were written")

        let apiKey = try await APIKeys(connection: setup.redis).create(name: uniqueName("k"), scopes: [.read]).token
        #expect(
            try await server.send("GET", "/v1/queues/\(setup.name)", key: apiKey).status == 200, "API keys still work beside JWTs"
        )
    }

    @Test(
        "RS256: a token signed by the openssl command line verifies with the PEM public key; ES256 tokens verify by kid from a JWKS file, another key's are refused"
    )
    func publicKeys() async throws {
        let directory = FileManager.default.temporaryDirectory.appending(path: uniqueName("jwt-rsa")).path()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let now = Int(Date().timeIntervalSince1970)
        // An RSA key pair and a token made by openssl alone: the server never sees the private key.
        let script = """
            set -e
            cd "\(directory)"
            openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out private.pem 2>/dev/null
            openssl pkey -in private.pem -pubout -out public.pem
            b64() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
            header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64)
            payload=$(printf '{"sub":"svc-ingest","exp":\(now + 600),"scope":"read"}' | b64)
            signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign private.pem -binary | b64)
            printf '%s.%s.%s' "$header" "$payload" "$signature"
            """
        let made = try await runProcess(URL(fileURLWithPath: "/bin/bash"), ["-c", script])
        #expect(made.status == 0, "\(made.standardError)")
        let rsaServer = try await APIServerProcess(["--jwt-public-key", directory + "/public.pem"])
        let accepted = try await rsaServer.send("GET", "/v1/queues", key: made.standardOutput)
        #expect(accepted.status == 200, "\(accepted.text)")
        let tampered = made.standardOutput.replacingOccurrences(of: ".", with: ".e", options: [], range: nil)
        #expect(try await rsaServer.send("GET", "/v1/queues", key: tampered).status == 401)

        let key = ES256PrivateKey()
        let parameters = try #require(key.publicKey.parameters)
        let jwks =
            #"{"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "k1", "x": "\#(parameters.x)", "y": "\#(parameters.y)"}]}"#
        let jwksServer = try await APIServerProcess(["--jwt-jwks", try Self.file("jwks.json", Array(jwks.utf8))])
        let signer = JWTKeyCollection()
        await signer.add(ecdsa: key, kid: "k1")
        let impostor = JWTKeyCollection()
        await impostor.add(ecdsa: ES256PrivateKey(), kid: "k1")
        let claims = Self.claims("svc-report", scope: "read", issuer: nil, audience: nil)
        #expect(try await jwksServer.send("GET", "/v1/queues", key: try await signer.sign(claims, kid: "k1")).status == 200)
        let refused = try await jwksServer.send("GET", "/v1/queues", key: try await impostor.sign(claims, kid: "k1"))
        #expect(refused.status == 401 && refused.problem == "unauthenticated", "\(refused.text)")
    }

    @Test(
        "with --jwt-subject-is-key a caller sees and acts on its own jobs only: another's is 404 to read, cancel and retry, listings hold its own, and queue-wide operations are refused"
    )
    func scopedToOwnJobs() async throws {
        let secret = Self.secret()
        let server = try await APIServerProcess([
            "--jwt-secret-file", try Self.file("secret", secret), "--jwt-issuer", "https://id.example", "--jwt-audience", "ferry",
            "--jwt-subject-is-key",
        ])
        let setup = try await TestQueue("api-own")
        let signer = JWTKeyCollection()
        await signer.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: .sha256)
        let alice = try await signer.sign(Self.claims("alice", scope: "publish read admin"))
        let bob = try await signer.sign(Self.claims("bob", scope: "publish read admin"))
        let path = "/v1/queues/\(setup.name)/jobs"
        let mine = try await server.send("POST", path, json: #"{"type": "t", "job_id": "alice-1"}"#, key: alice)
        let unnamed = try await server.send("POST", path, json: #"{"type": "t"}"#, key: bob)
        #expect(mine.status == 202 && unnamed.status == 202, "\(mine.text) \(unnamed.text)")
        let bobsJob = try #require(unnamed.json?["job_id"] as? String)
        #expect(bobsJob.count == 36, "a job without an id is given one (a UUID): \(bobsJob)")

        #expect(try await server.send("GET", "\(path)/alice-1", key: alice).status == 200)
        #expect(try await server.send("GET", "\(path)/\(bobsJob)", key: bob).status == 200)
        let peek = try await server.send("GET", "\(path)/alice-1", key: bob)
        #expect(peek.status == 404 && peek.problem == "not-found", "\(peek.text)")
        #expect(try await server.send("POST", "\(path)/alice-1:cancel", key: bob).status == 404)
        #expect(try await server.send("POST", "\(path)/alice-1:retry", key: bob).status == 404)

        try await withWorker(setup, handlers: ["t": JobHandlerClosure { _ in }]) {
            let reader = try await APIKeys(connection: setup.redis).create(name: uniqueName("k"), scopes: [.read]).token
            #expect(
                await eventually {
                    let all = try await server.send("GET", path, key: reader)
                    return (all.json?["jobs"] as? [[String: Any]])?.count == 2
                }, "an API key sees every job")
        }
        let alicesList = try await server.send("GET", path, key: alice)
        #expect(
            (alicesList.json?["jobs"] as? [[String: Any]])?.compactMap { $0["job_id"] as? String } == ["alice-1"],
            "\(alicesList.text)")
        let bobsList = try await server.send("GET", "\(path)?key=alice", key: bob)
        #expect(
            (bobsList.json?["jobs"] as? [[String: Any]])?.compactMap { $0["job_id"] as? String } == [bobsJob], "\(bobsList.text)")

        #expect(try await server.send("GET", "/v1/queues/\(setup.name)", key: alice).status == 200, "the queue's figures")
        let refused = try await server.send("GET", "/v1/queues/\(setup.name)/dead-letters", key: alice)
        #expect(
            refused.status == 403 && (refused.json?["detail"] as? String)?.contains("own jobs") == true, "\(refused.text)")
    }

    @Test("with --jwt-subject-is-key a caller's event stream holds its own jobs' events only")
    func scopedEvents() async throws {
        let secret = Self.secret()
        let server = try await APIServerProcess([
            "--jwt-secret-file", try Self.file("secret", secret), "--jwt-issuer", "https://id.example", "--jwt-audience", "ferry",
            "--jwt-subject-is-key",
        ])
        let setup = try await TestQueue("api-own-events")
        try await QueueEvents(queue: setup.queue, connection: setup.redis).enable()
        let signer = JWTKeyCollection()
        await signer.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: .sha256)
        let alice = try await signer.sign(Self.claims("alice", scope: "publish read"))
        let bob = try await signer.sign(Self.claims("bob", scope: "publish read"))
        let path = "/v1/queues/\(setup.name)/jobs"
        var published: [(caller: String, jobID: String)] = []
        for (caller, token) in [("alice", alice), ("bob", bob), ("alice", alice)] {
            let answer = try await server.send("POST", path, json: #"{"type": "t"}"#, key: token)
            #expect(answer.status == 202, "\(caller): \(answer.text)")
            published.append((caller, try #require(answer.json?["job_id"] as? String)))
        }
        _ = try await setup.publisher.publish(JobMessage(type: "t", jobID: "unkeyed"))
        try await withWorker(setup, handlers: ["t": JobHandlerClosure { _ in }]) {
            for jobID in published.map(\.jobID) + ["unkeyed"] {
                #expect(
                    await eventually {
                        try await JobStatus.load(jobID: jobID, queue: setup.queue, connection: setup.redis)?.state == .succeeded
                    })
            }
        }
        let alicesJobs = Set(published.filter { $0.caller == "alice" }.map(\.jobID))
        let url = "\(server.baseURL)/v1/queues/\(setup.name)/events?after=0-0&timeout=1s"
        let seen = try await EventsAPITests.curl(url, headers: ["Authorization: Bearer \(alice)"]).filter { $0.event == "job" }
        #expect(Set(seen.compactMap { $0.data["job_id"] }) == alicesJobs, "\(seen)")
        #expect(seen.filter { $0.data["state"] == "succeeded" }.count == 2)
    }

    @Test("a JWT secret under 32 bytes or an unreadable key file stops ferry serve with a message saying what to do")
    func badJWTSettings() async throws {
        let url = try await TestRedis.sharedURL()
        let short = try await runProcess(
            try ferryExecutable(),
            ["serve", "--port", "0", "--redis", url, "--jwt-secret-file", try Self.file("s", Array("short".utf8))])
        #expect(short.status != 0 && short.standardError.contains("at least 32"), "\(short.standardError)")
        let missing = try await runProcess(
            try ferryExecutable(), ["serve", "--port", "0", "--redis", url, "--jwt-public-key", "/nonexistent/key.pem"])
        #expect(missing.status != 0 && missing.standardError.contains("/nonexistent/key.pem"), "\(missing.standardError)")
        let notPEM = try await runProcess(
            try ferryExecutable(),
            ["serve", "--port", "0", "--redis", url, "--jwt-public-key", try Self.file("k.pem", Array("hello".utf8))])
        #expect(notPEM.status != 0 && notPEM.standardError.contains("PEM"), "\(notPEM.standardError)")
        let lonelyIssuer = try await runProcess(try ferryExecutable(), ["serve", "--redis", url, "--jwt-issuer", "x"])
        #expect(
            lonelyIssuer.status != 0 && lonelyIssuer.standardError.contains("need a JWT key"), "\(lonelyIssuer.standardError)")
    }

    @Test("a dashboard session made from a JWT ends when the token expires, not 12 hours later")
    func dashboardSessionEndsWithToken() async throws {
        let secret = Self.secret()
        let server = try await APIServerProcess([
            "--jwt-secret-file", try Self.file("secret", secret), "--jwt-issuer", "https://id.example", "--jwt-audience", "ferry",
        ])
        let signer = JWTKeyCollection()
        await signer.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: .sha256)
        let token = try await signer.sign(Self.claims(uniqueName("viewer"), scope: "read", expiresIn: 8))
        let curl = URL(fileURLWithPath: "/usr/bin/curl")
        let jar = FileManager.default.temporaryDirectory.appending(path: uniqueName("jar")).path()
        _ = try await runProcess(curl, ["-s", "-o", "/dev/null", "-c", jar, server.baseURL + "/login"])
        let cookies = try String(contentsOfFile: jar, encoding: .utf8)
        let csrf = try #require(cookies.split(separator: "\n").first { $0.contains("ferry_csrf") }?.split(separator: "\t").last)
        let signIn = try await runProcess(
            curl,
            [
                "-s", "-o", "/dev/null", "-D", "-", "-b", jar, "-c", jar, "--data-urlencode", "csrf=\(csrf)",
                "--data-urlencode", "token=\(token)", server.baseURL + "/login",
            ])
        let session = try #require(
            signIn.standardOutput.split(separator: "\r\n").first { $0.lowercased().hasPrefix("set-cookie: ferry_session=") },
            "\(signIn.standardOutput)")
        let maxAge = try #require(session.firstMatch(of: /Max-Age=(\d+)/).flatMap { Int($0.1) }, "\(session)")
        #expect(maxAge <= 8, "the cookie lasts as long as the token: \(session)")
        let cookie = try #require(session.split(separator: ";").first?.split(separator: " ", maxSplits: 1).last)
        // The cookie is sent as is, past its Max-Age: the server's record of the session ends too.
        func overview() async throws -> String {
            try await runProcess(
                curl, ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Cookie: \(cookie)", server.baseURL + "/"]
            ).standardOutput
        }
        #expect(try await overview() == "200", "signed in while the token is valid")
        #expect(await eventually(.seconds(30)) { try await overview() == "303" }, "signed out when the token expired")
    }
}
