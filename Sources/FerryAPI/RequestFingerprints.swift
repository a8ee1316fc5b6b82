import Crypto
import Ferry
import FerryRedis
import Foundation
import Synchronization

/// The request bodies a queue's `Idempotency-Key`s were first used with
/// (`ferry:{Q}:idem:api:<key>`: the body's SHA-256, kept for the dedup window), so the same key
/// with another body is answered 409 naming the first job.
///
/// Each check is one `SET NX GET` (and a `GET` of the job the key published) before the
/// publish; the checks of requests that arrive while a round trip is in flight go together in
/// the next one (``GroupCommit``, as the publishes do in ``SharedPublisher``), so a busy server
/// pays a round trip for many idempotent requests instead of one each. Their order on the
/// connection is their arrival order, so of two requests racing with one key and two bodies, the
/// one checked first wins, as when each had its own round trip.
final class RequestFingerprints: Sendable {
    /// One request's check.
    struct Check: Sendable {
        let idempotencyKey: String
        let fingerprint: String
    }

    /// What Redis said of a check.
    enum Outcome: Sendable {
        /// The key is new (this body is now its first), or was first used with this body.
        case accepted
        /// The key was first used with another body; the job it published, when known.
        case conflict(jobID: String?)
        case failed(RedisError)
    }

    let keys: QueueKeys
    private let checks: GroupCommit<Check, Outcome>
    private let counts = Counts()
    /// How many round trips carried more than one request's check, since this was made.
    var combinedRoundTrips: Int { counts.combined.load(ordering: .relaxed) }

    private final class Counts: Sendable {
        let combined = Atomic(0)
    }

    /// - Parameters:
    ///   - connection: carries the checks' round trips.
    ///   - window: how long a first body is kept (the publish's dedup window).
    init(queue: QueueName, connection: RedisConnection, window: Duration) {
        let keys = QueueKeys(queue: queue)
        self.keys = keys
        let counts = counts
        checks = GroupCommit { checks in
            if checks.count > 1 { counts.combined.add(1, ordering: .relaxed) }
            return await Self.run(checks, keys: keys, window: window, on: connection)
        }
    }

    /// Records `fingerprint` as the key's first body, or refuses the request when the key was
    /// first used with another (409 naming that job).
    func check(_ fingerprint: String, idempotencyKey: String) async throws {
        switch await checks.submit(Check(idempotencyKey: idempotencyKey, fingerprint: fingerprint)) {
        case .accepted: return
        case .failed(let error): throw error
        case .conflict(let jobID):
            throw APIProblem(
                .conflict,
                "the Idempotency-Key was used with another request body\(jobID.map { " (job \($0))" } ?? ""); use a new key for a new job",
                jobID: jobID)
        }
    }

    /// A request body's fingerprint: the SHA-256 of its JSON with sorted keys, as every
    /// `ferry serve` of this format computes it (the value outlives a restart).
    static func fingerprint(of body: Components.Schemas.NewJob) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return SHA256.hash(data: try encoder.encode(body)).hexText
    }

    /// One pipeline for the batch, two commands a check, in the checks' order.
    private static func run(
        _ checks: [Check], keys: QueueKeys, window: Duration, on connection: RedisConnection
    ) async -> [Outcome] {
        var commands: [RedisCommand] = []
        commands.reserveCapacity(checks.count * 2)
        for check in checks {
            commands.append(
                RedisCommand(
                    "SET",
                    [
                        .string(keys.apiRequestFingerprint(idempotencyKey: check.idempotencyKey)), .string(check.fingerprint),
                        "NX", "GET", "PX", .integer(window.milliseconds),
                    ]))
            commands.append(RedisCommand("GET", [.string(keys.publishDedup(idempotencyKey: check.idempotencyKey))]))
        }
        let replies: [RedisReply]
        do throws(RedisError) {
            replies = try await connection.pipeline(commands)
        } catch {
            return checks.map { _ in .failed(error) }
        }
        return checks.indices.map { index in
            let set = replies[2 * index]
            if case .error(let message) = set {
                return .failed(RedisError.server(message, command: "SET", endpoint: connection.configuration.redactedURL))
            }
            if let first = set.string, first != checks[index].fingerprint {
                return .conflict(jobID: replies[2 * index + 1].string)
            }
            return .accepted
        }
    }
}
