import Foundation
import PackagePlugin

/// Generates a Swift file holding the target's `openapi.yaml` as a string constant, so
/// `ferry serve` answers `/v1/openapi.json` from the very document its handlers were generated
/// from, with no resource bundle to find at run time.
@main
struct EmbedOpenAPIDocument: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let document = target.directoryURL.appending(path: "openapi.yaml")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedOpenAPIDocument.swift")
        return [
            .buildCommand(
                displayName: "Embedding openapi.yaml into \(target.name)",
                executable: try context.tool(named: "FileEmbedder").url,
                arguments: ["--enum", "EmbeddedOpenAPIDocument", output.path(), document.resolvingSymlinksInPath().path()],
                inputFiles: [document.resolvingSymlinksInPath()],
                outputFiles: [output]
            )
        ]
    }
}
