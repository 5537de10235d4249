import ArgumentParser
import Glibc
import S3
import S3FSCore

// The command line, declared once. `--help`, the parse errors, the shell completions
// (`--generate-completion-script bash|zsh|fish`, committed in scripts/completions) and the man
// page's OPTIONS (scripts/gen-cli-files.py, from `--experimental-dump-help`) all come from these
// declarations; so does the fstab form `-o opt,opt=value` (Fstab.swift translates it into these
// options before parsing). The option values are kept as typed and checked by
// `S3MountCommand.config()` (Options.swift), with the messages s3mount has always given.

struct S3MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "s3mount",
        abstract: "Mounts an S3 bucket (or a prefix of it) as a directory. Returns once the mount is ready.",
        usage: """
            s3mount [<options>] <bucket>[:<prefix>] <mountpoint>
            s3mount [<options>] s3://<bucket>/<prefix> <mountpoint>
            s3mount stats <mountpoint>
            s3mount restore <path>...
            """,
        discussion: "s3mount stats MOUNTPOINT prints, as JSON, the requests sent since the mount (by operation and outcome), bytes, and the caches' hits and misses. s3mount restore PATH... starts restoring archived files of a mount (s3mount restore --help).",
        version: Version.line,
        helpNames: [.short, .long])

    /// Completed with nothing but the subcommands' names, `stats` and `restore`, as the first word.
    @Argument(help: ArgumentHelp("the bucket: BUCKET, BUCKET:PREFIX or s3://BUCKET/PREFIX", valueName: "bucket"),
              completion: .custom { _, index, prefix in index == 1 ? ["stats", "restore"].filter { $0.hasPrefix(prefix) } : [] })
    var source: String

    @Argument(help: ArgumentHelp("an empty directory to mount it on", valueName: "mountpoint"), completion: .directory)
    var mountpoint: String

    @Option(name: .customLong("endpoint-url"),
            help: ArgumentHelp("S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS)",
                               valueName: "URL"),
            completion: .list([]))
    var endpointURL: String?

    @Option(help: ArgumentHelp("bucket region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's, else discovered from the bucket)",
                               valueName: "REGION"),
            completion: .list([]))
    var region: String?

    @Flag(name: .customLong("force-path-style"), help: "path-style requests, endpoint/bucket/key (MinIO, Ceph, moto, ...)")
    var forcePathStyle = false

    @Option(help: ArgumentHelp("credentials/config profile from ~/.aws (default: AWS_PROFILE, else default)", valueName: "NAME"),
            completion: .custom { _, _, _ in AWSProfiles.names() })
    var profile: String?

    @Option(name: .customLong("credentials-file"),
            help: ArgumentHelp("AWS shared-credentials file to use (default: AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials); refused if others can read it (chmod 600)",
                               valueName: "PATH"),
            completion: .file())
    var credentialsFile: String?

    @Flag(name: .customLong("no-sign-request"), help: "anonymous access to a public bucket")
    var noSignRequest = false

    @Option(help: ArgumentHelp("mount only the keys under PREFIX, as BUCKET:PREFIX does", valueName: "PREFIX"),
            completion: .list([]))
    var prefix: String?

    @Flag(name: .customLong("read-only"), help: "refuse every change (EROFS)")
    var readOnly = false

    @Option(help: ArgumentHelp("owner of files and directories that carry none of their own (default: the mounting user)", valueName: "N"),
            completion: .list([]))
    var uid: String?

    @Option(help: ArgumentHelp("group of files and directories that carry none of their own (default: the mounting user's)", valueName: "N"),
            completion: .list([]))
    var gid: String?

    @Option(name: .customLong("file-mode"),
            help: ArgumentHelp("permission bits of files that carry none (default 0644)", valueName: "OCTAL"),
            completion: .list([]))
    var fileMode: String?

    @Option(name: .customLong("dir-mode"),
            help: ArgumentHelp("permission bits of directories that carry none (default 0755)", valueName: "OCTAL"),
            completion: .list([]))
    var dirMode: String?

    @Flag(name: .customLong("allow-other"),
          help: "let other users access the mount (a mount by a user other than root needs user_allow_other in /etc/fuse.conf)")
    var allowOther = false

    @Flag(name: .customLong("allow-root"), help: "let root access a user's mount")
    var allowRoot = false

    @Option(help: ArgumentHelp("permission bits taken away from every file and directory, whatever the bucket stores, e.g. 022 or 077 (default 0)",
                               valueName: "OCTAL"),
            completion: .list([]))
    var umask: String?

    @Flag(name: .customLong("force-owner"),
          help: "show every file and directory as owned by --uid and --gid, whatever the bucket stores; chown to anyone else is refused")
    var forceOwner = false

    @Flag(help: "honour setuid and setgid bits of files in the bucket (default: not, as with mount's nosuid: whoever writes the bucket could give a program root's rights)")
    var suid = false

    @Flag(help: "honour device nodes in the mount (default: not, as with mount's nodev)")
    var dev = false

    @Flag(name: .customLong("no-exec"), help: "do not let programs be run from the mount (mount's noexec)")
    var noExec = false

    @Flag(help: "extended attributes: user.* kept with each object as s3fs keeps them (x-amz-meta-xattr); security.* and system.* answered locally (default: none, so that ls -l asks nothing per file)")
    var xattr = false

    @Option(help: ArgumentHelp(
        """
        where modes, owners, mtimes and symlinks live: in object headers and a per-directory index read beside each \
        listing (index, the default); also a HeadObject for each entry the index does not cover, e.g. a bucket written \
        by s3fs, when a program stats it (head); or --file-mode and --uid for everything, nothing stored (none)
        """, valueName: "MODE"),
            completion: .list(MetadataMode.allCases.map(\.rawValue)))
    var metadata: String?

    @Option(name: .customLong("metadata-ttl"),
            help: ArgumentHelp("how long listings, attributes and \"no such file\" answers are trusted, here and in the kernel (default 60; 0 asks S3 every time; or indefinite)",
                               valueName: "SECONDS"),
            completion: .list(["0", "60", "indefinite"]))
    var metadataTTL: String?

    @Option(name: .customLong("notification-queue"),
            help: ArgumentHelp(
                """
                keep the caches current with the bucket's S3 event notifications, read from this SQS queue \
                (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME) or AMQP queue, as Ceph RGW and MinIO send \
                (amqp[s]://USER@HOST[:PORT]/VHOST?queue=NAME, no password in it); one queue per mount, see \
                docs/CONFIGURATION.md; --metadata-ttl then defaults to 3600
                """, valueName: "URL"),
            completion: .list([]))
    var notificationQueue: String?

    @Option(name: .customLong("notification-receivers"),
            help: ArgumentHelp("with --notification-queue: receive calls in flight at once during a burst of events; one while the queue is quiet (default 8; 1 to 16)", valueName: "N"),
            completion: .list([]))
    var notificationReceivers: String?

    @Option(name: .customLong("notification-check-interval"),
            help: ArgumentHelp("with --notification-queue: seconds between the probes the mount sends to its own queue, to see that every event reaches it (default 15; 0: none, and the mount's own changes are not checked either: for a notification configuration that filters by prefix or suffix)",
                               valueName: "SECONDS"),
            completion: .list([]))
    var notificationCheckInterval: String?
    @Option(name: .customLong("notification-password-file"),
            help: ArgumentHelp("the password of an amqp:// --notification-queue's user, read from this file (mode 600, owned by you or root; default: the environment variable S3MOUNT_AMQP_PASSWORD)",
                               valueName: "PATH"),
            completion: .file())
    var notificationPasswordFile: String?

    @Option(name: .customLong("log-file"),
            help: ArgumentHelp("write the log here (default: stderr in the foreground, else syslog)", valueName: "PATH"),
            completion: .file())
    var logFile: String?

    @Option(name: .customLong("spool-dir"),
            help: ArgumentHelp("where files being written wait for upload; needs room for the largest file written at once, and no other user may write it (default: the unit's StateDirectory, else s3mount-UID made private in TMPDIR or /var/tmp)",
                               valueName: "DIR"),
            completion: .directory)
    var spoolDir: String?

    @Flag(name: .customLong("no-upload-checksums"),
          help: "send uploads without the CRC-32 that S3 verifies, for a store that mishandles it (one that refuses it is detected)")
    var noUploadChecksums = false

    @Option(name: .customLong("stall-timeout"),
            help: ArgumentHelp("a request slower than 1 KiB/s, or without an answer, for this long is retried on a new connection (default 10; 1 to 3600)",
                               valueName: "SECONDS"),
            completion: .list([]))
    var stallTimeout: String?

    @Option(name: .customLong("read-retry-time"),
            help: ArgumentHelp("how long retries with backoff may go on before a read or listing fails with EIO (default 20; 1 to 3600)",
                               valueName: "SECONDS"),
            completion: .list([]))
    var readRetryTime: String?

    @Option(name: .customLong("write-retry-time"),
            help: ArgumentHelp("how long retries with backoff may go on before an upload, copy or delete fails with EIO (default 60; 1 to 86400)",
                               valueName: "SECONDS"),
            completion: .list([]))
    var writeRetryTime: String?

    @Flag(name: .customLong("no-verify-reads"),
          help: "do not check the CRC-32 S3 keeps for an object against the bytes a whole-object read receives (default: checked when S3 has one; costs about 1 ns of CPU per byte read)")
    var noVerifyReads = false

    @Flag(name: .customLong("no-guess-content-type"),
          help: "upload everything as application/octet-stream (default: the type of the extension, from /etc/mime.types or a built-in table, as s3fs and rclone do)")
    var noGuessContentType = false

    @Option(help: ArgumentHelp("keep file data read once on local disk, validated by the listing's ETag and kept across mounts; created (0700) if missing",
                               valueName: "DIR"),
            completion: .directory)
    var cache: String?

    @Flag(name: .customLong("write-back"),
          help: "close returns once the file is in a journal on local disk (synced); uploads run in parallel in the background, fsync waits for S3, and a mount after a crash sends what was owed (default: close returns once S3 has the file; see docs/SEMANTICS.md)")
    var writeBack = false

    @Option(name: .customLong("write-back-max-files"),
            help: ArgumentHelp("with --write-back: closed files whose upload may be owed at once; a close past that waits (default 1024; 1 to 100000)", valueName: "N"),
            completion: .list([]))
    var writeBackMaxFiles: String?

    @Option(name: .customLong("write-back-max-bytes"),
            help: ArgumentHelp("with --write-back: bytes of closed files whose upload may be owed at once, such as 512M or 4G; a close past that waits (default 1G; at least 1M)",
                               valueName: "SIZE"),
            completion: .list([]))
    var writeBackMaxBytes: String?

    @Option(name: .customLong("max-cache-size"),
            help: ArgumentHelp("bound of --cache, such as 512M or 20G; least recently used objects are evicted (default 5G)", valueName: "SIZE"),
            completion: .list([]))
    var maxCacheSize: String?

    @Option(name: .customLong("read-part-size"),
            help: ArgumentHelp("ranged GET size of a sequential reader on a link slower per connection than the machine, as S3 (default 8M; 1M to 64M)",
                               valueName: "SIZE"),
            completion: .list([]))
    var readPartSize: String?

    @Option(name: .customLong("read-concurrency"),
            help: ArgumentHelp("parts one sequential reader keeps in flight (default 10; 1 to 64; 1 reads every file with one stream)", valueName: "N"),
            completion: .list([]))
    var readConcurrency: String?

    @Option(name: .customLong("max-read-memory"),
            help: ArgumentHelp("read buffers of all readers together (default 256M; at least 16M)", valueName: "SIZE"),
            completion: .list([]))
    var maxReadMemory: String?

    @Option(name: .customLong("walk-read-ahead"),
            help: ArgumentHelp("files fetched ahead when a program reads a directory's files in listing order: tar, grep -r, cp -r, rsync (default 8; 0 turns it off; at most 64)",
                               valueName: "N"),
            completion: .list([]))
    var walkReadAhead: String?

    @Option(name: .customLong("read-ahead"),
            help: ArgumentHelp("the kernel's read-ahead for the mount (default 4096; 4 to 262144); setting it needs root, otherwise FUSE's 128 stays",
                               valueName: "KIB"),
            completion: .list([]))
    var readAhead: String?

    @Option(name: .customLong("metrics-address"),
            help: ArgumentHelp("serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9877", valueName: "HOST:PORT"),
            completion: .list([]))
    var metricsAddress: String?

    @Option(help: ArgumentHelp("encrypt new objects (uploads, copies, the metadata index) with SSE-S3 (AES256) or SSE-KMS (aws:kms)",
                               valueName: "AES256|aws:kms"),
            completion: .list(["AES256", "aws:kms"]))
    var sse: String?

    @Option(name: .customLong("sse-kms-key-id"),
            help: ArgumentHelp("the KMS key of --sse aws:kms: key id, ARN or alias (default: the account's aws/s3 key)", valueName: "KEY"),
            completion: .list([]))
    var sseKMSKeyID: String?

    @Flag(name: .customLong("sse-bucket-key"), help: "with --sse aws:kms: use an S3 bucket key (fewer KMS requests: lower cost, less KMS throttling)")
    var sseBucketKey = false

    @Option(name: .customLong("sse-c-key-file"),
            help: ArgumentHelp("SSE-C: read and write every object with the customer key in this file (32 bytes, or their base64); refused if others can read it (chmod 600)",
                               valueName: "PATH"),
            completion: .file())
    var sseCKeyFile: String?

    @Option(name: .customLong("storage-class"),
            help: ArgumentHelp("storage class of new objects, e.g. STANDARD_IA or INTELLIGENT_TIERING (default: the bucket's, STANDARD); renames and metadata changes keep an object's own",
                               valueName: "CLASS"),
            completion: .list(StorageClass.known))
    var storageClass: String?

    @Flag(name: .customLong("requester-pays"), help: "agree to pay for the requests and transfer of a requester-pays bucket (x-amz-request-payer)")
    var requesterPays = false

    @Option(name: .customLong("expected-bucket-owner"),
            help: ArgumentHelp("the 12-digit account id that must own the bucket; S3 refuses every request otherwise (403)", valueName: "ACCOUNT"),
            completion: .list([]))
    var expectedBucketOwner: String?

    @Option(name: .customLong("as-of"),
            help: ArgumentHelp("mount a versioned bucket read-only as it was at this time: 2026-12-07T17:00:00Z (UTC) or @EPOCH-SECONDS (needs s3:ListBucketVersions and s3:GetObjectVersion)",
                               valueName: "TIME"),
            completion: .list([]))
    var asOf: String?

    @Flag(name: [.customShort("d"), .customLong("debug")],
          help: "one log line per S3 request (operation, key, status, milliseconds) and per FUSE operation")
    var debug = false

    @Flag(name: [.customShort("f"), .customLong("foreground")], help: "stay attached and log to stderr; what the systemd unit uses")
    var foreground = false

    /// Never set after parsing: `Fstab.translate` replaces every `-o` and its value by the options
    /// it stands for before the parser sees them. Declared for the help, the completions and the man page.
    @Option(name: .customShort("o"),
            help: ArgumentHelp("the options above in fstab form: ro, allow_other, uid=1000, endpoint_url=URL, ...",
                               discussion: Fstab.help, valueName: "OPT[,OPT...]"),
            completion: .custom { words, index, prefix in Fstab.complete(prefix) })
    var mountOptions: [String] = []
}

