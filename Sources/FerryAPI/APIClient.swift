import Ferry
import Foundation

/// Who is calling: the API key (or JWT subject) a request authenticated as, its scopes and the
/// queues it may see. The authentication middleware sets it for the request's task; the
/// handlers read it (``current``) to filter what they show.
struct APIClient: Sendable {
    /// Who it is in a message: `API key NAME`, `token subject SUB`, or `anonymous` without authentication.
    var name: String
    /// What its rate limits are counted by: `key:<id>`, `sub:<subject>`, or `anonymous`.
    var identity: String
    /// What it may do.
    var scopes: Set<APIKeys.Scope>
    /// The queues it may see; nil for every queue.
    var queues: Set<String>?
    /// The flow-control key every job it publishes has (a JWT's subject, with
    /// `--jwt-subject-is-key`); nil when jobs name their own.
    var jobKey: String? = nil
    /// When its credential stops being accepted (a JWT's `exp`); nil for an API key, which
    /// lasts until revoked. A dashboard session made from it ends then too.
    var expiresAt: Date? = nil

    /// Everything, for a server run with `--no-auth`.
    static let unrestricted = APIClient(
        name: "anonymous", identity: "anonymous", scopes: Set(APIKeys.Scope.allCases), queues: nil)

    /// The caller of the request this task serves.
    @TaskLocal static var current = APIClient(name: "nobody", identity: "nobody", scopes: [], queues: [])

    /// Whether it may do what `scope` allows (`admin` may do everything).
    func may(_ scope: APIKeys.Scope) -> Bool { scopes.contains(scope) || scopes.contains(.admin) }

    /// Whether it may see `queue`.
    func sees(_ queue: String) -> Bool { queues?.contains(queue) ?? true }

    /// Whether it may see a job whose status says `key` (its flow-control key): every job, unless
    /// the caller is scoped to its own (``jobKey``).
    func owns(jobKey key: String?) -> Bool { jobKey == nil || key == jobKey }
}
