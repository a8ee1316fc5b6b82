import FerryRedis
import Foundation
import Synchronization

/// A named graph of steps, each run as an ordinary job of the queue (docs/design.md,
/// "Workflows"): a chain by default, fan-out and fan-in where a step names its dependencies.
///
/// Written in Swift with the builder, or as the JSON document `ferry workflow start` reads:
/// `{"name": "ingest", "steps": [{"name": "parse", "type": "parse-doc", "max_attempts": 3}, ...]}`.
public struct WorkflowDefinition: Sendable, Hashable, Codable {
    /// What the workflow is, for lists and logs.
    public var name: String
    /// Its steps, in order: a step without ``WorkflowStep/after`` follows the one before it.
    public var steps: [WorkflowStep]
    /// How long it may take from its start (`deadline_ms`): past it, it fails and its queued
    /// steps are cancelled. Nil for no deadline.
    public var deadlineMilliseconds: Int?

    enum CodingKeys: String, CodingKey {
        case name, steps
        case deadlineMilliseconds = "deadline_ms"
    }

    /// The most steps a workflow may have.
    public static let maxSteps = 100

    /// A workflow of these steps.
    public init(name: String, steps: [WorkflowStep], deadline: Duration? = nil) {
        self.name = name
        self.steps = steps
        self.deadlineMilliseconds = deadline.map { Int($0.milliseconds) }
    }

    /// A workflow whose steps the builder lists, in order.
    public init(_ name: String, deadline: Duration? = nil, @WorkflowStepsBuilder steps: () -> [WorkflowStep]) {
        self.init(name: name, steps: steps(), deadline: deadline)
    }

