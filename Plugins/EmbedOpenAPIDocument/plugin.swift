import Foundation
import PackagePlugin

/// Generates a Swift file holding the target's `openapi.yaml` (and its Lua scripts and
/// dashboard files) as string constants, so `ferry serve` answers `/v1/openapi.json` from the very document its handlers
/// were generated from, with no resource bundle to find at run time.
@main
struct EmbedOpenAPIDocument: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let document = target.directoryURL.appending(path: "openapi.yaml")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedAPIFiles.swift")
        // The Lua scripts, and the dashboard's templates, style sheet and script.
        let scripts = try ["Scripts", "Dashboard"].flatMap { folder in
            try FileManager.default.contentsOfDirectory(
                at: target.directoryURL.appending(path: folder), includingPropertiesForKeys: nil)
        }
        .filter { ["lua", "mustache", "css", "js"].contains($0.pathExtension) }.sorted { $0.path() < $1.path() }
        let inputs = [document.resolvingSymlinksInPath()] + scripts
        return [
            .buildCommand(
                displayName: "Embedding openapi.yaml, the Lua scripts and the dashboard into \(target.name)",
                executable: try context.tool(named: "FileEmbedder").url,
                arguments: ["--enum", "EmbeddedAPIFiles", output.path()] + inputs.map { $0.path() },
                inputFiles: inputs,
                outputFiles: [output]
            )
        ]
    }
}
