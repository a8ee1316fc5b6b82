import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

extension Examples {
    /// examples/uploads: PDFs uploaded by users with JWTs, processed in stages; every promise its
    /// README makes, checked against real processes.
    @Suite("Example: an upload pipeline")
    struct UploadsExampleTests {
        /// A small PDF (what the pipeline checks of one: its `%PDF-` start) with `words` in its text.
        static func pdf(_ words: String) -> Data { Data("%PDF-1.7\n\(words)\n%%EOF\n".utf8) }

        /// Uploads `body` as `token`'s user.
        func upload(
            _ body: Data, _ front: ListeningProcess, token: String?, type: String = "application/pdf"
        ) async throws
            -> HTTPAnswer
        {
            try await sendHTTP("POST", front.baseURL + "/uploads", bytes: body, bearer: token, headers: ["Content-Type": type])
        }

        @Test(
            "uploads: 25 MB and PDF only, checked before a job exists; stages with percents; the user's own jobs listed with paging and filters; JWT-scoped; 30 uploads a day, 10 polls a minute per job, 2 active jobs per user; retries after 3 s and 6 s, then deadletter, and a retry; a worker killed mid-upload and the embedding done once"
        )
        func uploads() async throws {
            let queue = uniqueName("uploads")
            let secret = FileManager.default.temporaryDirectory.appending(path: uniqueName("secret")).path()
            var example = try await ExampleRun(
                "uploads", queue: queue,
                settings: ["SERVICES_PORT": "0", "FERRY_PORT": "0", "LEASE": "2s", "SECRET": secret, "STAGE_SECONDS": "0.3"])
            defer { example.stopAll() }
            #expect(try await example.run("setup").status == 0)
            let services = try await example.serve("services", exporting: "SERVICES_URL")
            _ = try await example.serve("serve", exporting: "FERRY_API")
            let front = try await example.serve("front")
            let workers = try [example.startLogged("worker"), example.startLogged("worker")]
            let token = { (user: String) in try await example.run("token", user).lines.first ?? "" }
            // Users of their own: limits are kept in Redis, which every run of the suite shares.
            let aliceName = uniqueName("alice")
            let alice = try await token(aliceName), bob = try await token(uniqueName("bob"))
            let redis = try await TestRedis.connection()
            let name = try QueueName(queue)
            let stats = { try await sendHTTP("GET", services.baseURL + "/stats").json ?? [:] }
            /// The job's status read from Redis (the API's polls are limited to 10 a minute a job).
            func status(_ id: String) async throws -> JobStatus? {
                try await JobStatus.load(jobID: id, queue: name, connection: redis)
            }
            func ended(_ id: String) async throws -> JobStatus? {
                var last: JobStatus?
                _ = await eventually(.seconds(60)) {
                    last = try await status(id)
                    return last?.state?.isTerminal == true
                }
                return last
            }

            // Checked before any job exists: the type, the size, the token.
            #expect(try await upload(Data("plain text".utf8), front, token: alice, type: "text/plain").status == 415)
            #expect(try await upload(Data("not a pdf".utf8), front, token: alice).status == 415)
            let huge = Self.pdf("big") + Data(count: 25 * 1024 * 1024)
            #expect(try await upload(huge, front, token: alice).status == 413)
            #expect(try await upload(Self.pdf("no token"), front, token: nil).status == 401)
            #expect(try await upload(Self.pdf("forged"), front, token: alice + "x").status == 401)
            #expect(
                try await redis.send(RedisCommand("XLEN", [.string(QueueKeys(queue: name).jobs)])).integer == 0, "no job was made"
            )

