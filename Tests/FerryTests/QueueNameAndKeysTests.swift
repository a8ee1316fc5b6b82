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

    @Test(
        "a queue is registered only once its job stream exists, by a first publish and by a worker's start, so a discovering listing, which prunes registered names without keys, never removes one on its way"
    )
    func registeredOnlyWithItsStream() async throws {
        let setup = try await Setup("registry-order")
        // Watches a new queue until it is registered, each time reading the registry and the
        // stream in one step (MULTI), and says whether it was ever registered without its stream.
        func registeredWithoutStream(_ queue: QueueName) async throws -> Bool {
            let watcher = RedisConnection(configuration: setup.redisConfiguration)
            let deadline = ContinuousClock.now + .seconds(30)
            var seen: [Int64] = []
            while seen.first != 1 && ContinuousClock.now < deadline {
                let replies = try await watcher.pipeline([
                    RedisCommand("MULTI", []),
                    RedisCommand("SISMEMBER", [.string(QueueRegistry.key), .string(queue.rawValue)]),
                    RedisCommand("EXISTS", [.string(QueueKeys(queue: queue).jobs)]), RedisCommand("EXEC", []),
                ])
                seen = replies[3].array?.compactMap(\.integer) ?? []
            }
            await watcher.close()
            #expect(seen.first == 1, "\(queue) was never registered")
            return seen == [1, 0]
        }
        for _ in 0..<20 {
            let queue = try QueueName(uniqueName("registry-order"))
            let publishing = Task {
                let connection = RedisConnection(configuration: setup.redisConfiguration)
                _ = try await Publisher(queue: queue, connection: connection).publish(JobMessage(type: "t"))
                await connection.close()
            }
            #expect(try await !registeredWithoutStream(queue), "a first publish registered \(queue) before its stream existed")
            try await publishing.value
            _ = try await setup.redis.send(RedisCommand("DEL", [.string(QueueKeys(queue: queue).jobs)]))
        }
        let workerQueue = try await TestQueue("registry-order-worker")
        let worker = workerQueue.worker([:])
        let working = Task { try await worker.run() }
        #expect(try await !registeredWithoutStream(workerQueue.queue), "a worker registered its queue before its stream existed")
        worker.stop()
        try await working.value
    }
}
