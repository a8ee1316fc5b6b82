import ArgumentParser
import Ferry
import FerryAPI
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// `ferry serve`: the HTTP API (docs/openapi.yaml) in front of the queues of one Redis.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the HTTP API: publish, job status, listing, cancel, retry, dead letters, workflows.",
        discussion: """
            Requests need an API key (ferry api-key create) unless --no-auth, which is allowed on loopback only; \
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

    @OptionGroup var redis: RedisOptions

    func validate() throws {
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be 0 to 65535 (got \(port))") }
        guard maxBodyBytes > 0 else { throw ValidationError("--max-body-bytes must be positive (got \(maxBodyBytes))") }
        if insecureNoAuth && !noAuth { throw ValidationError("--insecure-no-auth goes with --no-auth") }
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
        let logger = Logger(label: "ferry.api")
        let connection = try await redis.connect(clientName: "ferry-serve")
        if noAuth {
            logger.warning("serving without authentication: every caller may publish, read, cancel and retry")
        }
        let application = try APIServer.application(
            configuration: configuration, connection: connection, logger: logger,
            onListening: { [host] port in
                FileHandle.standardOutput.writeBestEffort(
                    "listening on http://\(host.contains(":") ? "[\(host)]" : host):\(port)\n")
            })
        let group = ServiceGroup(
            configuration: .init(services: [application], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
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
