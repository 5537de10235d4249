// swift-tools-version:6.0
import PackageDescription

// Layers, bottom to top: C shims -> S3 (client) -> S3FSCore (filesystem, no FUSE types)
// -> FuseBridge (libfuse lowlevel callbacks) -> s3mount (CLI).
let package = Package(
    name: "s3mount",
    products: [
        .executable(name: "s3mount", targets: ["s3mount"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .target(name: "CCurlShim", linkerSettings: [.linkedLibrary("curl"), .linkedLibrary("z")]),
        .target(name: "CBuildInfo"),
        .target(name: "S3", dependencies: ["CCurlShim", "COpenSSL", .product(name: "Logging", package: "swift-log")]),
        .target(name: "S3FSCore", dependencies: ["S3", "CCurlShim"]),
        .target(name: "FuseBridge", dependencies: ["S3FSCore", "CFuse3"]),
        .executableTarget(name: "s3mount", dependencies: [
            "FuseBridge", "S3FSCore", "S3", "CFuse3", "CCurlShim", "CBuildInfo",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "S3Tests", dependencies: ["S3"]),
        .testTarget(name: "S3FSCoreTests", dependencies: ["S3FSCore", "S3"]),
    ],
    swiftLanguageModes: [.v5]
)
