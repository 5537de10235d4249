import FuseBridge
import Glibc
import S3
import S3FSCore

// Entry point. Everything that runs after the fork lives in `Daemon` (nonisolated), so nothing
// libfuse calls on its worker threads is MainActor-isolated top-level code.

let args = Array(CommandLine.arguments.dropFirst())
if args.first == "stats" {
    exit(StatsCommand.run(Array(args.dropFirst())))
}
if args.contains("-h") || args.contains("--help") || args.isEmpty {
    print(CommandLine2.usage)
    exit(args.isEmpty ? 2 : 0)
}
if args.contains("--version") {
    print(Version.line)
    exit(0)
}
do {
    let config = try CommandLine2.parse(args)
    exit(Daemon.start(config))
} catch {
    fputs("s3mount: \(error)\n\(args.isEmpty ? CommandLine2.usage : "Try 's3mount --help'.")\n", stderr)
    exit(2)
}
