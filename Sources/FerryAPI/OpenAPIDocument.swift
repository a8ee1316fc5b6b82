import Foundation
import Yams

/// The API's OpenAPI document, embedded at build time from the file the handlers were generated
/// from: served as JSON at `/v1/openapi.json`, and read for each operation's scope
/// (`x-ferry-scope`), so the document says who may call what and the server cannot disagree.
enum OpenAPIDocument {
    /// The document, parsed; empty if the embedded text did not parse (a test checks it does).
    static func object() -> [String: Any] {
        (try? Yams.load(yaml: EmbeddedAPIFiles.openapi)) as? [String: Any] ?? [:]
    }

    /// The document as JSON bytes.
    static let json: [UInt8] = {
        guard let data = try? JSONSerialization.data(withJSONObject: object(), options: [.sortedKeys]) else { return [] }
        return Array(data)
    }()

    /// The scope each operation needs, by operation id. An operation without one is refused to
    /// every caller (the server fails closed).
    static let scopes: [String: APIKeys.Scope] = Dictionary(
        operations.compactMap { id, operation in
            (operation["x-ferry-scope"] as? String).flatMap(APIKeys.Scope.init(rawValue:)).map { (id, $0) }
        }
    ) { first, _ in first }

    /// The operations a caller scoped to its own jobs (a JWT subject that is its job key) may
    /// call, and the scope it needs for each (`x-ferry-keyed-callers`: `publish` to cancel or
    /// retry its own jobs, as they are its own submissions); it is refused every other.
    static let keyedCallerScopes: [String: APIKeys.Scope] = Dictionary(
        operations.compactMap { id, operation in
            (operation["x-ferry-keyed-callers"] as? String).flatMap(APIKeys.Scope.init(rawValue:)).map { (id, $0) }
        }
    ) { first, _ in first }

    /// Every operation of the document, by its id.
    private static var operations: [(id: String, operation: [String: Any])] {
        var found: [(String, [String: Any])] = []
        for case let methods as [String: Any] in (object()["paths"] as? [String: Any] ?? [:]).values {
            for case let operation as [String: Any] in methods.values {
                if let id = operation["operationId"] as? String { found.append((id, operation)) }
            }
        }
        return found
    }
}
