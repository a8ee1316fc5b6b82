import Ferry
import FerryRedis
import FerryTestSupport
import Testing

@Suite("Queue names and keys")
struct QueueNameAndKeysTests {
    @Test(
        "names of letters, digits, dot, underscore and dash up to 128 characters are accepted",
        arguments: ["emails", "a", "rag.queries_v2-eu", String(repeating: "x", count: 128)])
    func validNames(name: String) throws {
        #expect(try QueueName(name).rawValue == name)
    }

    @Test(
        "anything else is refused, saying which rule failed",
        arguments: ["", String(repeating: "x", count: 129), "a{b}", "with space", "a:b", "über", "new\nline", "*"])
    func invalidNames(name: String) {
        #expect {
            try QueueName(name)
        } throws: { error in
            guard let error = error as? FerryError else { return false }
            return error.code == .invalidInput && error.message.contains("invalid queue name")
        }
    }

    @Test("every key of a queue shares one Redis Cluster hash tag")
    func keyLayout() {
        let keys = QueueKeys(queue: "emails")
        #expect(keys.jobs == "ferry:{emails}:jobs")
        #expect(keys.deadLetter == "ferry:{emails}:dead")
        #expect(keys.jobStatus(jobID: "job-1") == "ferry:{emails}:job:job-1")
        #expect(keys.publishDedup(idempotencyKey: "order-7") == "ferry:{emails}:idem:pub:order-7")
        #expect(keys.completed(idempotencyKey: "order-7") == "ferry:{emails}:idem:done:order-7")
        #expect(keys.inFlightLock(idempotencyKey: "order-7") == "ferry:{emails}:idem:lock:order-7")
    }

    static let hostileIDs = [
        "*", "{other}", "}{", "a\nb", "nul\u{0}byte", String(repeating: "k", count: 10_000), "with:colon", "",
        String(repeating: "s", count: 129), "spaces are here", "ünïcödé",
    ]

    @Test("hostile ids neither break a key nor change its hash tag", arguments: hostileIDs)
    func hostileIDsAreHashed(id: String) {
        let key = QueueKeys(queue: "q").jobStatus(jobID: id)
        #expect(key.hasPrefix("ferry:{q}:job:~"))
        #expect(key.utf8.count == "ferry:{q}:job:~".utf8.count + 64)
        #expect(key.filter { $0 == "{" || $0 == "}" }.count == 2)
    }

    @Test("distinct ids give distinct key components, and a hashed form never equals a safe id")
    func noCollisions() {
        let ids = Self.hostileIDs + ["safe-id", "safe_id", "safe.id", "Safe-Id"]
        let components = ids.map(QueueKeys.keyComponent)
        #expect(Set(components).count == ids.count)
        #expect(QueueKeys.keyComponent("safe-id") == "safe-id")
        let hashed = QueueKeys.keyComponent("*")
        #expect(QueueKeys.keyComponent(hashed) != hashed, "a producer id that looks hashed is hashed again")
    }
}

extension WorkerTests {
    @Test(
        "the queue registry: a publish lists its queue at once; a queue only XADD wrote is found by a discovering listing and registered; a gone queue leaves the registry"
    )
    func queueRegistry() async throws {
        let setup = try await Setup("registry")
        func registered(_ name: String) async throws -> Bool {
            try await setup.redis.send(RedisCommand("SISMEMBER", [.string(QueueRegistry.key), .string(name)])).integer == 1
        }
        _ = try await setup.publisher.publish(JobMessage(type: "t"))
        #expect(try await registered(setup.name), "the first publish registers the queue")
        let inspector = QueueInspector(connection: setup.redis)
        #expect(try await inspector.queues(discover: false).contains(setup.queue))

        let raw = try QueueName(uniqueName("registry-raw"))
        _ = try await setup.redis.send(
            RedisCommand("XADD", [.string(QueueKeys(queue: raw).jobs), "*", "v", "1", "type", "t", "data", "x"]))
        #expect(try await inspector.queues(discover: true).contains(raw), "a scan finds it")
        #expect(try await registered(raw.rawValue), "and registers it")
        #expect(try await inspector.queues(discover: false).contains(raw))

        _ = try await setup.redis.send(RedisCommand("DEL", [.string(QueueKeys(queue: raw).jobs)]))
        #expect(try await !inspector.queues(discover: true).contains(raw))
        #expect(try await !registered(raw.rawValue), "a queue with no keys left leaves the registry")
    }
}
