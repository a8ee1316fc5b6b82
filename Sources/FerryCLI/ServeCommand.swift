import ArgumentParser
import Ferry
import FerryAPI
import FerryAdmin
import FerryRedis
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals

/// `ferry serve`: the HTTP API (docs/openapi.yaml) in front of the queues of one Redis.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the HTTP API: publish, job status, listing, cancel, retry, dead letters, workflows.",
        discussion: """
            Requests need an API key (ferry api-key create), or a JWT when a JWT key is given (--jwt-secret-file for \
            HS256, --jwt-public-key for RS256/ES256, --jwt-jwks for a JWKS document), unless --no-auth, which is allowed on loopback only; \
            --insecure-no-auth allows it anywhere (behind a proxy that authenticates). The API is described at \
            /v1/openapi.json; /healthz answers ok. Prints "listening on http://HOST:PORT" once it listens. SIGTERM or \
            SIGINT finishes the requests in flight and stops.
            """)

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on (0 picks a free one).")
    var port = 8080

    @Flag(help: "Ask for no API key: every caller may do everything. Loopback only.")
    var noAuth = false

    @Flag(help: "With --no-auth, listen beyond loopback anyway (a proxy in front authenticates).")
    var insecureNoAuth = false

    @Option(help: "The largest request body in bytes; larger ones are answered 413.")
    var maxBodyBytes = 2 * 1_048_576

    @Option(help: "The largest job payload in bytes (payloads over 64 KiB go by reference).")
    var maxPayloadBytes = WireFormat.defaultMaxPayloadBytes

    @Option(help: "A file holding the HS256 secret (at least 32 bytes) JWTs are signed with.")
    var jwtSecretFile: String?

    @Option(help: "A PEM file with the RS256 or ES256 (P-256) public key JWTs are signed with.")
    var jwtPublicKey: String?

    @Option(help: "A JWKS document (JSON file) whose keys JWTs are signed with, chosen by kid.")
    var jwtJwks: String?

    @Option(help: "The iss a JWT must have.")
    var jwtIssuer: String?

    @Option(help: "A value a JWT's aud must include.")
    var jwtAudience: String?

    @Flag(help: "A JWT's subject is every job's flow-control key: per-key limits hold per caller.")
    var jwtSubjectIsKey = false

    @Option(
        help: ArgumentHelp(
            "A per-caller rate limit: N/PERIOD for every route class, or CLASS=N/PERIOD (publish, read, poll, admin); repeatable.",
            valueName: "[class=]rate"))
    var rateLimit: [String] = []

    @Option(parsing: .unconditional, help: "Connections to Redis that requests take turns on.")
    var redisConnections = 4

    @Flag(help: "Mark the dashboard's cookies Secure (browsers send them over HTTPS only): behind TLS.")
    var secureCookies = false

    @Flag(
        help:
            "Answer a reused Idempotency-Key with 409 naming the first job, even with the same body (default: the first job's answer again)."
    )
    var rejectDuplicates = false

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        guard (1...64).contains(redisConnections) else {
            throw ValidationError("--redis-connections must be 1 to 64 (got \(redisConnections))")
        }
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be 0 to 65535 (got \(port))") }
        guard maxBodyBytes > 0 else { throw ValidationError("--max-body-bytes must be positive (got \(maxBodyBytes))") }
        if insecureNoAuth && !noAuth { throw ValidationError("--insecure-no-auth goes with --no-auth") }
        let hasJWTKey = jwtSecretFile != nil || jwtPublicKey != nil || jwtJwks != nil
        if noAuth && hasJWTKey { throw ValidationError("--no-auth and a JWT key contradict each other: choose one") }
        if !hasJWTKey && (jwtIssuer != nil || jwtAudience != nil || jwtSubjectIsKey) {
            throw ValidationError(
                "--jwt-issuer, --jwt-audience and --jwt-subject-is-key need a JWT key (--jwt-secret-file, --jwt-public-key or --jwt-jwks)"
            )
        }
    }

    /// The JWT settings from the flags, reading the key files; nil with no JWT key.
    func jwtConfiguration() throws -> JWTAuthenticator.Configuration? {
        guard jwtSecretFile != nil || jwtPublicKey != nil || jwtJwks != nil else { return nil }
        func contents(_ path: String, _ flag: String) throws -> Data {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ValidationError("\(flag) \(path): cannot read the file")
            }
            return data
        }
        var jwt = JWTAuthenticator.Configuration()
        if let path = jwtSecretFile {
            // A trailing newline (echo, an editor) is not part of the secret.
            var secret = try contents(path, "--jwt-secret-file")
            while let last = secret.last, last == 0x0A || last == 0x0D { secret.removeLast() }
            jwt.secret = Array(secret)
        }
        if let path = jwtPublicKey { jwt.publicKeyPEM = String(decoding: try contents(path, "--jwt-public-key"), as: UTF8.self) }
        if let path = jwtJwks { jwt.jwksJSON = String(decoding: try contents(path, "--jwt-jwks"), as: UTF8.self) }
        jwt.issuer = jwtIssuer
        jwt.audience = jwtAudience
        jwt.subjectIsKey = jwtSubjectIsKey
        return jwt
    }

    func run() async throws {
        LogOutput.json.bootstrap()
        var configuration = APIServer.Configuration()
        configuration.host = host
        configuration.port = port
        configuration.requiresAuthentication = !noAuth
        configuration.insecureNoAuth = insecureNoAuth
        configuration.maxBodyBytes = maxBodyBytes
        configuration.publishing.maxPayloadBytes = maxPayloadBytes
        configuration.jwt = try jwtConfiguration()
        configuration.rateLimits = try APIRateLimits(parsing: rateLimit)
        configuration.secureCookies = secureCookies
        configuration.rejectsDuplicates = rejectDuplicates
        let logger = Logger(label: "ferry.api")
        var redisConfiguration = try redis.configuration()
        redisConfiguration.clientName = "ferry-serve"
        let connections = RedisConnectionPool(configuration: redisConfiguration, size: redisConnections)
        try await connections.connect()
        if noAuth {
            logger.warning("serving without authentication: every caller may publish, read, cancel and retry")
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(FerryMetricsFactory(registry: registry))
        var probeConfiguration = redisConfiguration
        probeConfiguration.clientName = "ferry-serve-probe"
        probeConfiguration.commandTimeout = .seconds(2)
        let application = try await APIServer.application(
            configuration: configuration, connections: connections,
            readiness: ReadinessProbe(connection: RedisConnection(configuration: probeConfiguration, logger: logger)),
            metrics: registry, logger: logger,
            onListening: { [host] port in
                FileHandle.standardOutput.writeBestEffort(
                    "listening on http://\(host.contains(":") ? "[\(host)]" : host):\(port)\n")
            })
        let sampler = QueueHistorySampler(connection: connections.next, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [application, sampler], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            if "\(error)".contains(String(cString: strerror(EADDRINUSE))) {
                throw FerryError(.invalidInput, "port \(port) is in use on \(host): pick another --port (0 picks a free one)")
            }
            throw error
        }
    }
}

