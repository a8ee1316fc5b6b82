// swift-tools-version: 6.2
import PackageDescription

/// One settings array for every target, so the whole package builds in the same language mode.
let swiftSettings: [SwiftSetting] = [
    // https://github.com/swiftlang/swift-evolution/blob/main/proposals/0335-existential-any.md
    .enableUpcomingFeature("ExistentialAny"),
    // https://github.com/swiftlang/swift-evolution/blob/main/proposals/0444-member-import-visibility.md
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "Ferry",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Ferry", targets: ["Ferry"]),
        .library(name: "FerryRedis", targets: ["FerryRedis"]),
        .library(name: "FerryHTTP", targets: ["FerryHTTP"]),
        .executable(name: "ferry", targets: ["FerryCLI"]),
        .executable(name: "ferry-exec-guard", targets: ["FerryExecGuard"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-openapi-generator", from: "1.14.3"),
        .package(url: "https://github.com/apple/swift-openapi-runtime", from: "1.13.4"),
        .package(url: "https://github.com/hummingbird-project/swift-openapi-hummingbird", from: "2.1.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
    ],
    targets: [
        // System libraries: declared without pkgConfig (see the shim headers for why).
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CCurl", providers: [.apt(["libcurl4-openssl-dev"])]),

        .target(
            name: "FerryRedis",
            dependencies: [
                "CHiredis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Ferry",
            dependencies: [
                "FerryRedis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["Scripts"],
            swiftSettings: swiftSettings,
            plugins: ["EmbedLuaScripts"]
        ),
        // A few lines of C that `ferry worker --exec` runs each handler under, so handlers die
        // with their worker (see main.c); C because it starts once per job and must start fast.
        .executableTarget(name: "FerryExecGuard"),
        .target(
            name: "FerryExec",
            dependencies: [
                "Ferry",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FerryHTTP",
            dependencies: [
                "CCurl",
                "Ferry",
                "FerryRedis",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FerryAdmin",
            dependencies: [
                "Ferry",
                "FerryRedis",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // `ferry serve`: the HTTP API, its handlers generated from docs/openapi.yaml (linked into
        // the target) by swift-openapi-generator, the document itself embedded for /v1/openapi.json.
        .target(
            name: "FerryAPI",
            dependencies: [
                "Ferry",
                "FerryRedis",
                "FerryAdmin",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
                .product(name: "OpenAPIHummingbird", package: "swift-openapi-hummingbird"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Scripts", "Dashboard"],
            swiftSettings: swiftSettings,
            plugins: [
                .plugin(name: "OpenAPIGenerator", package: "swift-openapi-generator"), "EmbedOpenAPIDocument",
            ]
        ),
        .executableTarget(
            name: "FerryCLI",
            dependencies: [
                "Ferry",
                "FerryExec",
                "FerryAdmin",
                "FerryAPI",
                "FerryHTTP",
                "FerryRedis",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // Build-time only: turns Sources/Ferry/Scripts/*.lua into Swift string constants, so the
        // scripts stay real files (diffable, loadable by other languages) and the binary needs no
        // resource bundle beside it at run time.
        .executableTarget(name: "FileEmbedder", swiftSettings: swiftSettings),
        .plugin(name: "EmbedLuaScripts", capability: .buildTool(), dependencies: ["FileEmbedder"]),
        .plugin(name: "EmbedOpenAPIDocument", capability: .buildTool(), dependencies: ["FileEmbedder"]),

        .target(
            name: "FerryTestSupport",
            dependencies: ["Ferry", "FerryRedis"],
            path: "Tests/FerryTestSupport",
            exclude: ["push_endpoint.py", "tcp_proxy.py"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SystemLibraryTests",
            dependencies: ["CHiredis", "CCurl"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FerryRedisTests",
            dependencies: ["FerryRedis", "FerryTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FerryTests",
            dependencies: ["Ferry", "FerryRedis", "FerryTestSupport", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FerryExecTests",
            dependencies: ["FerryExec", "Ferry", "FerryRedis", "FerryTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FerryCLITests",
            dependencies: ["FerryCLI", "Ferry", "FerryRedis", "FerryTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FerryAPITests",
            dependencies: [
                "FerryAPI", "Ferry", "FerryRedis", "FerryTestSupport", .product(name: "Logging", package: "swift-log"),
                .product(name: "JWTKit", package: "jwt-kit"), .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["dashboard_browser.py"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FerryHTTPTests",
            dependencies: ["FerryHTTP", "Ferry", "FerryRedis", "FerryTestSupport"],
            swiftSettings: swiftSettings
        ),
        // The examples (examples/) driven end to end: real Redis, ferry serve, worker processes.
        .testTarget(
            name: "ExampleTests",
            dependencies: ["Ferry", "FerryRedis", "FerryTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "OpsTests",
            dependencies: ["Ferry", "FerryRedis", "FerryTestSupport"],
            swiftSettings: swiftSettings
        ),
    ]
)
