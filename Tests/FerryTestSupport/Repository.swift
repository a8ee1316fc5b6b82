import Foundation

/// The repository's root folder, found from this source file's path, for tests that read
/// `ops/`, `docs/` or run the README's scripts.
public let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
