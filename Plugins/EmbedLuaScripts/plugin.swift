import Foundation
import PackagePlugin

/// Generates one Swift file holding every `Scripts/*.lua` of the target as a string constant.
///
/// The scripts live as files so they can be reviewed, diffed and loaded by producers in other
/// languages (`ops/lua/`); embedding them at build time means a deployed `ferry` binary never
/// has to find a resource bundle at run time.
@main
struct EmbedLuaScripts: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let scriptsDirectory = target.directoryURL.appending(path: "Scripts")
        let scripts = try FileManager.default
            .contentsOfDirectory(at: scriptsDirectory, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "lua" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedLuaScripts.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(scripts.count) Lua scripts into \(target.name)",
                executable: try context.tool(named: "FileEmbedder").url,
                arguments: [output.path()] + scripts.map { $0.path() },
                inputFiles: scripts,
                outputFiles: [output]
            )
        ]
    }
}
