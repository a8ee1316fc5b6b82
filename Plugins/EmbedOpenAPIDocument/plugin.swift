import Foundation
import PackagePlugin

/// Generates a Swift file holding the target's `openapi.yaml` (and its Lua scripts) as string
/// constants, so `ferry serve` answers `/v1/openapi.json` from the very document its handlers
/// were generated from, with no resource bundle to find at run time.
@main
struct EmbedOpenAPIDocument: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let document = target.directoryURL.appending(path: "openapi.yaml")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedAPIFiles.swift")
        let scripts = try FileManager.default.contentsOfDirectory(
            at: target.directoryURL.appending(path: "Scripts"), includingPropertiesForKeys: nil
        )
        .filter { $0.pathExtension == "lua" }.sorted { $0.path() < $1.path() }
        let inputs = [document.resolvingSymlinksInPath()] + scripts
        return [
            .buildCommand(
                displayName: "Embedding openapi.yaml and the Lua scripts into \(target.name)",
                executable: try context.tool(named: "FileEmbedder").url,
                arguments: ["--enum", "EmbeddedAPIFiles", output.path()] + inputs.map { $0.path() },
                inputFiles: inputs,
                outputFiles: [output]
            )
        ]
    }
}