    /// Reads the JSON document (the keys are the wire format's snake_case names).
    ///
    /// - Throws: ``FerryError`` (invalid input) naming what is wrong.
    public init(json: [UInt8]) throws(FerryError) {
        do {
            let decoder = JSONDecoder()
            self = try decoder.decode(WorkflowDefinition.self, from: Data(json))
        } catch let error as DecodingError {
            throw FerryError(.invalidInput, "the workflow document is not valid: \(Self.describe(error))")
        } catch {
            throw FerryError(.invalidInput, "the workflow document is not valid: \(error)")
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch error {
        case .keyNotFound(let key, let context): return "\(path(context)).\(key.stringValue) is missing"
        case .typeMismatch(_, let context), .valueNotFound(_, let context): return "\(path(context)): \(context.debugDescription)"
        case .dataCorrupted(let context): return "\(path(context)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    /// The steps' dependencies as the workflow runs them: `after` when given, else the step before
    /// (none for the first).
    public var dependencies: [String: [String]] {
        var dependencies: [String: [String]] = [:]
        for (index, step) in steps.enumerated() {
            dependencies[step.name] = step.after ?? (index == 0 ? [] : [steps[index - 1].name])
        }
        return dependencies
    }

    /// Checks what a start must refuse: no steps, too many, a name empty or given twice, a
    /// dependency on a step that does not exist or on itself, a cycle, a bad attempt count,
    /// timeout, weight or priority.
    ///
    /// - Throws: ``FerryError`` (invalid input) naming the step at fault.
    public func validate() throws(FerryError) {
        func invalid(_ message: String) -> FerryError { FerryError(.invalidInput, "workflow \(name): \(message)") }
        if name.isEmpty { throw FerryError(.invalidInput, "a workflow needs a name") }
        if steps.isEmpty { throw invalid("it has no steps") }
        if steps.count > Self.maxSteps { throw invalid("it has \(steps.count) steps, more than \(Self.maxSteps)") }
        if let deadline = deadlineMilliseconds, deadline < 1 { throw invalid("deadline_ms must be at least 1") }
        var names: Set<String> = []
        for step in steps {
            if step.name.isEmpty || step.name.count > 100 || step.name.hasPrefix(".")
                || !step.name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") })
            {
                throw invalid(
                    "a step name is 1 to 100 letters, digits, '.', '_' or '-', not starting with '.' (got \"\(step.name)\")")
            }
            if !names.insert(step.name).inserted { throw invalid("two steps are named \(step.name)") }
            if step.type.isEmpty { throw invalid("step \(step.name) has no job type") }
            if let attempts = step.maxAttempts, attempts < 1 {
                throw invalid("step \(step.name): max_attempts must be at least 1")
            }
            if let timeout = step.timeoutMilliseconds, timeout < 1 {
                throw invalid("step \(step.name): timeout_ms must be at least 1")
            }
            if let backoff = step.backoffMilliseconds, backoff < 1 {
                throw invalid("step \(step.name): backoff_ms must be at least 1")
            }
            if step.weight < 1 { throw invalid("step \(step.name): weight must be at least 1") }
            if let priority = step.priority, JobPriority(text: priority) == nil {
                throw invalid("step \(step.name): priority must be high, normal, low or 0-9")
            }
        }
        let dependencies = self.dependencies
        for step in steps {
            for dependency in dependencies[step.name] ?? [] {
                if dependency == step.name { throw invalid("step \(step.name) depends on itself") }
                if !names.contains(dependency) {
                    throw invalid("step \(step.name) depends on \(dependency), which is not a step")
                }
            }
        }
        // Kahn's algorithm: every step must become ready.
        var waiting = dependencies.mapValues { Set($0).count }
        var ready = waiting.filter { $0.value == 0 }.map(\.key)
        var seen = 0
        while let current = ready.popLast() {
            seen += 1
            for step in steps where (dependencies[step.name] ?? []).contains(current) {
                waiting[step.name, default: 0] -= 1
                if waiting[step.name] == 0 { ready.append(step.name) }
            }
        }
        if seen < steps.count { throw invalid("its steps' dependencies form a cycle") }
    }

    /// Each step's spec as `wf_start.lua` stores it (JSON: type, fields, next, deps, weight,
    /// on_failure, budget, order), in definition order.
    func compiledSteps(defaultAttempts: Int) -> [(name: String, spec: String)] {
        let dependencies = self.dependencies
        return steps.enumerated().map { order, step in
            var fields: [String] = []
            if let attempts = step.maxAttempts { fields += [WireFormat.Field.maxAttempts, String(attempts)] }
            if let timeout = step.timeoutMilliseconds { fields += [WireFormat.Field.timeoutMilliseconds, String(timeout)] }
            if let backoff = step.backoffMilliseconds { fields += [WireFormat.Field.backoffMilliseconds, String(backoff)] }
            if let priority = step.priority { fields += [WireFormat.Field.priority, priority] }
            fields += [WireFormat.Field.version, WireFormat.version]
            let next = steps.filter { (dependencies[$0.name] ?? []).contains(step.name) }.map(\.name)
            let spec: [String: Any] = [
                "type": step.type, "fields": fields, "next": next, "deps": Set(dependencies[step.name] ?? []).count,
                "weight": step.weight, "on_failure": step.onFailure.rawValue,
                "budget": step.maxAttempts ?? defaultAttempts, "order": order,
            ]
            let json = (try? JSONSerialization.data(withJSONObject: spec, options: [.sortedKeys])) ?? Data("{}".utf8)
            // cjson reads an empty array as an empty object; `next` and `fields` are read with ipairs either way.
            return (step.name, String(decoding: json, as: UTF8.self))
        }
    }
}

/// One step of a workflow: the job it runs and how.
public struct WorkflowStep: Sendable, Hashable, Codable {
    /// Unique in its workflow; part of the step's job id (`<workflow id>/<name>`).
    public var name: String
    /// The job type its job runs as: the handler that runs it.
    public var type: String
    /// The steps it waits for; nil means the step before it (none for the first), `[]` a step
    /// that starts with the workflow (fan-out from the start).
    public var after: [String]?
    /// Deliveries before its job is dead-lettered, and how often a retry decision may run it.
    public var maxAttempts: Int?
    /// How long one run may take (`timeout_ms`).
    public var timeoutMilliseconds: Int?
    /// The base of its retry backoff (`backoff_ms`).
    public var backoffMilliseconds: Int?
    /// Its job's priority (`high`, `normal`, `low`, 0-9).
    public var priority: String?
    /// Its share of the workflow's progress (default 1).
    public var weight: Int
    /// What a dead-lettered run of it does to the workflow.
    public var onFailure: OnFailure

    /// What a step dead-lettered does to its workflow.
    public enum OnFailure: String, Sendable, Hashable, Codable, CaseIterable {
        /// The workflow ends `failed`, its other steps cancelled (the default).
        case failWorkflow = "fail_workflow"
        /// The step counts as done without a result; the steps after it run.
        case `continue`
        /// The workflow stops `blocked` until `ferry workflow resume` (which runs the step again).
        case block
    }

    /// A step running jobs of `type`.
    public init(
        _ name: String, type: String, after: [String]? = nil, maxAttempts: Int? = nil, timeout: Duration? = nil,
        backoff: Duration? = nil, priority: JobPriority? = nil, weight: Int = 1, onFailure: OnFailure = .failWorkflow
    ) {
        self.name = name
        self.type = type
        self.after = after
        self.maxAttempts = maxAttempts
        self.timeoutMilliseconds = timeout.map { Int($0.milliseconds) }
        self.backoffMilliseconds = backoff.map { Int($0.milliseconds) }
        self.priority = priority?.description
        self.weight = weight
        self.onFailure = onFailure
    }

    enum CodingKeys: String, CodingKey {
        case name, type, after, weight, priority
        case maxAttempts = "max_attempts", timeoutMilliseconds = "timeout_ms", backoffMilliseconds = "backoff_ms"
        case onFailure = "on_failure"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        type = try container.decode(String.self, forKey: .type)
        after = try container.decodeIfPresent([String].self, forKey: .after)
        maxAttempts = try container.decodeIfPresent(Int.self, forKey: .maxAttempts)
        timeoutMilliseconds = try container.decodeIfPresent(Int.self, forKey: .timeoutMilliseconds)
        backoffMilliseconds = try container.decodeIfPresent(Int.self, forKey: .backoffMilliseconds)
        priority = try container.decodeIfPresent(String.self, forKey: .priority)
        weight = try container.decodeIfPresent(Int.self, forKey: .weight) ?? 1
        onFailure = try container.decodeIfPresent(OnFailure.self, forKey: .onFailure) ?? .failWorkflow
    }
}

/// Lists a workflow's steps in order: `WorkflowDefinition("ingest") { WorkflowStep(...) ... }`.
@resultBuilder
public enum WorkflowStepsBuilder {
    public static func buildExpression(_ step: WorkflowStep) -> [WorkflowStep] { [step] }
    public static func buildBlock(_ steps: [WorkflowStep]...) -> [WorkflowStep] { steps.flatMap { $0 } }
    public static func buildArray(_ steps: [[WorkflowStep]]) -> [WorkflowStep] { steps.flatMap { $0 } }
    public static func buildOptional(_ steps: [WorkflowStep]?) -> [WorkflowStep] { steps ?? [] }
    public static func buildEither(first steps: [WorkflowStep]) -> [WorkflowStep] { steps }
    public static func buildEither(second steps: [WorkflowStep]) -> [WorkflowStep] { steps }
}

/// Thrown by a step's handler to end its step with a supervisor's decision (returning is
/// `proceed`): the step succeeds (its result kept) and the workflow blocks, fails, or runs an
/// earlier step again. The decision is recorded in the workflow's history.
public enum WorkflowDecision: Error, Sendable, Hashable {
    /// The workflow stops `blocked` for a person: `ferry workflow resume` goes on after this step
    /// (or from the step it names), `ferry workflow cancel` ends it.
    case block(reason: String)
    /// Run `step` (this one or an earlier one) again after `after`, and every step after it
    /// once it succeeds; each run counts against that step's attempts, and the workflow fails
    /// when they are spent.
    case retry(step: String, after: Duration = .zero)
    /// The workflow ends `failed` with this reason.
    case fail(reason: String)

    /// The decision and its detail as `wf_step.lua` takes them.
    var wire: (decision: String, detail: String) {
        switch self {
        case .block(let reason): ("block", reason)
        case .retry(let step, let after): ("retry", "\(step) \(max(after, .zero).milliseconds)")
        case .fail(let reason): ("fail", reason)
        }
    }
}

/// What a step's handler knows of its workflow.
public struct WorkflowContext: Sendable {
    /// The workflow's id.
    public let id: String
    /// The step this job runs.
    public let step: String
    /// The results of the steps it depends on (those that set one), by step name.
    public let results: [String: [UInt8]]
    let resultSink: ResultSink

    /// Where a handler's result waits for the worker, which stores it as the step ends.
    final class ResultSink: Sendable {
        let value = Mutex<[UInt8]?>(nil)
    }
}

extension Job {
    /// The largest result a step may keep (16 MiB). One over
    /// ``PayloadReference/defaultInlineLimit`` (64 KiB) is kept by reference: once, in
    /// `ferry:{Q}:wf:<id>:payloads`, and fetched and checked (size, SHA-256) by the steps after.
    public static let maxResultBytes = 16 << 20

    /// Keeps `result` as this workflow step's result, passed to the steps that depend on it
    /// (``WorkflowContext/results``) once the step succeeds.
    ///
    /// - Throws: ``PermanentJobError`` when it is over ``maxResultBytes`` or the job is no
    ///   workflow's step.
    public func setResult(_ result: [UInt8]) throws {
        guard let workflow else { throw PermanentJobError("setResult: job \(id) is no workflow's step") }
        guard result.count <= Self.maxResultBytes else {
            throw PermanentJobError(
                "the step's result is \(result.count) bytes, over \(Self.maxResultBytes); store it elsewhere (object storage) and keep a reference"
            )
        }
        workflow.resultSink.value.withLock { $0 = result }
    }
}
