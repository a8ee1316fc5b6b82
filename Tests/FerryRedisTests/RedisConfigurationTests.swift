import FerryRedis
import Testing

@Suite("Redis URLs")
struct RedisConfigurationTests {
    @Test("redis:// URLs with user, password, port and database")
    func tcpURLs() throws {
        let full = try RedisConfiguration(url: "redis://alice:p%40ss@redis.internal:6380/2")
        #expect(full.endpoint == .tcp(host: "redis.internal", port: 6380))
        #expect(full.username == "alice")
        #expect(full.password == "p@ss")
        #expect(full.database == 2)
        #expect(full.redactedURL == "redis://alice:***@redis.internal:6380/2")
        for printed in ["\(full)", String(reflecting: full)] {
            #expect(!printed.contains("p@ss") && !printed.contains("p%40ss"), "\(printed)")
        }

        let passwordOnly = try RedisConfiguration(url: "redis://:secret@127.0.0.1")
        #expect(passwordOnly.username == nil)
        #expect(passwordOnly.password == "secret")
        #expect(passwordOnly.endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(passwordOnly.database == 0)

        let ipv6 = try RedisConfiguration(url: "redis://[::1]:7000")
        #expect(ipv6.endpoint == .tcp(host: "::1", port: 7000))
        #expect(ipv6.redactedURL == "redis://[::1]:7000/0")
    }

    @Test("unix:// socket URLs")
    func unixURLs() throws {
        let plain = try RedisConfiguration(url: "unix:///var/run/redis/redis.sock")
        #expect(plain.endpoint == .unixSocket(path: "/var/run/redis/redis.sock"))
        let withDatabase = try RedisConfiguration(url: "unix:///tmp/r.sock?db=4")
        #expect(withDatabase.database == 4)
    }

    @Test(
        "bad URLs are refused with a reason, never echoing the URL",
        arguments: [
            ("http://localhost:6379", "unknown scheme"),
            ("redis://:pw@host:99999", "out of range"),
            ("redis://host:6379/notanumber", "database"),
            ("rediss://user:topsecret@host:6380", "stunnel"),
            ("not a url at all", "expected redis://"),
            ("unix://", "socket path"),
        ])
    func badURLs(url: String, reason: String) {
        #expect {
            try RedisConfiguration(url: url)
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.kind == .invalidConfiguration && error.message.contains(reason)
                && !error.message.contains("topsecret")
        }
    }
}
