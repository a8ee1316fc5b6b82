import Synchronization

/// A ``Publisher`` for many concurrent callers, such as an HTTP server's requests: the jobs of
/// calls that arrive while a round trip is in flight go together in the next one (group commit,
/// as the worker's acknowledgements do), so a busy server pays one Redis round trip, one hop to
/// the connection's thread and one script call for many requests instead of one each. A lone
/// call waits for no timer.
///
/// Each call keeps its own outcome: a call whose jobs break a rule, or that a bounded queue
/// refuses, fails alone while the others' jobs are published. Calls are combined only where
/// that is all-or-none in Redis (immediate jobs, together at most one pipelined chunk: one
/// `publish_batch` script or one pipeline of `XADD`s); a combined write that is refused as a
/// whole is published again call by call, and a Redis failure is every combined call's.
public final class SharedPublisher: Sendable {
    /// The publisher every call goes through.
    public let publisher: Publisher
    private let commits: GroupCommit<[JobMessage], Result<[PublishReceipt], FerryError>>
    private let counts = Counts()
    /// How many writes carried more than one call's jobs (refused ones too), since this publisher
    /// was made.
    var combinedWrites: Int { counts.combinedWrites.load(ordering: .relaxed) }

    private final class Counts: Sendable {
        let combinedWrites = Atomic(0)
    }

    /// - Parameter publisher: a long-lived publisher of the queue (its connection carries the
    ///   combined round trips).
    public init(_ publisher: Publisher) {
        self.publisher = publisher
        let counts = counts
        commits = GroupCommit { calls in await Self.publish(calls, with: publisher, counting: counts) }
    }

    /// Publishes `jobs` (in order, in one step with other callers' jobs when it can) and returns
    /// a receipt for each; throws as ``Publisher/publish(_:)-([JobMessage])`` does.
    public func publish(_ jobs: [JobMessage]) async throws(FerryError) -> [PublishReceipt] {
        try await commits.submit(jobs).get()
    }

    /// Publishes one job as ``publish(_:)-([JobMessage])`` does.
    public func publish(_ job: JobMessage) async throws(FerryError) -> PublishReceipt {
        try await publish([job])[0]
    }

    /// The flush: the calls that can go together in one write, then the rest one by one.
    private static func publish(
        _ calls: [[JobMessage]], with publisher: Publisher, counting counts: Counts
    ) async -> [Result<[PublishReceipt], FerryError>] {
        var outcomes = [Result<[PublishReceipt], FerryError>?](repeating: nil, count: calls.count)
        var combined: [Int] = []
        var combinedJobs = 0
        for (index, jobs) in calls.enumerated() {
            do throws(FerryError) {
                for job in jobs { try job.validateForPublishing(maxPayloadBytes: publisher.configuration.maxPayloadBytes) }
            } catch {
                outcomes[index] = .failure(error)
                continue
            }
            let immediate = !jobs.contains { $0.deliverAt != nil || $0.delay != nil }
            if immediate && combinedJobs + jobs.count <= publisher.configuration.pipelineDepth {
                combined.append(index)
                combinedJobs += jobs.count
            }
        }
        if combined.count > 1 {
            do throws(FerryError) {
                counts.combinedWrites.add(1, ordering: .relaxed)
                var receipts = try await publisher.publish(combined.flatMap { calls[$0] })[...]
                for index in combined {
                    outcomes[index] = .success(Array(receipts.prefix(calls[index].count)))
                    receipts = receipts.dropFirst(calls[index].count)
                }
            } catch let error where error.code == .queueFull {
                // Refused as a whole by the bounds, nothing written: each call on its own below.
                // (Every job was validated above, so no other refusal can come from a write.)
            } catch {
                for index in combined { outcomes[index] = .failure(error) }
            }
        }
        for index in calls.indices where outcomes[index] == nil {
            do throws(FerryError) {
                outcomes[index] = .success(try await publisher.publish(calls[index]))
            } catch {
                outcomes[index] = .failure(error)
            }
        }
        return outcomes.map { $0! }
    }
}