            // Three slow uploads of alice's: queued at 0 %, at most 2 working at once, each through
            // every stage to embedded, 100 %.
            var ids: [String] = []
            for index in 0..<3 {
                let answer = try await upload(
                    Self.pdf("SLOW report \(index) " + String(repeating: "word ", count: 120)), front, token: alice)
                #expect(
                    answer.status == 202 && answer.json?["state"] as? String == "queued" && answer.json?["percent"] as? Int == 0)
                ids.append(try #require(answer.json?["job_id"] as? String))
            }
            var seen: [String] = []
            var shownWorking: String?  // what the upload service showed while the job ran
            #expect(
                await eventually(.seconds(60)) {
                    let now = try await status(ids[0])
                    let stage = now?.fields["stage"] ?? ""
                    if !stage.isEmpty, seen.last != stage { seen.append(stage) }
                    if now?.state == .running, shownWorking == nil {
                        let shown = try await sendHTTP(
                            "GET", front.baseURL + "/uploads/\(ids[0])", headers: ["Authorization": "Bearer \(alice)"])
                        shownWorking = shown.json?["state"] as? String
                    }
                    return now?.state == .succeeded
                })
            #expect(shownWorking == "working", "\(shownWorking ?? "never seen running")")
            let order = ["validated", "parsing", "parsed", "chunking", "chunked", "embedding", "embedded"]
            #expect(seen.allSatisfy(order.contains) && seen == order.filter(seen.contains), "stages in order: \(seen)")
            for id in ids { #expect(try await ended(id)?.state == .succeeded) }
            let done = try await sendHTTP(
                "GET", front.baseURL + "/uploads/\(ids[0])", headers: ["Authorization": "Bearer \(alice)"])
            #expect(done.json?["state"] as? String == "done" && done.json?["percent"] as? Int == 100, "\(done.text)")
            let lines = ExampleRun.jsonLines(workers.flatMap(\.logs)).filter { $0["job_id"] as? String == ids[1] }
            #expect(lines.compactMap { $0["stage"] as? String } == order, "every stage, each with its percent")
            #expect(lines.compactMap { $0["percent"] as? Int } == [10, 20, 30, 45, 55, 70, 100])
            #expect(((try await stats())["most_at_once"] as? [String: Any])?[aliceName] as? Int == 2, "2 active jobs per user")

            // Scoped to the user: bob cannot see alice's upload; each lists their own, paged and filtered.
            let peek = try await sendHTTP(
                "GET", front.baseURL + "/uploads/\(ids[0])", headers: ["Authorization": "Bearer \(bob)"])
            #expect(peek.status == 404, "\(peek.text)")
            let bobs = try #require(try await upload(Self.pdf("bob's file"), front, token: bob).json?["job_id"] as? String)
            #expect(try await ended(bobs)?.state == .succeeded)
            let firstPage = try await sendHTTP(
                "GET", front.baseURL + "/uploads?limit=2&state=done", headers: ["Authorization": "Bearer \(alice)"])
            let firstIDs = (firstPage.json?["uploads"] as? [[String: Any]])?.compactMap { $0["job_id"] as? String } ?? []
            let cursor = try #require(firstPage.json?["next_cursor"] as? String, "\(firstPage.text)")
            let secondPage = try await sendHTTP(
                "GET", front.baseURL + "/uploads?limit=2&state=done&cursor=\(cursor)",
                headers: ["Authorization": "Bearer \(alice)"])
            let secondIDs = (secondPage.json?["uploads"] as? [[String: Any]])?.compactMap { $0["job_id"] as? String } ?? []
            #expect(Set(firstIDs + secondIDs) == Set(ids) && firstIDs.count == 2, "\(firstIDs) \(secondIDs)")

            // 10 status polls a minute per job: the 11th is 429 with Retry-After.
            var polls: [Int] = []
            for _ in 0..<11 {
                polls.append(
                    try await sendHTTP("GET", front.baseURL + "/uploads/\(bobs)", headers: ["Authorization": "Bearer \(bob)"])
                        .status)
            }
            #expect(polls.prefix(10).allSatisfy { $0 == 200 } && polls.last == 429, "\(polls)")

            // A file that cannot be read: retryable, retried after 3 s and then 6 s, deadletter after
            // the third attempt; once repaired, a retry processes it.
            let corrupt = Self.pdf("CORRUPT scan")
            let corruptID = try #require(try await upload(corrupt, front, token: bob).json?["job_id"] as? String)
            var delays: [Int64] = []
            var shown: [String] = []  // the states the upload service showed, each the first time
            let show = {
                let answer = try await sendHTTP(
                    "GET", front.baseURL + "/uploads/\(corruptID)", headers: ["Authorization": "Bearer \(bob)"])
                if let state = answer.json?["state"] as? String, !shown.contains(state) { shown.append(state) }
            }
            #expect(
                await eventually(.seconds(60)) {
                    guard let now = try await status(corruptID) else { return false }
                    if now.state == .retrying, let next = Int64(now.fields["next_attempt_at"] ?? ""),
                        let failedAt = Int64(now.fields["updated_at"] ?? ""), delays.count < (now.attempts ?? 0)
                    {
                        delays.append(next - failedAt)
                        try await show()
                    }
                    return now.state == .dead
                })
            try await show()
            #expect(shown == ["retryable", "deadletter"], "\(shown)")
            #expect(delays.count == 2 && (2_900...3_300).contains(delays[0]) && (5_900...6_300).contains(delays[1]), "\(delays)")
            let dead = try await status(corruptID)
            #expect(dead?.attempts == 3 && dead?.fields["last_error"]?.contains("cannot be read") == true)
            let repairAll = try await runPython(
                "import hashlib,sys,urllib.request; h=hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest(); urllib.request.urlopen(urllib.request.Request(sys.argv[2]+'/repair/sha256:'+h, method='POST'))",
                [try Self.file(corrupt), services.baseURL])
            #expect(repairAll.status == 0, "\(repairAll.standardError)")
            let retried = try await sendHTTP(
                "POST", front.baseURL + "/uploads/\(corruptID)/retry", headers: ["Authorization": "Bearer \(bob)"])
            #expect(retried.status == 200 || retried.status == 202, "\(retried.text)")
            #expect(try await ended(corruptID)?.state == .succeeded)

