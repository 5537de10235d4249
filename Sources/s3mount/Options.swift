import Glibc
import S3
import S3FSCore

/// Everything the command line (or an fstab options string) can say.
struct MountConfig {
    var bucket = ""
    var prefix = ""
    var mountpoint = ""
    var endpointURL: String?
    var region: String?
    var forcePathStyle = false
    var profile: String?
    var noSignRequest = false
    /// Uploads carry a CRC-32 that S3 verifies (`--no-upload-checksums` turns it off).
    var uploadChecksums = true
    /// Uploads get a Content-Type from their extension (`--no-guess-content-type` turns it off).
    var guessContentType = true
    /// Seconds a request may go below 1 KiB/s (or wait for its first byte) before it is retried.
    var stallTimeout = 10
    /// Seconds of retries (with backoff) a read, and an upload, may spend before failing.
    var readRetryTime: Double = 20
    var writeRetryTime: Double = 60
    var readOnly = false
    var uid: UInt32 = getuid()
    var gid: UInt32 = getgid()
    var fileMode: UInt32 = 0o644
    var dirMode: UInt32 = 0o755
    var allowOther = false
    var allowRoot = false
    /// Default 60 s: long enough that browsing a tree (ls, find, a file manager's repeated
    /// stats) is served from memory, short enough that changes made by other S3 clients show up
    /// within a minute.
    var metadataTTL: Double = 60
    var debug = false
    var foreground = false
    var logFile: String?
    /// Where files being written wait for upload (default $TMPDIR or /var/tmp).
    var spoolDir: String?
    /// "HOST:PORT" for the Prometheus endpoint.
    var metricsAddress: String?
    /// An AWS shared-credentials file; must not be readable by others.
    var credentialsFile: String?
    /// The kernel's read-ahead for the mount in KiB (FUSE's default is 128, which caps a
    /// sequential read at a fraction of the line rate).
    var readAheadKiB = 4096
    /// Where modes, owners, mtimes and symlinks are kept (`--metadata`).
    var metadata: MetadataMode = .index
    /// The local data cache (`--cache DIR`) and its bound.
    var cacheDir: String?
    var maxCacheSize: Int64 = 5 << 30
    /// Sequential reads: ranged part size and parts in flight per reader (1: one stream).
    var readPartSize = 8 << 20
    var readConcurrency = 10
    var maxReadMemory = 256 << 20
    /// Files fetched ahead of a walk through a directory (0: off).
    var walkReadAhead = 8
}

struct UsageError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

enum CommandLine2 {
    static let usage = """
    usage: s3mount [OPTIONS] BUCKET[:PREFIX] MOUNTPOINT
           s3mount [OPTIONS] s3://BUCKET/PREFIX MOUNTPOINT
           s3mount stats MOUNTPOINT

    Mounts an S3 bucket (or a prefix of it) as a directory. Returns once the mount is ready.

    options:
      --endpoint-url URL       S3-compatible endpoint (also AWS_ENDPOINT_URL), e.g. http://127.0.0.1:9000
      --region REGION          bucket region (default: AWS_REGION, the profile, else discovered)
      --force-path-style       path-style requests (MinIO, Ceph, moto, ...)
      --profile NAME           credentials/config profile from ~/.aws
      --no-sign-request        anonymous access to a public bucket
      --prefix PREFIX          mount only keys under PREFIX
      --read-only              refuse every change (EROFS)
      --uid N, --gid N         owner of objects that carry none (default: the mounting user)
      --file-mode OCTAL        permission bits of files that carry none (default 0644)
      --dir-mode OCTAL         permission bits of directories that carry none (default 0755)
      --allow-other            let other users access the mount (needs user_allow_other in /etc/fuse.conf)
      --allow-root             let root access the mount
      --metadata index|head|none
                               modes, owners, mtimes, symlinks: kept in object headers and a per-directory
                               index read beside each listing (index, the default); also HeadObject for
                               entries the index does not cover, e.g. buckets written by s3fs (head);
                               or mount-wide --file-mode/--uid for everything (none)
      --metadata-ttl SECONDS|indefinite
                               how long listings, attributes and "no such file" answers are trusted (default 60)
      --log-file PATH          write the log here (default: stderr in the foreground, else syslog)
      --spool-dir DIR          where files being written wait for upload (default: $TMPDIR or /var/tmp)
      --credentials-file PATH  AWS shared-credentials file to use (must be chmod 600)
      --no-upload-checksums    send uploads without the CRC-32 that S3 verifies (for stores that mishandle it)
      --stall-timeout SECONDS  a request slower than 1 KiB/s (or without an answer) for this long is
                               retried on a new connection (default 10)
      --read-retry-time S, --write-retry-time S
                               how long retries with backoff may go on before a read (default 20) or an
                               upload (default 60) fails
      --no-guess-content-type  upload everything as application/octet-stream (default: the type of the
                               extension, from /etc/mime.types or a built-in table, as s3fs and rclone do)
      --cache DIR              keep file data read once on local disk (validated by ETag, kept across mounts)
      --max-cache-size SIZE    bound of --cache, least recently used objects evicted (default 5G)
      --read-part-size SIZE    ranged GET size of a sequential reader on a link slower per connection than
                               the machine, as S3 (default 8M; 1M to 64M)
      --read-concurrency N     parts one reader keeps in flight (default 10; 1 reads with one stream)
      --max-read-memory SIZE   read buffers of all readers together (default 256M)
      --walk-read-ahead N      files fetched ahead when a program reads a directory's files in listing
                               order: tar, grep -r, cp -r, rsync (default 8; 0 turns it off)
      --read-ahead KIB         kernel read-ahead for the mount (default 4096; needs root, else FUSE's 128 stays)
      --metrics-address H:P    serve Prometheus metrics at http://H:P/metrics (e.g. 127.0.0.1:9877)
      --debug                  one log line per S3 request
      -f, --foreground         stay attached, log to stderr
      -o OPT[,OPT...]          the same options in fstab form: ro, allow_other, uid=1000, endpoint_url=URL, ...
      -h, --help               this text
      --version                the version and the commit it was built from
    """

