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
    /// Whole-object reads are checked against S3's CRC-32 (`--no-verify-reads` turns it off).
    var verifyReads = true
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
    /// What the bucket may not grant (`--umask`, `--force-owner`, and the mount's flags:
    /// nosuid and nodev unless `--suid`/`--dev`, noexec with `--no-exec`).
    var umask: UInt32 = 0
    var forceOwner = false
    var suid = false
    var dev = false
    var noExec = false
    /// `--xattr`: user.* extended attributes kept with the objects.
    var xattr = false
    /// `--write-back` and its bounds.
    var writeBack = false
    var writeBackMaxFiles = 1024
    var writeBackMaxBytes: Int64 = 1 << 30
    /// Default 60 s: long enough that browsing a tree (ls, find, a file manager's repeated
    /// stats) is served from memory, short enough that changes made by other S3 clients show up
    /// within a minute.
    var metadataTTL: Double = 60
    var debug = false
    var foreground = false
    var logFile: String?
    /// Where files being written wait for upload (default: see Daemon.spoolFolder).
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
    /// The SQS or AMQP queue S3 event notifications of the bucket arrive at (`--notification-queue`).
    var notificationQueue: String?
    /// Receive calls in flight at once, and seconds between probes (0: none).
    var notificationReceivers = 8
    var notificationCheckInterval: Double = 15
    /// An AMQP queue's password: the file named (`--notification-password-file`), read when the
    /// mount starts, else S3MOUNT_AMQP_PASSWORD; `amqpPassword` holds it then.
    var notificationPasswordFile: String?
    var amqpPassword: String?
    /// Encryption, storage class, requester pays and expected owner of every request (the SSE-C
    /// key is read from `sseCustomerKeyFile` when the mount starts, not at parsing).
    var policy = RequestPolicy()
    var sseCustomerKeyFile: String?
    /// `--as-of`: the moment a versioned bucket is shown at (read-only), seconds since 1970.
    var asOf: Double?
    /// --metadata-ttl with notifications, unless given: events keep the caches current, the TTL
    /// only bounds what a lost event can cost.
    static let notificationTTL: Double = 3600
}

struct UsageError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

extension S3MountCommand {
    /// The parsed command line as a MountConfig, every value checked. `origin` names options that
    /// came from the fstab form (`file_mode` for --file-mode), for the messages.
    func config(origin: [String: String] = [:]) throws -> MountConfig {
        typealias V = OptionValues
        func name(_ long: String) -> String { origin[long] ?? "--" + long }
        var c = MountConfig()
        c.endpointURL = endpointURL
        c.region = region
        c.forcePathStyle = forcePathStyle
        c.profile = profile
        c.noSignRequest = noSignRequest
        c.uploadChecksums = !noUploadChecksums
        c.guessContentType = !noGuessContentType
        c.verifyReads = !noVerifyReads
        if let v = stallTimeout { c.stallTimeout = Int(try V.seconds(name("stall-timeout"), v, max: 3600)) }
        if let v = readRetryTime { c.readRetryTime = try V.seconds(name("read-retry-time"), v, max: 3600) }
        if let v = writeRetryTime { c.writeRetryTime = try V.seconds(name("write-retry-time"), v, max: 86400) }
        if let v = prefix { c.prefix = v }
        c.readOnly = readOnly
        if let v = uid { c.uid = try V.number(name("uid"), v) }
        if let v = gid { c.gid = try V.number(name("gid"), v) }
        if let v = fileMode { c.fileMode = try V.mode(name("file-mode"), v) }
        if let v = dirMode { c.dirMode = try V.mode(name("dir-mode"), v) }
        c.allowOther = allowOther
        c.allowRoot = allowRoot
        if let v = umask { c.umask = try V.mode(name("umask"), v) }
        c.forceOwner = forceOwner
        c.suid = suid
        c.dev = dev
        c.noExec = noExec
        c.xattr = xattr
        if let q = notificationQueue {
            if AMQPEndpoint.isAMQP(q) {
                if case .failure(let why) = AMQPEndpoint.parse(q) { throw UsageError("invalid \(name("notification-queue")) \(V.redacted(q)): \(why)") }
            } else if let why = SQSClient.urlProblem(q) {
                throw UsageError("invalid \(name("notification-queue")) \(V.redacted(q)): \(why)")
            }
            c.notificationQueue = q
            c.metadataTTL = MountConfig.notificationTTL
        }
        if let v = notificationReceivers { c.notificationReceivers = try V.count(name("notification-receivers"), v, 1...16) }
        if let v = notificationCheckInterval { c.notificationCheckInterval = v == "0" ? 0 : try V.seconds(name("notification-check-interval"), v, max: 3600) }
        if let f = notificationPasswordFile {
            // SQS signs with the mount's AWS credentials: a password is for AMQP only.
            guard let q = c.notificationQueue, AMQPEndpoint.isAMQP(q) else {
                throw UsageError("\(name("notification-password-file")) is for an amqp:// or amqps:// \(name("notification-queue"))")
            }
            c.notificationPasswordFile = f
        }
        if let v = metadataTTL { c.metadataTTL = try V.ttl(v) }
        if let v = metadata { c.metadata = try V.metadataMode(v) }
        c.logFile = logFile
        c.spoolDir = spoolDir
        c.metricsAddress = metricsAddress
        c.credentialsFile = credentialsFile
        if let v = readAhead { c.readAheadKiB = try V.readAhead(v) }
        c.cacheDir = cache
        c.writeBack = writeBack
        if let v = writeBackMaxFiles { c.writeBackMaxFiles = try V.count(name("write-back-max-files"), v, 1...100_000) }
        if let v = writeBackMaxBytes { c.writeBackMaxBytes = Int64(try V.byteSize(name("write-back-max-bytes"), v, min: 1 << 20)) }
        if let v = maxCacheSize { c.maxCacheSize = Int64(try V.byteSize(name("max-cache-size"), v, min: 1 << 20)) }
        if let v = readPartSize { c.readPartSize = try V.byteSize(name("read-part-size"), v, min: 1 << 20, max: 64 << 20) }
        if let v = readConcurrency { c.readConcurrency = try V.count(name("read-concurrency"), v, 1...64) }
        if let v = maxReadMemory { c.maxReadMemory = try V.byteSize(name("max-read-memory"), v, min: 16 << 20) }
        if let v = walkReadAhead { c.walkReadAhead = try V.count(name("walk-read-ahead"), v, 0...64) }
        c.policy = try V.policy(sse: sse, kmsKeyID: sseKMSKeyID, bucketKey: sseBucketKey, storageClass: storageClass,
                                requesterPays: requesterPays, expectedBucketOwner: expectedBucketOwner, name: name)
        if let f = sseCKeyFile {
            if c.policy.encryption != nil { throw UsageError("\(name("sse-c-key-file")) and \(name("sse")) contradict each other: an object has one encryption") }
            c.sseCustomerKeyFile = f
        }
        if let v = asOf {
            c.asOf = try V.moment(name("as-of"), v)
            c.readOnly = true
            // Events tell of the bucket now, not of the moment shown.
            if c.notificationQueue != nil { throw UsageError("\(name("as-of")) and \(name("notification-queue")) contradict each other") }
        }
        c.debug = debug
        c.foreground = foreground
        try V.parseSource(source, into: &c)
        c.mountpoint = mountpoint
        if let ep = c.endpointURL, let why = S3Client.endpointProblem(ep) {
            throw UsageError("invalid endpoint URL \(V.redacted(ep)): \(why)")
        }
        if c.noSignRequest && c.profile != nil { throw UsageError("--no-sign-request and --profile contradict each other") }
        return c
    }
}

