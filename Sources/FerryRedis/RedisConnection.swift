import CHiredis
import Foundation
import Logging

/// One connection to Redis over hiredis's blocking API, on a thread of its own.
///
/// The actor runs on a ``BlockingThreadExecutor``, so hiredis may block in `read(2)` without
/// stalling Swift's cooperative pool; callers simply `await`. Commands are serialised: use one
/// connection per concurrent activity (a worker reads on one and acks on another, so an ack never
/// waits behind a blocked `XREADGROUP`).
///
/// The connection dials lazily, on the first command. A connection that sees an I/O error, a
/// timeout or a protocol error is closed at once, because a late reply would otherwise be read as
/// the answer to the next command; the next command re-dials, waiting out a capped exponential
/// backoff after failed dials. The failing command itself throws: it is never retried silently,
/// since Redis may already have applied it.
///
/// Against Redis Cluster, the connection follows redirections: a `MOVED` reply moves the
/// connection to the node it names and sends the command there (a queue's keys share one hash
/// slot, `{queue}`, so one node serves all of a queue's commands); an `ASK` reply, seen while a
/// slot migrates, sends `ASKING` and the command to the importing node once, on a connection of
/// its own. Neither reply means the command ran, so resending is safe. Should the node a `MOVED`
/// named stop answering, the next dial goes back to the configured one, which knows the new layout.
public actor RedisConnection {
    /// Where and how this connection dials.
    public nonisolated let configuration: RedisConfiguration

    private let executor: BlockingThreadExecutor
    private var logger: Logger
    private var context: HiredisContext?
    private var socketTimeout: Duration?
    private var failedDials = 0
    private var nextDialAllowed: ContinuousClock.Instant?
    private var isClosed = false
    /// The cluster node a `MOVED` reply named, dialled instead of the configured endpoint.
    private var redirectedEndpoint: RedisConfiguration.Endpoint?
    /// The context was dropped to follow a `MOVED`, not after a failure: the next dial is no reconnection.
    private var followingMove = false
    /// Function libraries this connection's Redis would not load or call (an ACL without
    /// `FUNCTION LOAD` or `FCALL`): their scripts go as `EVALSHA` from then on.
    private var refusedLibraries: Set<RedisFunctionLibrary> = []
    /// Redirections one call follows before it returns the `MOVED` or `ASK` reply as it is: a
    /// cluster in the middle of resharding may redirect more than once, never for long.
    private static let maximumRedirections = 5
    /// How many times this connection has been dialled successfully; visible for tests and metrics.
    public private(set) var dialCount = 0

    /// hiredis writes with plain `write(2)`: when Redis has closed the socket, the kernel raises
    /// SIGPIPE, whose default action kills the process. Ignoring it process-wide (once, before the
    /// first connection) turns that into an `EPIPE` error, reported as ``RedisError/Kind/connectionLost``.
    /// Every hiredis application has to do this; a process that installed its own handler keeps it.
    private static let brokenPipesIgnored: Void = ferry_ignore_sigpipe_if_default()

    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        executor.asUnownedSerialExecutor()
    }

    /// Creates a connection; nothing is dialled until the first command (or ``connect()``).
    public init(configuration: RedisConfiguration, logger: Logger = Logger(label: "ferry.redis")) {
        _ = Self.brokenPipesIgnored
        self.configuration = configuration
        self.executor = BlockingThreadExecutor(name: "ferry-redis")
        self.logger = logger
        self.logger[metadataKey: "redis.endpoint"] = "\(configuration.redactedURL)"
    }

    /// Creates a connection from a URL such as `redis://user:pass@host:6379/0`.
    public init(url: String, logger: Logger = Logger(label: "ferry.redis")) throws(RedisError) {
        self.init(configuration: try RedisConfiguration(url: url), logger: logger)
    }

    deinit {
        // The context, if any, is freed by HiredisContext's deinit as the stored property goes.
        executor.shutdown()
    }

    /// Dials now, so a wrong URL, password or unreachable server is reported up front.
    public func connect() throws(RedisError) {
        _ = try connectedContext()
    }

    /// Closes the socket and refuses further commands with ``RedisError/Kind/closed``.
    public func close() {
        dropContext()
        isClosed = true
    }

    /// Sends one command and returns its reply.
    ///
    /// - Parameter timeout: how long the socket may wait; defaults to the configured command
    ///   timeout. A blocking command must pass more than its `BLOCK` time.
    /// - Throws: ``RedisError``: a server error reply keeps its ``RedisError/prefix``; exchange
    ///   failures close the connection (see the type's overview).
    @discardableResult
    public func send(_ command: RedisCommand, timeout: Duration? = nil) throws(RedisError) -> RedisReply {
        let reply = try pipeline([command], timeout: timeout)[0]
        if case .error(let message) = reply {
            throw RedisError.server(message, command: command.name, endpoint: configuration.redactedURL)
        }
        return reply
    }

    /// The first replies of a pipeline, handed on as soon as they are read, while Redis may still
    /// be running the commands after them: a pipeline that starts with a read and goes on with
    /// writes lets its caller act on the read meanwhile (the worker starts the jobs it read while
    /// Redis acknowledges the jobs before them).
    public struct EarlyReplies: Sendable {
        /// How many replies, from the first.
        public let count: Int
        /// Runs at most once, on the connection's thread (it must be quick), with the first
        /// `count` replies; never when one of them is an error (which may be a redirection or a
        /// missing script, answered again later) or the exchange fails before they are all read.
        public let deliver: @Sendable ([RedisReply]) -> Void

        /// - Parameters:
        ///   - count: how many replies, from the first, go to `deliver` early.
        ///   - deliver: what takes them (see ``deliver``).
        public init(count: Int, deliver: @escaping @Sendable ([RedisReply]) -> Void) {
            self.count = count
            self.deliver = deliver
        }
    }

    /// Sends every command, then reads every reply: one round trip for the lot.
    ///
    /// Error replies come back in place as ``RedisReply/error(_:)`` so one failed command does not
    /// hide the others' results. An `EVALSHA` built by ``RedisScript`` that meets `NOSCRIPT` (after
    /// a restart or `SCRIPT FLUSH`) is sent again as `EVAL`, and an `FCALL` of a function Redis
    /// does not hold again once its library is loaded: neither error means the script ran.
    ///
    /// - Parameter early: hands the first replies on as soon as they are read (``EarlyReplies``);
    ///   the replies returned hold them too, whether or not it took them.
    /// - Throws: ``RedisError`` when the exchange itself fails; then no reply is returned, and
    ///   any of the commands may or may not have been applied (`early` may have taken the first).
    public func pipeline(
        _ commands: [RedisCommand], timeout: Duration? = nil, early: EarlyReplies? = nil
    ) throws(RedisError) -> [RedisReply] {
        var replies = try exchangeLoadingScripts(commands, timeout: timeout, early: early)
        for _ in 0..<Self.maximumRedirections {
            // Lazily: on the hot path no reply is a redirection, and nothing is built to find that out.
            let current = redirectedEndpoint ?? configuration.endpoint
            let map = configuration.clusterNodeMap
            guard let redirection = replies.lazy.compactMap({ $0.clusterRedirection(from: current, mapping: map) }).first
            else { break }
            // Commands sent together are meant for one slot; any redirected elsewhere wait for the next turn.
            let indices = commands.indices.filter {
                replies[$0].clusterRedirection(from: current, mapping: map) == redirection
            }
            let redirected = indices.map { commands[$0] }
            let retried: [RedisReply]
            if redirection.asking {
                retried = try exchangeAsking(redirected, at: redirection.endpoint, timeout: timeout)
            } else {
                logger.info(
                    "Redis Cluster moved this connection's slot; following it",
                    metadata: ["redis.moved_to": "\(redirection.endpoint)"])
                dropContext()
                redirectedEndpoint = redirection.endpoint == configuration.endpoint ? nil : redirection.endpoint
                followingMove = true
                retried = try exchangeLoadingScripts(redirected, timeout: timeout)
            }
            for (index, reply) in zip(indices, retried) { replies[index] = reply }
        }
        return replies
    }

    /// The primary nodes of the Redis Cluster this connection reaches, each as this connection's
    /// configuration with that node's endpoint, for commands that must visit every node (`SCAN`);
    /// nil when the server is not a cluster node or may not say (`CLUSTER` refused by its ACL).
    public func clusterPrimaries() throws(RedisError) -> [RedisConfiguration]? {
        let reply: RedisReply
        do {
            reply = try send(RedisCommand("CLUSTER", ["NODES"]))
        } catch  where error.kind == .server {
            return nil
        }
        guard let text = reply.string else { return nil }
        // `<id> <host:port@bus[,hostname]> <flags> ...`, one node per line.
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { return nil }
            let flags = fields[2].split(separator: ",")
            guard flags.contains("master"), !flags.contains("fail"), !flags.contains("noaddr"),
                !flags.contains("handshake"),
                let address = fields[1].split(separator: "@").first,
                let endpoint = RedisConfiguration.Endpoint(
                    clusterAddress: address, from: redirectedEndpoint ?? configuration.endpoint,
                    mapping: configuration.clusterNodeMap)
            else { return nil }
            var node = configuration
            node.endpoint = endpoint
            return node
        }
    }

    /// One exchange, plus one more for any script Redis did not have: an `EVALSHA` that met
    /// `NOSCRIPT` goes again as `EVAL`; an `FCALL` of a missing function goes again once its
    /// library is loaded, or as `EVAL` if Redis refuses the library or `FCALL` itself (then the
    /// library's scripts go as `EVALSHA` on this connection from then on). None of those errors
    /// means the script ran.
    private func exchangeLoadingScripts(
        _ commands: [RedisCommand], timeout: Duration?, early: EarlyReplies? = nil
    ) throws(RedisError) -> [RedisReply] {
        let commands =
            refusedLibraries.isEmpty
            ? commands
            : commands.map { command in
                command.script?.library.map(refusedLibraries.contains) == true ? command.evalSHAFallback() : command
            }
        var replies = try exchange(commands, timeout: timeout, early: early)
        let missingScripts = commands.indices.filter { index in
            commands[index].script != nil
                && (replies[index].isNoScriptError || replies[index].isMissingFunctionError
                    || (commands[index].name == "FCALL" && replies[index].isRefusedFunctionCall))
        }
        if !missingScripts.isEmpty {
            var loaded: [RedisFunctionLibrary: Bool] = [:]
            for index in missingScripts where commands[index].name == "FCALL" {
                guard let library = commands[index].script?.library, loaded[library] == nil else { continue }
                if case .error(let message) = replies[index], !replies[index].isMissingFunctionError {
                    refuse(library, message)
                    loaded[library] = false
                } else {
                    loaded[library] = try load(library, timeout: timeout)
                }
            }
            let retried = try exchange(
                missingScripts.map { index in
                    let command = commands[index]
                    return command.script?.library.flatMap { loaded[$0] } == true ? command : command.evalFallback()
                },
                timeout: timeout)
            for (index, reply) in zip(missingScripts, retried) { replies[index] = reply }
        }
        return replies
    }

    /// Loads `library` on this connection's node and keeps at most
    /// ``RedisFunctionLibrary/keptVersions`` of its family there. True when Redis holds it now
    /// (loaded here, or by another client first); false when Redis refused (an ACL without
    /// `FUNCTION LOAD`, say), so its scripts go as `EVALSHA`.
    private func load(_ library: RedisFunctionLibrary, timeout: Duration?) throws(RedisError) -> Bool {
        let reply = try exchange([RedisCommand("FUNCTION LOAD", [.string(library.code)])], timeout: timeout)[0]
        if case .error(let message) = reply, !message.contains("already exists") {
            refuse(library, message)
            return false
        }
        logger.info("Loaded a Redis function library", metadata: ["redis.library": "\(library.name)"])
        // Older releases' libraries: any beyond the kept number go (a release still running loads its own again).
        let listed = try exchange(
            [RedisCommand("FUNCTION LIST", ["LIBRARYNAME", .string(library.family + "_*")])], timeout: timeout)[0]
        let others = (listed.array ?? []).compactMap { entry -> String? in
            guard let fields = entry.array, let at = fields.firstIndex(where: { $0.string == "library_name" }),
                at + 1 < fields.count, let name = fields[at + 1].string,
                name != library.name, name.hasPrefix(library.family + "_")
            else { return nil }
            return name
        }
        let surplus = others.count + 1 - RedisFunctionLibrary.keptVersions
        if surplus > 0 {
            _ = try exchange(others.prefix(surplus).map { RedisCommand("FUNCTION DELETE", [.string($0)]) }, timeout: timeout)
        }
        return true
    }

    /// Remembers that Redis refused `library` (its `FUNCTION LOAD` or `FCALL`), and says so once.
    private func refuse(_ library: RedisFunctionLibrary, _ message: String) {
        refusedLibraries.insert(library)
        logger.warning(
            "Redis refused a function library; its scripts go as EVALSHA on this connection, at more Redis time a call. Grant FCALL and FUNCTION LOAD (ops/redis/users.acl)",
            metadata: ["redis.error": "\(message)", "redis.library": "\(library.name)"])
    }

    /// Sends each command after `ASKING` to the node importing its slot, on a connection dialled
    /// for this alone: `ASK` is answered once, and only while a slot migrates. Scripts go as
    /// `EVAL`, since the importing node may not have them cached.
    private func exchangeAsking(
        _ commands: [RedisCommand], at endpoint: RedisConfiguration.Endpoint, timeout: Duration?
    ) throws(RedisError) -> [RedisReply] {
        let context = try dial(endpoint)
        // The dial's handshake set the remembered socket timeout for that context, not this one's.
        defer { socketTimeout = nil }
        let interleaved = commands.flatMap { command in
            [RedisCommand("ASKING"), command.script != nil ? command.evalFallback() : command]
        }
        let replies = try roundTrip(interleaved, on: context.pointer, timeout: timeout ?? configuration.commandTimeout)
        return stride(from: 1, to: replies.count, by: 2).map { replies[$0] }
    }

    /// The name of the thread running this actor: lets tests prove hiredis stays off the pool.
    func executingThreadName() -> String {
        var name = [CChar](repeating: 0, count: 16)
        ferry_get_thread_name(&name)
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - Exchange

    private func exchange(
        _ commands: [RedisCommand], timeout: Duration?, early: EarlyReplies? = nil
    ) throws(RedisError) -> [RedisReply] {
        if commands.isEmpty { return [] }
        let context = try connectedContext()
        do {
            return try roundTrip(
                commands, on: context.pointer, timeout: timeout ?? configuration.commandTimeout, early: early)
        } catch {
            dropContext()
            logger.info("Redis connection dropped; it will be re-dialled", metadata: ["redis.error": "\(error.message)"])
            throw error
        }
    }

    /// Writes the commands and reads one reply for each, on a context known to be healthy.
    private func roundTrip(
        _ commands: [RedisCommand], on context: UnsafeMutablePointer<redisContext>, timeout: Duration,
        early: EarlyReplies? = nil
    ) throws(RedisError) -> [RedisReply] {
        guard let firstName = commands.first?.name else { return [] }
        if socketTimeout != timeout {
            guard redisSetTimeout(context, ferry_timeval_ms(timeout.milliseconds)) == REDIS_OK else {
                throw failure(of: context, command: firstName, timeout: timeout, savedErrno: Glibc.errno)
            }
            socketTimeout = timeout
        }
        var encoded: [UInt8] = []
        encoded.reserveCapacity(commands.reduce(0) { $0 + $1.body.count + 16 })
        for command in commands { command.write(to: &encoded) }
        let appended = encoded.withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { redisAppendFormattedCommand(context, $0.baseAddress, $0.count) }
        }
        guard appended == REDIS_OK else {
            throw failure(of: context, command: firstName, timeout: timeout, savedErrno: 0)
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for command in commands {
            var reply: UnsafeMutablePointer<redisReply>?
            var savedErrno: Int32 = 0
            guard ferry_redis_get_reply(context, &reply, &savedErrno) == REDIS_OK, let reply else {
                throw failure(of: context, command: command.name, timeout: timeout, savedErrno: savedErrno)
            }
            replies.append(RedisReply(copying: reply))
            freeReplyObject(reply)
            if let early, replies.count == early.count, !replies.contains(where: { $0.errorMessage != nil }) {
                early.deliver(replies)
            }
        }
        return replies
    }

    /// Turns hiredis's error state into a ``RedisError`` that says what happened and what to do.
    private func failure(
        of context: UnsafeMutablePointer<redisContext>, command: String, timeout: Duration, savedErrno: Int32
    ) -> RedisError {
        let detail = String(cString: ferry_redis_errstr(context))
        let endpoint = configuration.redactedURL
        switch context.pointee.err {
        case REDIS_ERR_IO where savedErrno == EAGAIN || savedErrno == EWOULDBLOCK:
            return RedisError(
                kind: .timeout,
                message:
                    "no reply within \(timeout.milliseconds) ms; Redis may be overloaded, paused or unreachable. The connection will be re-dialled",
                errno: savedErrno, command: command, endpoint: endpoint)
        case REDIS_ERR_PROTOCOL:
            return RedisError(
                kind: .protocolError, message: "Redis sent a reply hiredis cannot parse (\(detail)); is this port really Redis?",
                command: command, endpoint: endpoint)
        case REDIS_ERR_EOF:
            return RedisError(
                kind: .connectionLost, message: "Redis closed the connection (it may have restarted, or hit its client limit)",
                command: command, endpoint: endpoint)
        default:
            return RedisError(
                kind: .connectionLost, message: "connection to Redis lost: \(detail)",
                errno: savedErrno == 0 ? nil : savedErrno, command: command, endpoint: endpoint)
        }
    }

    // MARK: - Dialling

    private func connectedContext() throws(RedisError) -> HiredisContext {
        if isClosed {
            throw RedisError(
                kind: .closed, message: "the connection was closed by its owner", endpoint: configuration.redactedURL)
        }
        if let context { return context }
        if let nextDialAllowed {
            let wait = nextDialAllowed - .now
            if wait > .zero { Thread.sleep(forTimeInterval: wait.seconds) }
        }
        do {
            let context = try dial(redirectedEndpoint ?? configuration.endpoint)
            self.context = context
            failedDials = 0
            nextDialAllowed = nil
            dialCount += 1
            if dialCount > 1 && !followingMove { logger.info("Redis connection re-established") }
            followingMove = false
            return context
        } catch {
            failedDials += 1
            nextDialAllowed = .now + reconnectDelay(afterFailures: failedDials)
            if let redirectedEndpoint {
                // After a failover the configured node knows where the slot lives now.
                logger.info(
                    "the cluster node this connection was moved to does not answer; going back to the configured one",
                    metadata: ["redis.moved_to": "\(redirectedEndpoint)"])
                self.redirectedEndpoint = nil
            }
            throw error
        }
    }

    /// Capped exponential backoff with up to 20 % jitter, so many workers do not re-dial in step.
    private func reconnectDelay(afterFailures failures: Int) -> Duration {
        let base = configuration.minimumReconnectDelay * (1 << min(failures - 1, 16))
        let capped = min(base, configuration.maximumReconnectDelay)
        return capped + capped * Double.random(in: 0...0.2)
    }

    private func dial(_ target: RedisConfiguration.Endpoint) throws(RedisError) -> HiredisContext {
        let timeval = ferry_timeval_ms(configuration.connectTimeout.milliseconds)
        let endpoint = target == configuration.endpoint ? configuration.redactedURL : "\(target) (a cluster redirection)"
        let dialled: UnsafeMutablePointer<redisContext>?
        switch target {
        case .tcp(let host, let port): dialled = redisConnectWithTimeout(host, Int32(port), timeval)
        case .unixSocket(let path): dialled = redisConnectUnixWithTimeout(path, timeval)
        }
        guard let dialled else {
            throw RedisError(kind: .connectionFailed, message: "cannot allocate a hiredis context", endpoint: endpoint)
        }
        let context = HiredisContext(dialled)
        if dialled.pointee.err != 0 {
            let detail = String(cString: ferry_redis_errstr(dialled))
            throw RedisError(
                kind: .connectionFailed,
                message:
                    "cannot connect to Redis: \(detail). Is redis-server running, and is the URL (--redis or FERRY_REDIS_URL) right?",
                endpoint: endpoint)
        }
        socketTimeout = nil
        if case .tcp = target { _ = redisEnableKeepAlive(dialled) }
        try handshake(on: dialled)
        return context
    }

    /// AUTH, SELECT and CLIENT SETNAME in one round trip. The AUTH arguments never reach an error message.
    private func handshake(on context: UnsafeMutablePointer<redisContext>) throws(RedisError) {
        var commands: [RedisCommand] = []
        if let password = configuration.password {
            var auth = RedisCommand("AUTH")
            if let username = configuration.username { auth.append(username) }
            auth.append(password)
            commands.append(auth)
        }
        if configuration.database != 0 {
            commands.append(RedisCommand("SELECT", [.integer(Int64(configuration.database))]))
        }
        if let clientName = configuration.clientName {
            commands.append(RedisCommand("CLIENT SETNAME", [.string(clientName)]))
        }
        let replies = try roundTrip(commands, on: context, timeout: configuration.connectTimeout)
        for (command, reply) in zip(commands, replies) {
            guard case .error(let message) = reply else { continue }
            var error = RedisError.server(message, command: command.name, endpoint: configuration.redactedURL)
            switch error.prefix {
            case .wrongPass?, .noAuth?:
                error.message = "authentication failed (\(message)); check the user name and password in the Redis URL"
            default:
                break
            }
            throw error
        }
    }

    private func dropContext() {
        context = nil
        socketTimeout = nil
    }
}

