import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

@Suite("Publisher")
struct PublisherTests {
    private func makePublisher(_ configuration: Publisher.Configuration = .init()) async throws -> (Publisher, RedisConnection) {
        let redis = try await TestRedis.connection()
        let queue = try QueueName(uniqueName("pub"))
        return (Publisher(queue: queue, connection: redis, configuration: configuration), redis)
    }

    private func entries(_ publisher: Publisher, _ redis: RedisConnection) async throws -> [StreamEntry] {
        StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(publisher.keys.jobs), "-", "+"])))
    }

    @Test("a job is one stream entry in wire format v1, and its id is the entry ID")
    func publishOne() async throws {
        let (publisher, redis) = try await makePublisher()
        let before = Date()
        let receipt = try await publisher.publish(
            JobMessage(type: "send", data: #"{"to":"a@example.com"}"#, attributes: ["tenant": "acme"]))
        let stored = try await entries(publisher, redis)
        #expect(stored.count == 1)
        #expect(receipt.jobID == stored[0].id)
        #expect(receipt.entryID == stored[0].id)
        #expect(!receipt.isDuplicate)
        let names = stored[0].fields.map { String(decoding: $0.name, as: UTF8.self) }
        #expect(names == ["type", "data", "published_at", "attr.tenant", "v"])
        let job = try stored[0].decodedJob()
        #expect(job.type == "send")
        #expect(job.attributes == ["tenant": "acme"])
        #expect(job.jobID == receipt.jobID)
        let publishedAt = try #require(job.publishedAt)
        #expect(abs(publishedAt.timeIntervalSince(before)) < 5)
    }

    @Test(
        "a published job with an id of its own has a queued status until a worker takes it; one whose id is its entry ID is found queued in the stream with no status written; with status off there is none"
    )
    func queuedStatus() async throws {
        let (publisher, redis) = try await makePublisher()
        let entryNamed = try await publisher.publish(JobMessage(type: "resize", data: ""))
        #expect(try await JobStatus.load(jobID: entryNamed.jobID, queue: publisher.queue, connection: redis) == nil)
        #expect(
            try await redis.send(RedisCommand("EXISTS", [.string(publisher.keys.jobStatus(jobID: entryNamed.jobID))])).integer
                == 0, "its entry is its queued record: no hash, two commands of Redis time saved a job")
        let found = try #require(try await JobLocator(queue: publisher.queue, connection: redis).find(entryNamed.jobID))
        #expect(found.entry.text(of: "type") == "resize")

        let receipt = try await publisher.publish(JobMessage(type: "resize", data: "", jobID: "resize-1"))
        let status = try #require(try await JobStatus.load(jobID: receipt.jobID, queue: publisher.queue, connection: redis))
        #expect(status.state == .queued)
        #expect(status.fields["type"] == "resize")
        #expect(status.fields["entry_id"] == receipt.entryID)
        let ttl =
            try await redis.send(RedisCommand("PTTL", [.string(publisher.keys.jobStatus(jobID: receipt.jobID))])).integer ?? 0
        #expect(ttl > 0, "a job no worker ever runs does not leave its status forever")

        // A worker that got there first is never overwritten.
        let key = publisher.keys.jobStatus(jobID: "raced")
        try await redis.send(RedisCommand("HSET", [.string(key), "state", "running"]))
        _ = try await publisher.publish(JobMessage(type: "t", data: "", jobID: "raced"))
        #expect(try await JobStatus.load(jobID: "raced", queue: publisher.queue, connection: redis)?.state == .running)

        var quiet = Publisher.Configuration()
        quiet.recordsStatus = false
        let (silent, _) = try await makePublisher(quiet)
        let unrecorded = try await silent.publish(JobMessage(type: "t", data: ""))
        #expect(try await JobStatus.load(jobID: unrecorded.jobID, queue: silent.queue, connection: redis) == nil)
    }

    @Test("a producer-chosen job id is kept and returned")
    func chosenJobID() async throws {
        let (publisher, redis) = try await makePublisher()
        let receipt = try await publisher.publish(JobMessage(type: "t", data: "", jobID: "invoice-2024-001"))
        #expect(receipt.jobID == "invoice-2024-001")
        #expect(try await entries(publisher, redis)[0].value(of: "job_id") == Array("invoice-2024-001".utf8))
    }

    @Test("the same idempotency key published twice adds one entry and returns the first job id")
    func idempotentPublish() async throws {
        let (publisher, redis) = try await makePublisher()
        let first = try await publisher.publish(JobMessage(type: "t", data: "1", idempotencyKey: "order-42"))
        let second = try await publisher.publish(JobMessage(type: "t", data: "2", idempotencyKey: "order-42"))
        #expect(!first.isDuplicate)
        #expect(second.isDuplicate)
        #expect(second.jobID == first.jobID)
        #expect(second.entryID == nil)
        #expect(try await entries(publisher, redis).count == 1)
        let ttl = try await redis.send(RedisCommand("PTTL", [.string(publisher.keys.publishDedup(idempotencyKey: "order-42"))]))
        #expect((ttl.integer ?? 0) > 23 * 3600 * 1000, "remembered for the 24 h dedup window")
    }

    @Test("concurrent publishes of one key from many connections add exactly one entry")
    func concurrentIdempotentPublish() async throws {
        let queue = try QueueName(uniqueName("concurrent"))
        let receipts = try await withThrowingTaskGroup(of: PublishReceipt.self) { group in
            for index in 0..<16 {
                group.addTask {
                    let publisher = Publisher(queue: queue, connection: try await TestRedis.connection())
                    return try await publisher.publish(JobMessage(type: "t", data: "\(index)", idempotencyKey: "same"))
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(receipts.filter { !$0.isDuplicate }.count == 1)
        #expect(Set(receipts.map(\.jobID)).count == 1)
        let redis = try await TestRedis.connection()
        #expect(try await redis.send(RedisCommand("XLEN", [.string(QueueKeys(queue: queue).jobs)])) == .integer(1))
    }

    @Test("hostile idempotency keys deduplicate without colliding with each other")
    func hostileIdempotencyKeys() async throws {
        let (publisher, redis) = try await makePublisher()
        let keys = ["*", "{x}", "a\nb", "nul\u{0}", String(repeating: "z", count: 10_000), "with:colon"]
        for key in keys {
            _ = try await publisher.publish(JobMessage(type: "t", data: "", idempotencyKey: key))
            let again = try await publisher.publish(JobMessage(type: "t", data: "", idempotencyKey: key))
            #expect(again.isDuplicate)
        }
        let stored = try await entries(publisher, redis)
        #expect(stored.count == keys.count)
        #expect(stored.map { try? $0.decodedJob().idempotencyKey } == keys, "keys are shown as given")
    }

    @Test("a payload of exactly the limit is published; one byte more is refused and writes nothing")
    func payloadLimit() async throws {
        let (publisher, redis) = try await makePublisher()
        let limit = WireFormat.defaultMaxPayloadBytes
        _ = try await publisher.publish(JobMessage(type: "big", data: [UInt8](repeating: 7, count: limit)))
        await #expect {
            try await publisher.publish([
                JobMessage(type: "ok", data: "small"),
                JobMessage(type: "big", data: [UInt8](repeating: 7, count: limit + 1)),
            ])
        } throws: { error in
            guard let error = error as? FerryError else { return false }
            return error.code == .invalidInput && error.message.contains("over the limit of 1048576 bytes")
        }
        #expect(try await entries(publisher, redis).count == 1, "nothing of the refused batch was written")
    }

    @Test("an empty type is refused and writes nothing")
    func emptyType() async throws {
        let (publisher, redis) = try await makePublisher()
        await #expect(throws: FerryError.self) { try await publisher.publish(JobMessage(type: "", data: "x")) }
        #expect(try await entries(publisher, redis).isEmpty)
    }

    @Test("binary, non-UTF-8 data round-trips byte for byte")
    func binaryPayload() async throws {
        let (publisher, redis) = try await makePublisher()
        let payload: [UInt8] = [0x00, 0xFF, 0xFE, 0xC3, 0x28, 0x0A, 0x0D, 0x00] + (0...255).map(UInt8.init)
        _ = try await publisher.publish(JobMessage(type: "bin", data: payload))
        #expect(try await entries(publisher, redis)[0].decodedJob().data == payload)
    }

    @Test("a batch of 5,000 jobs is published in order, pipelined")
    func batch() async throws {
        var configuration = Publisher.Configuration()
        configuration.pipelineDepth = 700
        let (publisher, redis) = try await makePublisher(configuration)
        let jobs = (0..<5000).map { JobMessage(type: "n", data: String($0)) }
        let receipts = try await publisher.publish(jobs)
        let stored = try await entries(publisher, redis)
        #expect(receipts.map(\.jobID) == stored.map(\.id))
        #expect(stored.map { String(decoding: $0.value(of: "data") ?? [], as: UTF8.self) } == (0..<5000).map(String.init))
    }

    @Test("an entry written by Python redis-py is read back by the Swift side with the same fields")
    func pythonProducer() async throws {
        let (publisher, redis) = try await makePublisher()
        let url = try await TestRedis.sharedURL()
        let script = """
            import sys, redis
            r = redis.Redis.from_url(sys.argv[1])
            print(r.xadd(sys.argv[2], {"type": "ingest", "data": b'{"doc": 1}\\xff', "job_id": "py-1",
                "idempotency_key": "py-key", "attr.source": "python", "published_at": "1700000000000",
                "max_attempts": "4", "timeout_ms": "30000", "v": "1", "custom": "kept"}).decode())
            """
        let result = try await runPython(script, [url, publisher.keys.jobs])
        #expect(result.status == 0, "\(result.standardError)")
        let stored = try await entries(publisher, redis)
        #expect(stored.map(\.id) == [result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)])
        let job = try stored[0].decodedJob()
        #expect(job.type == "ingest")
        #expect(job.data == Array(#"{"doc": 1}"#.utf8) + [0xFF])
        #expect(job.jobID == "py-1")
        #expect(job.idempotencyKey == "py-key")
        #expect(job.attributes == ["source": "python"])
        #expect(job.publishedAt == Date(timeIntervalSince1970: 1_700_000_000))
        #expect(job.maxAttempts == 4)
        #expect(job.timeout == .seconds(30))
        #expect(job.otherFields == [JobField("custom", "kept")])
    }

    @Test("a job published by Swift is read by redis-py with the documented fields")
    func pythonConsumer() async throws {
        let (publisher, _) = try await makePublisher()
        _ = try await publisher.publish(JobMessage(type: "t", data: [0xFF, 0x00], jobID: "j", attributes: ["k": "v"]))
        let script = """
            import sys, redis
            r = redis.Redis.from_url(sys.argv[1])
            (_, fields), = r.xrange(sys.argv[2])
            print(sorted(k.decode() for k in fields), fields[b"data"].hex(), fields[b"v"].decode())
            """
        let result = try await runPython(script, [try await TestRedis.sharedURL(), publisher.keys.jobs])
        #expect(
            result.standardOutput == "['attr.k', 'data', 'job_id', 'published_at', 'type', 'v'] ff00 1\n",
            "\(result.standardError)")
    }
}