    static func parse(_ argv: [String]) throws -> MountConfig {
        var c = MountConfig()
        var positional: [String] = []
        var i = 0
        func value(_ name: String, _ inline: String?) throws -> String {
            if let v = inline { return v }
            i += 1
            guard i < argv.count else { throw UsageError("option \(name) needs a value") }
            return argv[i]
        }
        while i < argv.count {
            let a = argv[i]
            var name = a
            var inline: String? = nil
            if a.hasPrefix("--"), let eq = a.firstIndex(of: "=") {
                name = String(a[..<eq])
                inline = String(a[a.index(after: eq)...])
            }
            switch name {
            case "--endpoint-url": c.endpointURL = try value(name, inline)
            case "--region": c.region = try value(name, inline)
            case "--force-path-style": c.forcePathStyle = true
            case "--profile": c.profile = try value(name, inline)
            case "--no-sign-request": c.noSignRequest = true
            case "--no-upload-checksums": c.uploadChecksums = false
            case "--no-guess-content-type": c.guessContentType = false
            case "--stall-timeout": c.stallTimeout = Int(try seconds(name, try value(name, inline), max: 3600))
            case "--read-retry-time": c.readRetryTime = try seconds(name, try value(name, inline), max: 3600)
            case "--write-retry-time": c.writeRetryTime = try seconds(name, try value(name, inline), max: 86400)
            case "--prefix": c.prefix = try value(name, inline)
            case "--read-only": c.readOnly = true
            case "--uid": c.uid = try number(name, try value(name, inline))
            case "--gid": c.gid = try number(name, try value(name, inline))
            case "--file-mode": c.fileMode = try mode(name, try value(name, inline))
            case "--dir-mode": c.dirMode = try mode(name, try value(name, inline))
            case "--allow-other": c.allowOther = true
            case "--allow-root": c.allowRoot = true
            case "--metadata-ttl": c.metadataTTL = try ttl(try value(name, inline))
            case "--metadata": c.metadata = try metadataMode(try value(name, inline))
            case "--log-file": c.logFile = try value(name, inline)
            case "--spool-dir": c.spoolDir = try value(name, inline)
            case "--metrics-address": c.metricsAddress = try value(name, inline)
            case "--credentials-file": c.credentialsFile = try value(name, inline)
            case "--read-ahead": c.readAheadKiB = try readAhead(try value(name, inline))
            case "--cache": c.cacheDir = try value(name, inline)
            case "--max-cache-size": c.maxCacheSize = Int64(try byteSize(name, try value(name, inline), min: 1 << 20))
            case "--read-part-size": c.readPartSize = try byteSize(name, try value(name, inline), min: 1 << 20, max: 64 << 20)
            case "--read-concurrency": c.readConcurrency = try count(name, try value(name, inline), 1...64)
            case "--max-read-memory": c.maxReadMemory = try byteSize(name, try value(name, inline), min: 16 << 20)
            case "--walk-read-ahead": c.walkReadAhead = try count(name, try value(name, inline), 0...64)
            case "--debug", "-d": c.debug = true
            case "-f", "--foreground": c.foreground = true
            case "-o":
                try applyFstabOptions(try value(name, nil), to: &c)
            default:
                if a.hasPrefix("-o") && a.count > 2 {
                    try applyFstabOptions(String(a.dropFirst(2)), to: &c)
                } else if a.hasPrefix("-") && a != "-" {
                    throw UsageError("unknown option \(a)")
                } else {
                    positional.append(a)
                }
            }
            i += 1
        }
        guard positional.count == 2 else {
            throw UsageError(positional.count < 2 ? "expected BUCKET[:PREFIX] and MOUNTPOINT" : "unexpected argument \(positional[2])")
        }
        try parseSource(positional[0], into: &c)
        c.mountpoint = positional[1]
        if let ep = c.endpointURL, let why = S3Client.endpointProblem(ep) {
            throw UsageError("invalid endpoint URL \(CommandLine2.redacted(ep)): \(why)")
        }
        if c.noSignRequest && c.profile != nil { throw UsageError("--no-sign-request and --profile contradict each other") }
        return c
    }

