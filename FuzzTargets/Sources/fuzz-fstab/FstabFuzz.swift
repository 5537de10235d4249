import FuzzSupport
import MountOptions

/// The long options of `s3mount` that have an fstab form (name -> takes a value), as
/// `s3mount --experimental-dump-help` lists them; the CLI reads the same table from its
/// declarations (Sources/s3mount/Fstab.swift).
let options: [String: Bool] = [
    "allow-other": false, "allow-root": false, "cache": true, "credentials-file": true, "debug": false, "dir-mode": true,
    "endpoint-url": true, "file-mode": true, "force-path-style": false, "foreground": false, "gid": true, "log-file": true,
    "max-cache-size": true, "max-read-memory": true, "metadata": true, "metadata-ttl": true, "metrics-address": true,
    "no-guess-content-type": false, "no-sign-request": false, "no-upload-checksums": false, "no-verify-reads": false,
    "notification-queue": true, "prefix": true, "profile": true, "read-ahead": true, "read-concurrency": true,
    "read-only": false, "read-part-size": true, "read-retry-time": true, "region": true, "spool-dir": true,
    "stall-timeout": true, "uid": true, "walk-read-ahead": true, "write-retry-time": true,
]

/// fstab `-o` strings (the fourth field of an fstab line, what mount(8) passes), and whole
/// command lines they are spliced into (the input split at NUL bytes, as argv).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFstab(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let b = input(data, size)
    let s = String(decoding: b, as: UTF8.self)
    if let expanded = try? FstabSyntax.expand(s, options: options) {
        for (option, value) in expanded {
            check(options[option] != nil, "an option that does not exist: \(option)")
            check((value != nil) == options[option]!, "a value that does not fit \(option)")
        }
    }
    let argv = b.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    if let (args, _) = try? FstabSyntax.translate(argv, options: options) {
        // Every -o is replaced (after "--" everything is copied as it is).
        let end = args.firstIndex(of: "--") ?? args.count
        var i = 0
        while i < end {
            let a = args[i]
            check(!(a == "-o" || (a.hasPrefix("-o") && a.count > 2)) || (i > 0 && options[String(args[i - 1].dropFirst(2))] == true),
                  "an -o left in \(args)")
            i += 1
        }
    }
    _ = try? FstabSyntax.translate(["s3mount", "bucket", "/mnt", "-o", s], options: options)
    return 0
}
