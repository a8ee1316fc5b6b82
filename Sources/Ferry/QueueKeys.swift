import Crypto

/// The Redis keys of one queue, as the wire format (docs/wire-format.md) names them.
///
/// Every key carries the queue name in braces, a Redis Cluster hash tag: all keys of a queue
/// hash to one slot, so the multi-key scripts stay legal on a cluster. Ids and idempotency keys
/// come from producers in any language, so they enter keys through ``keyComponent(_:)``.
public struct QueueKeys: Sendable, Hashable {
    /// The queue these keys belong to.
    public let queue: QueueName
    /// `ferry:{Q}`: the prefix every key of the queue starts with.
    public let prefix: String
    /// `ferry:{Q}:jobs`: the job stream (the topic).
    public let jobs: String
    /// `ferry:{Q}:dead`: the dead-letter stream.
    public let deadLetter: String
    /// `ferry:{Q}:retry_after`: written by versions before later deliveries (docs/design.md);
    /// no longer read, and left to expire.
    public let retryAfter: String
    /// `ferry:{Q}:cancel_requests`: a sorted set of job ids someone asked to cancel
    /// (`ferry job cancel`), scored by when the request expires (ms since the epoch). Workers
    /// look here once per read batch rather than in each job's status hash.
    public let cancelRequests: String
    /// `ferry:{Q}:retention_lock`: held (`SET NX PX`) by the worker that runs the queue's
    /// retention pass, so two workers do not both trim.
    public let retentionLock: String
    /// `ferry:{Q}:scheduled`: the due index of scheduled jobs, a sorted set of `<job_id>` (key
    /// form) scored by when each is due (ms since the epoch, Redis's clock).
    public let scheduled: String
    /// `ferry:{Q}:paused`: what is paused (`ferry queue pause`): `*` for every group, or a
    /// group's name, to when (ms since the epoch). Absent when nothing is.
    public let paused: String
    /// `ferry:{Q}:settings`: settings every publisher and worker reads (`max_depth`).
    public let settings: String
    /// `ferry:{Q}:events`: the queue's job transitions, capped at about 10,000, while events are
    /// on (``QueueEvents``); absent when they are off.
    public var events: String { prefix + ":events" }
    /// `ferry:{Q}:limits`: the queue's rate and concurrency limits, limit name → JSON
    /// (``QueueLimits``).
    public let limits: String
    /// `ferry:{Q}:cron`: the queue's active cron schedules, a sorted set of names scored by each
    /// one's next tick (ms since the epoch).
    public let cron: String
    /// `ferry:{Q}:meta`: a hash of facts about the queue's keys; `format` is the data format
    /// they are written in (``QueueFormat``).
    public let meta: String
    /// `ferry:{Q}:idx:`: the start of the index of jobs by group and state (``statusIndex(group:state:)``).
    public let statusIndexPrefix: String

    /// The keys of `queue`; nothing is read or written.
    public init(queue: QueueName) {
        self.queue = queue
        self.prefix = "ferry:{\(queue.rawValue)}"
        self.jobs = prefix + ":jobs"
        self.deadLetter = prefix + ":dead"
        self.retryAfter = prefix + ":retry_after"
        self.cancelRequests = prefix + ":cancel_requests"
        self.retentionLock = prefix + ":retention_lock"
        self.scheduled = prefix + ":scheduled"
        self.meta = prefix + ":meta"
        self.cron = prefix + ":cron"
        self.paused = prefix + ":paused"
        self.settings = prefix + ":settings"
        self.limits = prefix + ":limits"
        self.statusIndexPrefix = prefix + ":idx:"
    }

    /// The stream of a priority's lane: ``jobs`` itself for normal, else `ferry:{Q}:jobs:p<level>`.
    public func lane(_ priority: JobPriority) -> String {
        priority == .normal ? jobs : jobs + ":p\(priority.level)"
    }

    /// `ferry:{Q}:jobs:lanes`: the priority levels a publisher has written a lane of (a set of
    /// digits), so workers know which lanes to read.
    public var lanes: String { jobs + ":lanes" }

    /// `ferry:{Q}:payload:<sha256>`: a payload stored by reference (``PayloadReference``).
    public func payload(sha256: String) -> String { prefix + ":payload:" + sha256 }
    /// `ferry:{Q}:succeeded:<minute>`: the packed succeeded statuses of the jobs published in
    /// that minute whose ids are their entry IDs (data format 3, `pack_succeeded` in the
    /// scripts' prelude); nil for a job id that is not an entry ID.
    public func succeededStatuses(entryID: String) -> String? {
        guard let dash = entryID.firstIndex(of: "-"), let milliseconds = Int64(entryID[..<dash]),
            Int64(entryID[entryID.index(after: dash)...]) != nil
        else { return nil }
        return prefix + ":succeeded:" + String(milliseconds / 60_000)
    }