    /// A URL with any user information replaced, for messages (a password must not be echoed).
    static func redacted(_ url: String) -> String {
        guard let r = url.range(of: "://") else { return url }
        let rest = url[r.upperBound...]
        let authority = rest.prefix { $0 != "/" }
        guard let at = authority.lastIndex(of: "@") else { return url }
        return String(url[..<r.upperBound]) + "***" + String(rest[at...])
    }

    static func parseSource(_ s: String, into c: inout MountConfig) throws {
        var bucket: String
        var prefix = ""
        if s.hasPrefix("s3://") {
            let rest = s.dropFirst(5)
            if let slash = rest.firstIndex(of: "/") {
                bucket = String(rest[..<slash])
                prefix = String(rest[rest.index(after: slash)...])
            } else {
                bucket = String(rest)
            }
        } else if let colon = s.firstIndex(of: ":") {
            bucket = String(s[..<colon])
            prefix = String(s[s.index(after: colon)...])
        } else {
            bucket = s
        }
        guard isValidBucket(bucket) else {
            throw UsageError("invalid bucket name \"\(bucket)\" (3-63 characters: letters, digits, '.', '-', '_')")
        }
        c.bucket = bucket
        if !prefix.isEmpty {
            if !c.prefix.isEmpty && c.prefix != prefix { throw UsageError("two different prefixes given (\(c.prefix) and \(prefix))") }
            c.prefix = prefix
        }
    }