/// `ferry api-key`: the keys `ferry serve` accepts.
struct APIKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api-key", abstract: "Create, list and revoke the API keys ferry serve accepts.",
        subcommands: [APIKeyCreateCommand.self, APIKeyListCommand.self, APIKeyRevokeCommand.self])
}

/// `ferry api-key create NAME --scopes publish,read[,admin] [--queues a,b]`.
struct APIKeyCreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create an API key and print it (the only time it is shown).",
        discussion:
            "Scopes: publish (publish jobs, start workflows), read (read everything), admin (cancel, retry, and all else).")

    @Argument(help: "Whom or what the key is for.")
    var name: String

    @Option(help: "Comma-separated scopes: publish, read, admin.")
    var scopes: String

    @Option(help: "Comma-separated queues the key may use (every queue when absent).")
    var queues: String?

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        var chosen: [APIKeys.Scope] = []
        for word in scopes.split(separator: ",") {
            guard let scope = APIKeys.Scope(rawValue: word.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("unknown scope \"\(word)\": use publish, read or admin")
            }
            chosen.append(scope)
        }
        let keys = APIKeys(connection: try await redis.connect(clientName: "ferry-api-key"))
        let queueList = queues.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        let (key, token) = try await keys.create(name: name, scopes: chosen, queues: queueList)
        print(token)
        FileHandle.standardError.write(
            Data("created API key \(key.id) (\(key.name)); the line above is the key, shown this once\n".utf8))
    }
}

/// `ferry api-key list`.
struct APIKeyListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the API keys (never their secrets).")

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        let keys = try await APIKeys(connection: try await redis.connect(clientName: "ferry-api-key")).list()
        printTable(
            [["ID", "NAME", "SCOPES", "QUEUES", "CREATED"]]
                + keys.map { key in
                    [
                        key.id, key.name, key.scopes.map(\.rawValue).joined(separator: ","),
                        key.queues?.joined(separator: ",") ?? "*", Date(millisecondsSince1970: key.createdAt).rfc3339,
                    ]
                })
    }
}

/// `ferry api-key revoke ID`.
struct APIKeyRevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke", abstract: "Revoke an API key: the next request with it is refused.",
        discussion: "Exits 1 when there is no such key.")

    @Argument(help: "The key's id (ferry api-key list).")
    var id: String

    @OptionGroup var redis: RedisOptions

    func run() async throws {
        LogOutput.text.bootstrap()
        guard try await APIKeys(connection: try await redis.connect(clientName: "ferry-api-key")).revoke(id: id) else {
            throw FerryError(.notFound, "no API key \(id); ferry api-key list shows them")
        }
        print("revoked API key \(id)")
    }
}