    /// `ferry:{Q}:wf:<id>`: a workflow's state (hash), with `:results` (hash: step → result) and
    /// `:history` (stream) beside it. Workflow ids are checked to be key-safe (``Workflows``).
    public func workflow(id: String) -> String { prefix + ":wf:" + id }

    /// `ferry:{Q}:wf:<id>:payloads`: a workflow's large input (field `:input`) and results (field:
    /// the step), kept by reference (``PayloadReference``); it expires with the workflow.
    public func workflowPayloads(id: String) -> String { workflow(id: id) + ":payloads" }

    /// `ferry:{Q}:wf:idem:<key>`: a workflow start's idempotency key → the id it started.
    public func workflowDedup(idempotencyKey: String) -> String { prefix + ":wf:idem:" + Self.keyComponent(idempotencyKey) }

    /// `ferry:{Q}:wf:idx:<state>`: the ids of the workflows in a state, scored by when each entered it.
    public func workflowIndex(state: String) -> String { prefix + ":wf:idx:" + state }

    /// `ferry:{Q}:idx:<group>:<state>`: a sorted set of the job ids in `state` in `group`,
    /// scored by when each entered it (ms since the epoch). Kept by the transition scripts; no
    /// set exists for `queued` (the group's lag counts those).
    public func statusIndex(group: String, state: JobState) -> String {
        statusIndexPrefix + group + ":" + state.rawValue
    }

    /// `ferry:{Q}:delayed:<group>`: the group's later deliveries (retries, snoozes, entries read
    /// before their `deliver_at`), a sorted set of stream entry IDs scored by when each is due
    /// (ms since the epoch, Redis's clock). `:attempts` beside it (hash: entry ID → delivery
    /// attempts spent) and `:entries` (sorted set: entry ID → the entry's time, which the
    /// retention pass keeps) complete it.
    public func delayed(group: String) -> DelayedKeys {
        let due = delayedPrefix + group
        return DelayedKeys(due: due, attempts: due + ":attempts", entries: due + ":entries")
    }

    /// `ferry:{Q}:delayed:`: what every group's later-deliveries key starts with.
    public var delayedPrefix: String { prefix + ":delayed:" }

    /// The three keys of one group's later deliveries (``delayed(group:)``).
    public struct DelayedKeys: Sendable, Hashable {
        /// Entry ID → when it is due (ms).
        public let due: String
        /// Entry ID → delivery attempts spent.
        public let attempts: String
        /// Entry ID → the entry's own time (ms), for the retention pass.
        public let entries: String
    }

    /// `ferry:{Q}:drain`: a sample of how many jobs the slowest group had finished, and when,
    /// taken when a bounded queue refuses a publish: the next refusal derives its retry-after
    /// hint from the drain rate since. Expires after five minutes.
    public var drainSample: String { prefix + ":drain" }

    /// `ferry:{Q}:keyjobs:<key>`: the entry IDs of a key's jobs published while the queue has a
    /// quota per key (`ferry queue set --max-pending-per-key`), scored by their time; finished
    /// ones are dropped when the quota is reached.
    public func keyJobs(key: String) -> String { prefix + ":keyjobs:" + Self.keyComponent(key) }

    /// `ferry:{Q}:order:<group>:<key>`: whose turn an ordering key is in a group (hash: `owner`,
    /// the entry ID; `blocked`, the dead-lettered entry that stopped it, and `blocked_at`;
    /// `key`, as given), and `:waiting` beside it (sorted set: the entry IDs of the key's jobs
    /// waiting their turn, by publish order).
    public func orderingTurn(group: String, key: String) -> (turn: String, waiting: String) {
        let turn = prefix + ":order:" + group + ":" + Self.keyComponent(key)
        return (turn, turn + ":waiting")
    }

    /// `ferry:{Q}:ordered:<key>`: the entry IDs of an ordering key's jobs as their publisher
    /// listed them (scored by publish order): the order every group runs them in.
    public func orderedJobs(key: String) -> String { prefix + ":ordered:" + Self.keyComponent(key) }

    /// `ferry:{Q}:order:blocked`: the ordering keys a dead-lettered job stopped
    /// (`--ordering-on-dead block`), `<group> <key as keys write it>` → the key as given.
    public var orderingBlocked: String { prefix + ":order:blocked" }

    /// The field of `group`'s `key` in ``orderingBlocked``.
    public static func orderingBlockedField(group: String, key: String) -> String { group + " " + keyComponent(key) }

    /// `ferry:{Q}:limit:`: what every limit's state key starts with.
    public var limitPrefix: String { prefix + ":limit:" }