    static func isValidBucket(_ b: String) -> Bool {
        guard (3...63).contains(b.utf8.count) else { return false }
        return b.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E || $0 == 0x2D || $0 == 0x5F }
    }

    static func number(_ name: String, _ v: String) throws -> UInt32 {
        guard let n = UInt32(v) else { throw UsageError("\(name) expects a number, got \"\(v)\"") }
        return n
    }

    static func mode(_ name: String, _ v: String) throws -> UInt32 {
        guard let n = UInt32(v, radix: 8), n <= 0o7777 else { throw UsageError("\(name) expects octal permission bits like 0644, got \"\(v)\"") }
        return n
    }

    static func readAhead(_ v: String) throws -> Int {
        guard let n = Int(v), (4...(256 << 10)).contains(n) else { throw UsageError("--read-ahead expects KiB from 4 to 262144, got \"\(v)\"") }
        return n
    }

    /// "512M", "5G", "1GiB", "1048576": bytes, within [min, max].
    static func byteSize(_ name: String, _ v: String, min: Int, max: Int = Int.max) throws -> Int {
        var digits = v.uppercased()
        for suffix in ["IB", "B"] where digits.hasSuffix(suffix) { digits.removeLast(suffix.count); break }
        var shift = 0
        if let last = digits.last, let i = ["K", "M", "G", "T"].firstIndex(of: String(last)) {
            shift = 10 * (i + 1)
            digits.removeLast()
        }
        guard let n = Int(digits), n > 0, n <= (Int.max >> shift), (n << shift) >= min, (n << shift) <= max else {
            throw UsageError("\(name) expects a size like 512M or 5G (at least \(min >> 20)M\(max == Int.max ? "" : ", at most \(max >> 20)M")), got \"\(v)\"")
        }
        return n << shift
    }

    static func count(_ name: String, _ v: String, _ range: ClosedRange<Int>) throws -> Int {
        guard let n = Int(v), range.contains(n) else { throw UsageError("\(name) expects a number from \(range.lowerBound) to \(range.upperBound), got \"\(v)\"") }
        return n
    }

    static func seconds(_ name: String, _ v: String, max: Double) throws -> Double {
        guard let n = Double(v), n >= 1, n <= max else { throw UsageError("\(name) expects seconds from 1 to \(Int(max)), got \"\(v)\"") }
        return n
    }

    static func metadataMode(_ v: String) throws -> MetadataMode {
        guard let m = MetadataMode(rawValue: v) else {
            throw UsageError("--metadata expects one of \(MetadataMode.allCases.map { $0.rawValue }.joined(separator: ", ")), got \"\(v)\"")
        }
        return m
    }

    static func ttl(_ v: String) throws -> Double {
        if v == "indefinite" || v == "inf" { return .infinity }
        guard let n = Double(v), n >= 0, n.isFinite else { throw UsageError("--metadata-ttl expects seconds or \"indefinite\", got \"\(v)\"") }
        return n
    }

    /// Options in fstab/mount form. Generic mount options that mean nothing to s3mount are ignored.
    static func applyFstabOptions(_ s: String, to c: inout MountConfig) throws {
        let ignored: Set<String> = ["_netdev", "nofail", "auto", "noauto", "user", "users", "nouser", "owner", "defaults",
                                    "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime", "noatime", "relatime",
                                    "nodiratime", "sync", "async", "rw", "default_permissions", "nonempty"]
        for opt in s.split(separator: ",").map(String.init) where !opt.isEmpty {
            let parts = opt.split(separator: "=", maxSplits: 1).map(String.init)
            let key = parts[0].replacingUnderscores()
            let val = parts.count > 1 ? parts[1] : nil
            func need() throws -> String {
                guard let v = val, !v.isEmpty else { throw UsageError("option \(parts[0]) needs a value (\(parts[0])=...)") }
                return v
            }
            if ignored.contains(parts[0]) || parts[0].hasPrefix("x-") || parts[0].hasPrefix("comment=") || parts[0] == "comment" { continue }
            switch key {
            case "ro", "read-only": c.readOnly = true
            case "allow-other": c.allowOther = true
            case "allow-root": c.allowRoot = true
            case "uid": c.uid = try number("uid", try need())
            case "gid": c.gid = try number("gid", try need())
            case "file-mode": c.fileMode = try mode("file_mode", try need())
            case "dir-mode": c.dirMode = try mode("dir_mode", try need())
            case "endpoint-url", "endpoint", "url": c.endpointURL = try need()
            case "region": c.region = try need()
            case "profile": c.profile = try need()
            case "prefix": c.prefix = try need()
            case "force-path-style", "use-path-request-style", "path-style": c.forcePathStyle = true
            case "no-sign-request", "public-bucket": c.noSignRequest = true
            case "no-upload-checksums": c.uploadChecksums = false
            case "no-guess-content-type": c.guessContentType = false
            case "stall-timeout": c.stallTimeout = Int(try seconds("stall_timeout", try need(), max: 3600))
            case "read-retry-time": c.readRetryTime = try seconds("read_retry_time", try need(), max: 3600)
            case "write-retry-time": c.writeRetryTime = try seconds("write_retry_time", try need(), max: 86400)
            case "metadata-ttl": c.metadataTTL = try ttl(try need())
            case "metadata": c.metadata = try metadataMode(try need())
            case "debug": c.debug = true
            case "foreground": c.foreground = true
            case "log-file": c.logFile = try need()
            case "spool-dir": c.spoolDir = try need()
            case "metrics-address": c.metricsAddress = try need()
            case "credentials-file": c.credentialsFile = try need()
            case "read-ahead": c.readAheadKiB = try readAhead(try need())
            case "cache": c.cacheDir = try need()
            case "max-cache-size": c.maxCacheSize = Int64(try byteSize("max_cache_size", try need(), min: 1 << 20))
            case "read-part-size": c.readPartSize = try byteSize("read_part_size", try need(), min: 1 << 20, max: 64 << 20)
            case "read-concurrency": c.readConcurrency = try count("read_concurrency", try need(), 1...64)
            case "max-read-memory": c.maxReadMemory = try byteSize("max_read_memory", try need(), min: 16 << 20)
            case "walk-read-ahead": c.walkReadAhead = try count("walk_read_ahead", try need(), 0...64)
            default: throw UsageError("unknown mount option \"\(parts[0])\"")
            }
        }
    }
}

extension String {
    func replacingUnderscores() -> String { String(map { $0 == "_" ? "-" : $0 }) }
}
