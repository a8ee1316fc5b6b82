import Ferry
import FerryRedis
import Foundation

/// A fresh queue on the shared test Redis, with what most tests need to publish to it and look
/// at its streams.
public struct TestQueue: Sendable {
    public let url: String
    public let queue: QueueName
    public let keys: QueueKeys
    public let redis: RedisConnection
    public let redisConfiguration: RedisConfiguration
    public let publisher: Publisher

    /// - Parameters:
    ///   - prefix: starts the queue's unique name, for reading Redis during a failure.
    ///   - url: the Redis to use; the shared test server when nil.
    public init(_ prefix: String, url: String? = nil) async throws {
        if let url { self.url = url } else { self.url = try await TestRedis.sharedURL() }
        queue = try QueueName(uniqueName(prefix))
        keys = QueueKeys(queue: queue)
        redisConfiguration = try RedisConfiguration(url: self.url)
        redis = RedisConnection(configuration: redisConfiguration)
        publisher = Publisher(queue: queue, connection: redis)
    }

    /// The queue's name, as the `ferry` command line takes it.
    public var name: String { queue.rawValue }

    /// Entries delivered to `group` and not yet acknowledged (-1 when the group does not exist).
    public func pendingCount(group: String = "workers") async throws -> Int64 {
        let summary = try await redis.send(RedisCommand("XPENDING", [.string(keys.jobs), .string(group)]))
        return summary.array?.first?.integer ?? -1
    }

    public func deadEntries() async throws -> [StreamEntry] {
        StreamEntry.entries(from: try await redis.send(RedisCommand("XRANGE", [.string(keys.deadLetter), "-", "+"])))
    }

    /// `XLEN` of one of the queue's streams.
    public func length(_ key: String) async throws -> Int64 {
        try await redis.send(RedisCommand("XLEN", [.string(key)])).integer ?? -1
    }

    /// Runs the built `ferry` binary with `--redis` pointing at the test Redis.
    public func ferry(_ arguments: String...) async throws -> ProcessResult {
        try await ferry(arguments)
    }

    /// Runs the built `ferry` binary with these arguments and `--redis` pointing at the test Redis.
    public func ferry(_ arguments: [String]) async throws -> ProcessResult {
        try await runProcess(try ferryExecutable(), arguments + ["--redis", url])
    }

    /// Runs `ferry jobs list` with `arguments` page after page, passing each page's `--cursor`
    /// to the next, and returns the first column of every row (the job ids), in order. Nil when
    /// a page fails, with that page's result.
    public func listAllPages(_ arguments: [String]) async throws -> (ids: [String], failure: ProcessResult?) {
        var ids: [String] = []
        var cursor: [String] = []
        repeat {
            let page = try await ferry(["jobs", "list", name] + arguments + cursor)
            if page.status != 0 { return (ids, page) }
            ids += page.lines.dropFirst().filter { !$0.hasPrefix("more:") }.compactMap {
                $0.split(separator: " ").first.map(String.init)
            }
            cursor =
                page.lines.last { $0.hasPrefix("more: ") }.map { ["--cursor", String($0.dropFirst("more: --cursor ".count))] }
                ?? []
        } while !cursor.isEmpty
        return (ids, nil)
    }
}