    /// The state of a limit (``QueueLimit``), `ferry:{Q}:limit:<name>`, or for one value of a
    /// per-key limit `ferry:{Q}:limit:<name>:k:<key>`, followed by, for a concurrency limit,
    /// `:held` (hash: consumer → slots its running jobs hold, and `*` → the total, which counts
    /// slots handed to waiting jobs too), `:holders` (sorted set: consumer → when its lease
    /// ends, ms), `:handed` (sorted set: `<group> <entry ID>` of a waiting job a slot was handed
    /// to → when the hand-off lapses) and `:waiting` (sorted set of the jobs waiting, first come
    /// first served); for a rate, `:tat` (its theoretical arrival time, µs) and `:reserved`
    /// (hash: `<group> <entry ID>` of a waiting job → the start time it was given, µs).
    public func limitState(name: String, key: String?) -> LimitKeys {
        let base = limitPrefix + name + (key.map { ":k:" + Self.keyComponent($0) } ?? "")
        return LimitKeys(
            held: base + ":held", holders: base + ":holders", handed: base + ":handed", waiting: base + ":waiting",
            arrival: base + ":tat", reserved: base + ":reserved")
    }

    /// The keys of one limit's state (``limitState(name:key:)``).
    public struct LimitKeys: Sendable, Hashable {
        /// Concurrency: slots held per worker, and in all.
        public let held: String
        /// Concurrency: when each worker's slots lapse.
        public let holders: String
        /// Concurrency: slots handed to waiting jobs, to when.
        public let handed: String
        /// Concurrency: who waits for a slot, first come first served.
        public let waiting: String
        /// Rate: the theoretical arrival time of the next start (GCRA), µs.
        public let arrival: String
        /// Rate: start times given to waiting jobs, µs.
        public let reserved: String

        /// The names that end a waiting job's record, which `ferry limit set|delete` wakes.
        static let waitingSuffixes = [":waiting", ":reserved", ":tat"]
    }

    /// `ferry:{Q}:cron:<name>`: a cron schedule (its timing, `job.*` fields, history).
    public func cronSchedule(name: String) -> String { cron + ":" + name }

    /// `ferry:{Q}:job:<job_id>`: the job's status hash.
    public func jobStatus(jobID: String) -> String { jobStatusPrefix + Self.keyComponent(jobID) }
    /// `ferry:{Q}:job:`: what every status key starts with; the rest is an index member.
    public var jobStatusPrefix: String { prefix + ":job:" }
    /// `ferry:{Q}:scheduled:<job_id>`: a scheduled job's fields until it is due.
    public func scheduledJob(jobID: String) -> String { scheduled + ":" + Self.keyComponent(jobID) }
    /// `ferry:{Q}:idem:pub:<key>`: publish dedup; holds the first job id published with the key.
    public func publishDedup(idempotencyKey: String) -> String { prefix + ":idem:pub:" + Self.keyComponent(idempotencyKey) }
    /// `ferry:{Q}:idem:api:<key>`: the SHA-256 of the request body an HTTP publish first used the
    /// key with, so the same key with another body is answered 409 (`ferry serve`).
    public func apiRequestFingerprint(idempotencyKey: String) -> String {
        prefix + ":idem:api:" + Self.keyComponent(idempotencyKey)
    }
    /// `ferry:{Q}:paused:seen:<group>`: when each worker of the group last confirmed it starts
    /// nothing while paused (consumer name -> ms), for `ferry queue pause --wait`.
    public func pauseSeen(group: String) -> String { prefix + ":paused:seen:" + Self.keyComponent(group) }
    /// `ferry:{Q}:idem:done:<key>`: set when a job with the key completed.
    public func completed(idempotencyKey: String) -> String { prefix + ":idem:done:" + Self.keyComponent(idempotencyKey) }
    /// `ferry:{Q}:idem:lock:<key>`: held while a job with the key runs.
    public func inFlightLock(idempotencyKey: String) -> String { prefix + ":idem:lock:" + Self.keyComponent(idempotencyKey) }

    /// The `SCAN MATCH` pattern that finds every queue's job stream.
    public static let jobStreamPattern = "ferry:{*}:jobs"

    /// How a producer-supplied id appears inside a key.
    ///
    /// Short ids of safe characters (`[A-Za-z0-9._-]{1,128}`) appear as given, so keys stay
    /// readable in redis-cli. Anything else (braces that would change the cluster slot, `*`,
    /// newlines, NULs, colons, 10 KB of text) appears as `~` and the SHA-256 of its UTF-8 bytes
    /// in hex. `~` is not a safe character, so a hashed form never equals an id given as is.
    public static func keyComponent(_ id: String) -> String {
        let bytes = Array(id.utf8)
        if !bytes.isEmpty, bytes.count <= 128, bytes.allSatisfy(QueueName.isAllowed) {
            return id
        }
        return "~"
            + SHA256.hash(data: bytes).map { byte in
                (byte < 16 ? "0" : "") + String(byte, radix: 16)
            }.joined()
    }
}