/// The checks and conversions of option values, with the messages s3mount gives for them.
enum OptionValues {
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

    static func policy(sse: String?, kmsKeyID: String?, bucketKey: Bool, storageClass: String?, requesterPays: Bool,
                       expectedBucketOwner: String?, name: (String) -> String) throws -> RequestPolicy {
        var p = RequestPolicy()
        switch sse {
        case nil:
            if kmsKeyID != nil || bucketKey { throw UsageError("\(kmsKeyID != nil ? name("sse-kms-key-id") : name("sse-bucket-key")) needs \(name("sse"))=aws:kms") }
        case "AES256"?:
            if kmsKeyID != nil || bucketKey { throw UsageError("\(kmsKeyID != nil ? name("sse-kms-key-id") : name("sse-bucket-key")) needs \(name("sse"))=aws:kms, not AES256") }
            p.encryption = .s3
        case "aws:kms"?:
            if let k = kmsKeyID, k.isEmpty || k.utf8.count > 2048 || k.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value >= 0x7F }) {
                throw UsageError("\(name("sse-kms-key-id")) expects a key id, ARN or alias, got \"\(k.prefix(80))\"")
            }
            p.encryption = .kms(keyID: kmsKeyID, bucketKey: bucketKey)
        case let other?:
            throw UsageError("\(name("sse")) expects AES256 or aws:kms, got \"\(other)\" (for a customer key: --sse-c-key-file)")
        }
        if let sc = storageClass {
            guard StorageClass.known.contains(sc) else {
                throw UsageError("\(name("storage-class")) expects one of \(StorageClass.known.joined(separator: ", ")), got \"\(sc)\"")
            }
            p.storageClass = sc
        }
        p.requesterPays = requesterPays
        if let o = expectedBucketOwner {
            guard o.utf8.count == 12, o.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                throw UsageError("\(name("expected-bucket-owner")) expects a 12-digit AWS account id, got \"\(o.prefix(40))\"")
            }
            p.expectedBucketOwner = o
        }
        return p
    }

    /// "2026-12-07T17:00:00Z" (UTC, fractions allowed) or "@1765126800".
    static func moment(_ name: String, _ v: String) throws -> Double {
        let t: Double?
        if v.hasPrefix("@") {
            t = Double(v.dropFirst()).flatMap { $0.isFinite ? $0 : nil }
        } else {
            t = v.hasSuffix("Z") && v.utf8.count <= 40 ? AmzDate.parseISO8601(v) : nil
        }
        guard let t, t > 0, t < 32_503_680_000 else {
            throw UsageError("\(name) expects a UTC time like 2026-12-07T17:00:00Z or @EPOCH-SECONDS, got \"\(v.prefix(60))\"")
        }
        return t
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
}
