import ArgumentParser
import Ferry
import FerryRedis
import Foundation

/// `--redis URL`, shared by every subcommand that talks to Redis.
struct RedisOptions: ParsableArguments {
    @Option(
        name: .customLong("redis"),
        help: ArgumentHelp(
            "Redis URL: redis://[user:password@]host:port/db or unix:///path/to/socket.",
            discussion:
                "Defaults to $FERRY_REDIS_URL, then \(RedisConfiguration.defaultURL). Prefer the environment variable for URLs with a password: command lines are visible to other users.",
            valueName: "url"))
    var url: String?

    /// The URL from the flag, the environment, or the default, in that order.
    var resolvedURL: String {
        url ?? ProcessInfo.processInfo.environment["FERRY_REDIS_URL"].flatMap { $0.isEmpty ? nil : $0 }
            ?? RedisConfiguration.defaultURL
    }

    /// A connection that has already dialled, so an unreachable Redis or a wrong password is
    /// reported before any other work.
    func connect(clientName: String) async throws -> RedisConnection {
        var configuration = try RedisConfiguration(url: resolvedURL)
        configuration.clientName = clientName
        let connection = RedisConnection(configuration: configuration)
        try await connection.connect()
        return connection
    }
}

extension RedisConnection {
    /// Sends `command`; a Redis error with `prefix` (a missing group, say) becomes `error`, which
    /// tells the user what to do instead of repeating Redis's words and maps to the right exit code.
    @discardableResult
    nonisolated func send(
        _ command: RedisCommand, translating prefix: RedisErrorPrefix, into error: @autoclosure () -> Ferry.FerryError
    ) async throws -> RedisReply {
        do throws(RedisError) {
            return try await send(command)
        } catch let redisError {
            guard redisError.prefix == prefix else { throw redisError }
            throw error()
        }
    }
}
