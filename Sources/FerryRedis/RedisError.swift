/// Why a Redis call failed, keeping what Redis said so callers can match on it.
///
/// Two families matter to callers: the server answered with an error (``Kind/server``, with its
/// ``prefix`` such as `NOGROUP` or `OOM`), or the exchange itself failed (connection refused or lost,
/// a timeout, a protocol error). After an exchange failure the connection is re-dialled before the
/// next command, because a late reply would otherwise be read as the answer to the next one.
///
/// Messages never contain credentials: endpoints are printed with the password redacted, and
/// commands are named by their first word only, never their arguments.
public struct RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The family of failure, extensible without breaking `switch`es that use `default`.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        /// Redis answered with an error reply; see ``RedisError/prefix``.
        public static let server = Kind(name: "server")
        /// The TCP or Unix socket connection could not be opened.
        public static let connectionFailed = Kind(name: "connectionFailed")
        /// The connection broke mid-exchange (reset, EOF, write error).
        public static let connectionLost = Kind(name: "connectionLost")
        /// No reply arrived within the command timeout.
        public static let timeout = Kind(name: "timeout")
        /// Redis sent bytes hiredis could not parse.
        public static let protocolError = Kind(name: "protocolError")
        /// The Redis URL or another setting is malformed; nothing was sent.
        public static let invalidConfiguration = Kind(name: "invalidConfiguration")
        /// The connection was closed by its owner.
        public static let closed = Kind(name: "closed")
    }

    /// What kind of failure this is.
    public var kind: Kind
    /// For ``Kind/server`` errors: the first word of Redis's reply (`NOGROUP`, `BUSYGROUP`, `ERR`, …).
    public var prefix: RedisErrorPrefix?
    /// What went wrong and, where Ferry knows, what to do about it.
    public var message: String
    /// For I/O failures: the `errno` the socket call reported.
    public var errno: Int32?
    /// The command's name (first argument only), when the failure belongs to a command.
    public var command: String?
    /// The endpoint, with any password redacted.
    public var endpoint: String?

    /// For failures found on the client side; replies from Redis go through ``server(_:command:endpoint:)``.
    public init(
        kind: Kind, prefix: RedisErrorPrefix? = nil, message: String, errno: Int32? = nil,
        command: String? = nil, endpoint: String? = nil
    ) {
        self.kind = kind
        self.prefix = prefix
        self.message = message
        self.errno = errno
        self.command = command
        self.endpoint = endpoint
    }

    /// Builds a server error from the text of an error reply, splitting off its prefix.
    public static func server(_ reply: String, command: String? = nil, endpoint: String? = nil) -> RedisError {
        let prefix = reply.prefix { $0 != " " }
        let isPrefix = !prefix.isEmpty && prefix.allSatisfy { $0.isUppercase || $0.isNumber || $0 == "_" }
        return RedisError(
            kind: .server, prefix: isPrefix ? RedisErrorPrefix(String(prefix)) : nil,
            message: reply, command: command, endpoint: endpoint)
    }

    /// True when the same command may succeed if tried again later, unchanged.
    ///
    /// Exchange failures are retryable (the connection is re-dialled), and so are the server
    /// states that pass: `LOADING` (a restart is reading its data), `BUSY` (a script is running),
    /// `READONLY` (a failover is promoting a replica), `TRYAGAIN`, `MASTERDOWN` and
    /// `CLUSTERDOWN`. Everything else, such as `WRONGPASS` or `NOGROUP`, needs a change first.
    public var isRetryable: Bool {
        switch kind {
        case .connectionFailed, .connectionLost, .timeout, .protocolError: return true
        case .server: return prefix.map(RedisErrorPrefix.retryable.contains) ?? false
        default: return false
        }
    }

    /// True when the connection could not reach Redis or lost it.
    public var isConnectionProblem: Bool {
        [.connectionFailed, .connectionLost, .timeout, .protocolError, .closed].contains(kind)
    }

    public var description: String {
        var text = message
        if let command { text = "\(command): \(text)" }
        if let endpoint { text += " (\(endpoint))" }
        return text
    }
}

/// The first word of a Redis error reply, as a value to match on:
/// `catch let error as RedisError where error.prefix == .noGroup`.
public struct RedisErrorPrefix: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// A prefix Ferry has no constant for: `RedisErrorPrefix("NOREPLICAS")`.
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// A generic error: usually a bad command or argument.
    public static let err = RedisErrorPrefix("ERR")
    /// A key holds another type: something else wrote under `ferry:`.
    public static let wrongType = RedisErrorPrefix("WRONGTYPE")
    /// The stream or the consumer group is missing (deleted, or Redis lost its data).
    public static let noGroup = RedisErrorPrefix("NOGROUP")
    /// `XGROUP CREATE` of a group that exists.
    public static let busyGroup = RedisErrorPrefix("BUSYGROUP")
    /// Redis is loading its dataset after a restart: try again shortly.
    public static let loading = RedisErrorPrefix("LOADING")
    /// A script is running too long; Redis answers nothing else until it ends.
    public static let busy = RedisErrorPrefix("BUSY")
    /// Redis is at `maxmemory` and will not store more: reads and deletes still work.
    public static let oom = RedisErrorPrefix("OOM")
    /// A replica was written to: after a failover, the connection points at the old primary.
    public static let readOnly = RedisErrorPrefix("READONLY")
    /// Redis wants a password and none was sent.
    public static let noAuth = RedisErrorPrefix("NOAUTH")
    /// The user name or password is wrong, or the user is disabled.
    public static let wrongPass = RedisErrorPrefix("WRONGPASS")
    /// The ACL user may not run the command or touch the key.
    public static let noPerm = RedisErrorPrefix("NOPERM")
    /// `EVALSHA` of a script Redis does not hold (after a restart): send `EVAL`.
    public static let noScript = RedisErrorPrefix("NOSCRIPT")
    /// Redis Cluster: the keys are mid-migration; try again shortly.
    public static let tryAgain = RedisErrorPrefix("TRYAGAIN")
    /// A replica lost its primary and serves no stale data.
    public static let masterDown = RedisErrorPrefix("MASTERDOWN")
    /// Redis Cluster cannot serve the slot: a failover or an outage.
    public static let clusterDown = RedisErrorPrefix("CLUSTERDOWN")
    /// Redis Cluster: the slot lives on another node now (followed by ``RedisConnection``).
    public static let moved = RedisErrorPrefix("MOVED")
    /// Redis Cluster: during a migration, this key is already on the target node (followed too).
    public static let ask = RedisErrorPrefix("ASK")

    /// Prefixes of states that pass on their own; see ``RedisError/isRetryable``.
    public static let retryable: Set<RedisErrorPrefix> = [
        .loading, .busy, .readOnly, .tryAgain, .masterDown, .clusterDown,
    ]
}
