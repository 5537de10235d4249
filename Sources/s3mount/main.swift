import ArgumentParser
import FuseBridge
import Glibc
import S3
import S3FSCore

// Entry point. Everything that runs after the fork lives in `Daemon` (nonisolated), so nothing
// libfuse calls on its worker threads is MainActor-isolated top-level code.
//
// The command line is S3MountCommand's (Command.swift); the fstab form `-o a,b=c` is first
// translated into its options (Fstab.swift). Exit codes: 0 mounted (or help, version), 1 the
// mount could not be made, 2 bad options or arguments; errors are one line, "s3mount: ...".

let args = Array(CommandLine.arguments.dropFirst())

func usageFailure(_ message: String) -> Never {
    fputs("s3mount: \(message)\nTry 's3mount --help'.\n", stderr)
    exit(2)
}

if args.isEmpty {
    print(S3MountCommand.helpMessage())
    exit(2)
}
if args.first == "stats" {
    do {
        let stats = try StatsCommandLine.parse(Array(args.dropFirst()))
        exit(StatsCommand.run(stats.mountpoint))
    } catch {
        if StatsCommandLine.exitCode(for: error) == .success {
            print(StatsCommandLine.helpMessage())
            exit(0)
        }
        fputs("usage: s3mount stats MOUNTPOINT\n", stderr)
        exit(2)
    }
}
if args.first == "restore" {
    do {
        let restore = try RestoreCommandLine.parse(Array(args.dropFirst()))
        exit(RestoreCommand.run(restore))
    } catch {
        if RestoreCommandLine.exitCode(for: error) == .success {
            print(RestoreCommandLine.helpMessage())
            exit(0)
        }
        fputs("s3mount restore: \(RestoreCommandLine.message(for: error))\nusage: s3mount restore PATH... [--days N] [--tier Standard|Bulk|Expedited]\n", stderr)
        exit(2)
    }
}
do {
    // Shell completion asks the binary with "---completion ... -- WORDS": words as typed, -o too.
    let (argv, origin) = args.first == "---completion" ? (args, [:]) : try Fstab.translate(args)
    let parsed = try S3MountCommand.parseAsRoot(argv)
    guard let command = parsed as? S3MountCommand else {
        // --help, -h: the parser's help command.
        var other = parsed
        try other.run()
        exit(0)
    }
    if !command.mountOptions.isEmpty { usageFailure("-o must stand alone: -o OPT[,OPT...]") }
    exit(Daemon.start(try command.config(origin: origin)))
} catch let error as UsageError {
    usageFailure(error.description)
} catch {
    // Help, --version, a completion script, a completion: printed on stdout, exit 0.
    if S3MountCommand.exitCode(for: error) == .success { S3MountCommand.exit(withError: error) }
    usageFailure(ParseErrorMessage.describe(error))
}