            // A worker killed (kill -9) mid-upload: the other finishes it after the lease; embedded once.
            let dave = try await token(uniqueName("dave"))
            let killedID = try #require(
                try await upload(Self.pdf("SLOW dave's contract " + String(repeating: "clause ", count: 60)), front, token: dave)
                    .json?["job_id"] as? String)
            #expect(await eventually { ((try await stats())["calls"] as? [String: Any])?[killedID] as? Int == 1 }, "embedding")
            let consumer = try await status(killedID)?.fields["consumer"] ?? ""
            let victim = try #require(workers.map(\.process).first { consumer.hasSuffix("-\($0.pid)") }, "\(consumer)")
            victim.signal(SIGKILL)
            let survived = try await ended(killedID)
            #expect(survived?.state == .succeeded && survived?.attempts == 2, "\(survived?.fields ?? [:])")
            #expect(((try await stats())["done"] as? [String: Any])?[killedID] as? Int == 1)

            // 30 uploads a day per user: carol's 31st is 429 with Retry-After.
            let carol = try await token(uniqueName("carol"))
            var answers: [Int] = []
            for index in 0..<31 { answers.append(try await upload(Self.pdf("note \(index)"), front, token: carol).status) }
            #expect(answers.prefix(30).allSatisfy { $0 == 202 } && answers.last == 429, "\(answers)")
            let refused = try await upload(Self.pdf("one more"), front, token: carol)
            #expect(refused.status == 429 && refused.headers["retry-after"] != nil, "\(refused.text)")
        }

        /// A file holding `data`, for a helper program to read.
        static func file(_ data: Data) throws -> String {
            let url = FileManager.default.temporaryDirectory.appending(path: uniqueName("upload") + ".pdf")
            try data.write(to: url)
            return url.path()
        }
    }
}
