// swift-tools-version:6.0
import PackageDescription

// Fuzz targets for every parser of bytes from outside the process (S3, the endpoint, a queue, a
// file, the command line). Built with `swift build -sanitize=fuzzer` (libFuzzer supplies main:
// each target is a library-mode executable with an `LLVMFuzzerTestOneInput` entry point).
// Run them with scripts/fuzz.sh; seeds are in corpus/<target>/; see docs/FUZZING.md.
// `@testable import` reaches the internal parsers: debug builds compile the main package's
// modules with testing enabled.
let libraryMode: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]

func target(_ name: String, _ deps: [Target.Dependency]) -> Target {
    .executableTarget(name: "fuzz-\(name)", dependencies: ["FuzzSupport"] + deps, swiftSettings: libraryMode)
}

let s3: Target.Dependency = .product(name: "S3", package: "s3mount")
let core: Target.Dependency = .product(name: "S3FSCore", package: "s3mount")

let package = Package(
    name: "s3mount-fuzz",
    dependencies: [.package(name: "s3mount", path: "..")],
    targets: [
        .target(name: "FuzzSupport", dependencies: [s3]),
        // ListObjectsV2 pages, S3/STS error XML, STS credentials, DeleteObjects results.
        target("s3xml", [s3]),
        // S3 event notifications (direct or in an SNS envelope), SQS ReceiveMessage/DeleteMessageBatch answers.
        target("events", [s3]),
        // The per-directory metadata index object, POSIX metadata headers (x-amz-meta-*), HeadObject headers.
        target("metadata", [s3, core]),
        // The multipart upload journal in the spool directory.
        target("journal", [s3, core]),
        // ~/.aws/credentials and ~/.aws/config, container-credentials and IMDS JSON.
        target("credentials", [s3]),
        // Dates (ISO 8601, HTTP), endpoint and queue URLs, percent-encoding, hex, sequencers, timestamps.
        target("http", [s3, core]),
        // fstab `-o` option strings (and the command line they are spliced into).
        target("fstab", [.product(name: "MountOptions", package: "s3mount")]),
    ],
    swiftLanguageModes: [.v5]
)
