import Ferry
import FerryRedis
import Foundation
import OpenAPIRuntime

/// `GET /v1/queues/{queue}/events`: the queue's event stream (``QueueEvents``) as server-sent
/// events.
extension APIHandlers {
    /// How often a stream looks for new events, and sends a ping when there were none for long.
    static let eventPollInterval: Duration = .milliseconds(250)
    static let eventPingInterval: Duration = .seconds(15)
    static let longestEventStream: Duration = .seconds(3600)

    func streamEvents(_ input: Operations.StreamEvents.Input) async throws -> Operations.StreamEvents.Output {
        let queue = try queueName(input.path.queue)
        let events = QueueEvents(queue: queue, connection: connection)
        guard try await events.isEnabled() else {
            throw APIProblem(.conflict, "events are off for queue \(queue): turn them on with ferry queue events \(queue) on")
        }
        let timeout = try input.query.timeout.map { try Self.duration($0, field: "timeout") } ?? .seconds(300)
        guard timeout <= Self.longestEventStream else {
            throw APIProblem(.invalidRequest, "timeout is at most 1h; got \(input.query.timeout ?? "")")
        }
        let resumeAfter = input.headers.lastEventID ?? input.query.after
        if let resumeAfter, resumeAfter.wholeMatch(of: /[0-9]{1,20}-[0-9]{1,20}/) == nil {
            throw APIProblem(
                .invalidRequest, "\"\(resumeAfter)\" is not an event id (such as 1700000000000-0, or 0-0 for the oldest kept)")
        }
        let (oldest, newest) = try await events.bounds()
        // A resume from before the oldest kept event may have missed trimmed ones.
        let gap =
            resumeAfter.map { after in
                after != "0-0" && oldest.map { !StreamEntry.isID($0, atOrBefore: after) } == true
            } ?? false
        let start = resumeAfter ?? newest ?? "0-0"
        let (group, jobID) = (input.query.group, input.query.jobId)
        let ownKey = APIClient.current.jobKey
        let connection = connection
        let stream = AsyncThrowingStream<ServerSentEventWithJSONData<Components.Schemas.JobEvent>, any Error> { continuation in
            let producer = Task {
                do {
                    var owner = ownKey.map { EventOwners(key: $0, queue: queue, connection: connection) }
                    if gap { continuation.yield(.init(event: "gap", data: nil, id: start)) }
                    var last = start
                    let deadline = ContinuousClock.now + timeout
                    var quietSince = ContinuousClock.now
                    while !Task.isCancelled && ContinuousClock.now < deadline {
                        let batch = try await events.read(after: last, count: 500)
                        let owned = try await owner?.owned(batch.map(\.jobID))
                        for event in batch
                        where (group == nil || event.group == nil || event.group == group)
                            && (jobID == nil || event.jobID == jobID) && (owned?.contains(event.jobID) ?? true)
                        {
                            continuation.yield(.init(event: "job", data: Self.jobEvent(event), id: event.id))
                            quietSince = .now
                        }
                        if let newest = batch.last { last = newest.id }
                        if ContinuousClock.now - quietSince >= Self.eventPingInterval {
                            continuation.yield(.init(event: "ping", data: nil))
                            quietSince = .now
                        }
                        if batch.count < 500 { try await Task.sleep(for: Self.eventPollInterval) }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in producer.cancel() }
        }
        return .ok(
            .init(
                body: .textEventStream(
                    HTTPBody(
                        stream.asEncodedServerSentEventsWithJSONData(encoder: Self.eventEncoder), length: .unknown,
                        iterationBehavior: .single))))
    }

    /// JSON as the rest of the API writes it: RFC 3339 times, keys in a fixed order.
    static let eventEncoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    static func jobEvent(_ event: QueueEvents.Event) -> Components.Schemas.JobEvent {
        .init(
            jobId: event.jobID, group: event.group,
            state: event.refusal != nil ? .refused : event.state.flatMap { .init(rawValue: $0.rawValue) } ?? .queued,
            from: event.from.flatMap { .init(rawValue: $0.rawValue) }, at: event.at, reason: event.refusal)
    }
}

/// Which jobs of an event stream are a keyed caller's (``APIClient/jobKey``): their status
/// keeps their `key` (a keyed caller's jobs always have ids, so a status). Each job's answer is
/// kept for the stream's life, so a job is looked up once (one pipelined `HGET` per new job in
/// a batch), however many events it has.
struct EventOwners {
    let key: String
    let keys: QueueKeys
    let connection: RedisConnection
    /// Jobs looked up, and whether each is the caller's (cleared past 100,000: a long stream
    /// over a busy queue looks some up again rather than grow).
    private var known: [String: Bool] = [:]

    init(key: String, queue: QueueName, connection: RedisConnection) {
        self.key = key
        self.keys = QueueKeys(queue: queue)
        self.connection = connection
    }

    /// The caller's jobs among `jobIDs`.
    mutating func owned(_ jobIDs: [String]) async throws -> Set<String> {
        let unknown = Array(Set(jobIDs.filter { known[$0] == nil }))
        if !unknown.isEmpty {
            if known.count + unknown.count > 100_000 { known.removeAll() }
            let replies = try await connection.pipeline(
                unknown.map { RedisCommand("HGET", [.string(keys.jobStatus(jobID: $0)), "key"]) })
            for (jobID, reply) in zip(unknown, replies) { known[jobID] = reply.string == key }
        }
        return Set(jobIDs.filter { known[$0] == true })
    }
}