extension RedisReply {
    /// Deep-copies a hiredis reply into Swift values; the caller still frees the original.
    init(copying reply: UnsafePointer<redisReply>) {
        let raw = reply.pointee
        switch raw.type {
        case REDIS_REPLY_STRING:
            self = .bulk(raw.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: raw.str, count: raw.len)))
        case REDIS_REPLY_STATUS:
            self = .status(String(decoding: UnsafeRawBufferPointer(start: raw.str, count: raw.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            self = .error(String(decoding: UnsafeRawBufferPointer(start: raw.str, count: raw.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            self = .integer(raw.integer)
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            elements.reserveCapacity(raw.elements)
            for index in 0..<raw.elements {
                // A NULL element cannot come from a well-formed reply; keep the indices all the same.
                elements.append(raw.element[index].map { RedisReply(copying: $0) } ?? .null)
            }
            self = .array(elements)
        default:
            self = .null
        }
    }

    /// Where a Redis Cluster `MOVED` or `ASK` error reply sends the command, if it is one:
    /// `MOVED 3999 10.0.0.2:6381`, dialled where `mapping` says (``RedisConfiguration/clusterNodeMap``).
    func clusterRedirection(
        from current: RedisConfiguration.Endpoint, mapping: [String: RedisConfiguration.Endpoint] = [:]
    ) -> ClusterRedirection? {
        guard case .error(let message) = self else { return nil }
        let words = message.split(separator: " ")
        guard words.count == 3, words[0] == "MOVED" || words[0] == "ASK",
            let endpoint = RedisConfiguration.Endpoint(clusterAddress: words[2], from: current, mapping: mapping)
        else { return nil }
        return ClusterRedirection(asking: words[0] == "ASK", endpoint: endpoint)
    }

    var isNoScriptError: Bool {
        if case .error(let message) = self { return message.hasPrefix("NOSCRIPT") }
        return false
    }

    /// `FCALL` itself refused by the user's ACL (`NOPERM ... run the 'fcall' command`), not one
    /// of its keys (`NOPERM ... access one of the keys`: the script would be refused them too).
    var isRefusedFunctionCall: Bool {
        if case .error(let message) = self { return message.hasPrefix("NOPERM") && message.contains("'fcall'") }
        return false
    }

    /// `FCALL` of a function Redis does not hold: `ERR Function not found`.
    var isMissingFunctionError: Bool {
        if case .error(let message) = self { return message == "ERR Function not found" }
        return false
    }
}

extension Duration {
    /// The duration in whole milliseconds, rounded down.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// A Redis Cluster redirection: the node to send a command to, and whether only this once (`ASK`).
struct ClusterRedirection: Equatable {
    var asking: Bool
    var endpoint: RedisConfiguration.Endpoint
}

extension RedisConfiguration.Endpoint {
    /// A node's address as Redis Cluster writes it, `host:port` (IPv6 hosts unbracketed; a
    /// bracketed one, as people write it in a node map, is read too). A node that does not know
    /// its own address writes an empty host or `?`: the host of the node that answered,
    /// `current`. An address in `mapping` is dialled where the map says.
    init?(
        clusterAddress address: Substring, from current: RedisConfiguration.Endpoint,
        mapping: [String: RedisConfiguration.Endpoint] = [:]
    ) {
        if let mapped = mapping[String(address)] {
            self = mapped
            return
        }
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            return nil
        }
        var host = String(address[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty || host == "?" {
            guard case .tcp(let currentHost, _) = current else { return nil }
            host = currentHost
        }
        self = .tcp(host: host, port: port)
    }
}
