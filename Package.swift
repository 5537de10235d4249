// swift-tools-version:6.0
import PackageDescription

// Layers, bottom to top: C shims -> S3 (client) -> S3FSCore (filesystem, no FUSE types)
// -> FuseBridge (libfuse lowlevel callbacks) -> s3mount (CLI).
let package = Package(
    name: "s3mount",
    products: [
        .executable(name: "s3mount", targets: ["s3mount"]),
        // For the fuzz targets in FuzzTargets/ (a package of its own that depends on this one by path).
        .library(name: "S3", targets: ["S3"]),
        .library(name: "S3FSCore", targets: ["S3FSCore"]),
        .library(name: "MountOptions", targets: ["MountOptions"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // AMQP notification queues (RabbitMQ, as Ceph RGW and MinIO publish to).
        .systemLibrary(name: "CRabbitMQ", pkgConfig: "librabbitmq", providers: [.apt(["librabbitmq-dev"])]),
        .target(name: "CCurlShim", linkerSettings: [.linkedLibrary("curl"), .linkedLibrary("z")]),
        .target(name: "CBuildInfo"),
        .target(name: "S3", dependencies: ["CCurlShim", "COpenSSL", "CRabbitMQ", .product(name: "Logging", package: "swift-log")]),
        .target(name: "S3FSCore", dependencies: ["S3", "CCurlShim"]),
        .target(name: "FuseBridge", dependencies: ["S3FSCore", "CFuse3"]),
        // The fstab `-o` syntax, pure (no dependencies): only the CLI uses it.
        .target(name: "MountOptions"),
        .executableTarget(name: "s3mount", dependencies: [
            "FuseBridge", "S3FSCore", "S3", "CFuse3", "CCurlShim", "CBuildInfo", "MountOptions",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "S3Tests", dependencies: ["S3"]),
        .testTarget(name: "S3FSCoreTests", dependencies: ["S3FSCore", "S3"]),
    ],
    swiftLanguageModes: [.v5]
)