/// `s3mount stats MOUNTPOINT`: main.swift routes a first argument `stats` here. Not a declared
/// subcommand of S3MountCommand, whose two positional arguments come first (a bucket may be
/// called `help`); the bucket's completion offers `stats` as the first word instead.
struct StatsCommandLine: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "s3mount stats",
        abstract: "Prints, as JSON, the requests sent since the mount (by operation and outcome), bytes, and the caches' hits and misses.")

    @Argument(help: ArgumentHelp("the mount point of a running s3mount", valueName: "mountpoint"), completion: .directory)
    var mountpoint: String
}

/// `s3mount restore PATH...`: starts restoring archived files of a running mount (routed like `stats`).
struct RestoreCommandLine: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "s3mount restore",
        abstract: "Starts restoring archived files (GLACIER, DEEP_ARCHIVE) of a running mount, so that they can be read once the restore completes.")

    @Argument(help: ArgumentHelp("files on an s3mount mount", valueName: "path"), completion: .file())
    var paths: [String]

    @Option(help: ArgumentHelp("days the restored copy stays (default 7; 1 to 36500)", valueName: "N"))
    var days: Int = 7

    @Option(help: ArgumentHelp("retrieval tier: Standard (hours), Bulk (cheapest, slowest) or Expedited (minutes; not for DEEP_ARCHIVE) (default Standard)",
                               valueName: "TIER"),
            completion: .list(["Standard", "Bulk", "Expedited"]))
    var tier: String = "Standard"

    func validate() throws {
        guard !paths.isEmpty else { throw ValidationError("no PATH given") }
        guard (1...36500).contains(days) else { throw ValidationError("--days expects 1 to 36500, got \(days)") }
        guard ["Standard", "Bulk", "Expedited"].contains(tier) else { throw ValidationError("--tier expects Standard, Bulk or Expedited, got \"\(tier)\"") }
    }
}

/// Profile names in the AWS shared files, for completing `--profile`.
enum AWSProfiles {
    static func names() -> [String] { AWSConfigFile.profileNames(env: Daemon.environment()) }
}
