import CCurlShim
import CFuse3
import FuseBridge
import Glibc
import S3
import S3FSCore

struct MountFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

enum Daemon {
    static func environment() -> [String: String] {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return env
    }

    /// Checks the mount point before anything else: exists, is a directory, is not mounted.
    static func checkMountpoint(_ path: String) throws -> String {
        var st = stat()
        guard stat(path, &st) == 0 else {
            let e = errno
            if e == ENOTCONN { throw MountFailure("mount point \(path) is a dead mount (\"Transport endpoint is not connected\"); run: fusermount3 -u \(path)") }
            throw MountFailure("mount point \(path) does not exist")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw MountFailure("mount point \(path) is not a directory") }
        guard let rp = realpath(path, nil) else { throw MountFailure("cannot resolve mount point \(path)") }
        let abs = String(cString: rp)
        free(rp)
        if isMounted(abs) { throw MountFailure("\(abs) is already a mount point") }
        return abs
    }

    static func resolved(_ path: String, what: String) throws -> String {
        guard let rp = realpath(path, nil) else { throw MountFailure("\(what) \(path) does not exist") }
        defer { free(rp) }
        return String(cString: rp)
    }

    /// Where files being written wait for upload. It holds every user's unsaved data and the
    /// record of multipart uploads the next mount aborts, so it is private to the daemon's user:
    /// given (`--spool-dir`), it must be a folder nobody else can write; by default it is
    /// systemd's `StateDirectory=` of the unit, else `s3mount-UID` made 0700 in `$TMPDIR` or
    /// /var/tmp (a world-writable folder, where it is made without following links and checked).
    static func spoolFolder(given: String?, env: [String: String]) throws -> String {
        if let given {
            let path = try resolved(given, what: "spool directory")
            if let why = PrivateFolder.problem(path, what: "spool directory") { throw MountFailure(why) }
            guard access(path, W_OK) == 0 else { throw MountFailure("spool directory \(path) is not writable") }
            return path
        }
        if let state = env["STATE_DIRECTORY"]?.split(separator: ":").first.map(String.init), !state.isEmpty {
            let path = try resolved(state, what: "the unit's StateDirectory")
            if let why = PrivateFolder.problem(path, what: "the unit's StateDirectory") { throw MountFailure(why) }
            return path
        }
        let base = try resolved(env["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/tmp", what: "temporary directory")
        let path = base + "/s3mount-\(geteuid())"
        if let why = PrivateFolder.make(path, what: "spool directory") { throw MountFailure(why + " (or give --spool-dir)") }
        guard access(path, W_OK) == 0 else { throw MountFailure("spool directory \(path) is not writable") }
        return path
    }

    static func isMounted(_ abs: String) -> Bool {
        MountTable.entries().contains { $0.mountpoint == abs }
    }

    /// Returns the exit code. In the background mode the parent waits on a pipe until the child
    /// reports the mount ready (exit 0) or why it failed (exit 1): nothing is left mounted then.
    static func start(_ config: MountConfig) -> Int32 {
        var config = config
        let mountpoint: String
        do {
            mountpoint = try checkMountpoint(config.mountpoint)
            // Resolved now: the daemon runs from "/".
            config.spoolDir = try spoolFolder(given: config.spoolDir, env: environment())
            if let cache = config.cacheDir {
                if mkdir(cache, 0o700) != 0 && errno != EEXIST { throw MountFailure("cache directory \(cache) cannot be created: \(String(cString: strerror(errno)))") }
                config.cacheDir = try resolved(cache, what: "cache directory")
                // The cache's files are read back as object bytes and written through: nobody else
                // may plant or swap them.
                if let why = PrivateFolder.problem(config.cacheDir!, what: "cache directory") { throw MountFailure(why) }
                guard access(config.cacheDir!, W_OK) == 0 else { throw MountFailure("cache directory \(config.cacheDir!) is not writable") }
            }
            // Secrets files must be private, as s3fs insists too.
            if let envFile = getenv("S3MOUNT_ENV_FILE").map({ String(cString: $0) }), !envFile.isEmpty {
                try CredentialsFileCheck.check(envFile, what: "environment file")
            }
            if let q = config.notificationQueue, AMQPEndpoint.isAMQP(q) {
                config.amqpPassword = try AMQPPassword.read(file: config.notificationPasswordFile, env: Self.environment())
            }
            if let kf = config.sseCustomerKeyFile {
                config.policy.customerKey = try CustomerKeyFile.read(kf)
            }
            if let cf = config.credentialsFile {
                try CredentialsFileCheck.check(cf, what: "credentials file")
                config.credentialsFile = try resolved(cf, what: "credentials file")
            }
            // The shared-credentials file the chain would read (AWS_SHARED_CREDENTIALS_FILE or
            // ~/.aws/credentials) is held to the same rule, whichever way it was named.
            let env = Self.environment()
            if config.credentialsFile == nil, !config.noSignRequest, env["AWS_ACCESS_KEY_ID"] == nil {
                let shared = AWSConfigFile.credentialsPath(env)
                if access(shared, F_OK) == 0 { try CredentialsFileCheck.check(shared, what: "credentials file") }
            }
        } catch {
            fputs("s3mount: \(error)\n", stderr)
            return 1
        }
        if config.foreground {
            Log.shared.level = config.debug ? .debug : .info
            if let lf = config.logFile { redirectLog(lf) }
            return serve(config, mountpoint: mountpoint, report: { ok, msg in
                if !ok { fputs("s3mount: \(msg)\n", stderr) } else { Log.info(msg) }
            })
        }
        // fork before any thread or curl handle exists.
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { fputs("s3mount: pipe failed\n", stderr); return 1 }
        let pid = fork()
        if pid < 0 { fputs("s3mount: fork failed\n", stderr); return 1 }
        if pid > 0 {
            close(fds[1])
            var buf = [UInt8](repeating: 0, count: 4096)
            var got = [UInt8]()
            while true {
                let n = read(fds[0], &buf, buf.count)
                if n <= 0 { break }
                got += buf[0..<n]
            }
            let msg = String(decoding: got, as: UTF8.self)
            if msg.hasPrefix("OK") { return 0 }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            fputs("s3mount: \(msg.isEmpty ? "the daemon exited before the mount was ready" : String(msg.dropFirst(4)))\n", stderr)
            return 1
        }
        close(fds[0])
        setsid()
        Log.shared.level = config.debug ? .debug : .info
        let reportFD = fds[1]
        if let lf = config.logFile { redirectLog(lf) }
        return serve(config, mountpoint: mountpoint, report: { ok, msg in
            let line = (ok ? "OK  " : "ERR ") + msg
            _ = line.withCString { write(reportFD, $0, strlen($0)) }
            close(reportFD)
            if ok {
                if config.logFile == nil { Log.shared.useSyslog() }
                // Detach from the terminal now that the parent knows the result.
                let devnull = open("/dev/null", O_RDWR)
                dup2(devnull, 0)
                dup2(devnull, 1)
                dup2(devnull, 2)
                if devnull > 2 { close(devnull) }
                _ = chdir("/")
                Log.info(msg)
            }
        })
    }

    static func redirectLog(_ path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        if fd >= 0 { Log.shared.setOutput(fd: fd) } else { fputs("s3mount: cannot open log file \(path)\n", stderr) }
    }

    static func serve(_ config: MountConfig, mountpoint: String, report: (Bool, String) -> Void) -> Int32 {
        StatsSignal.blockInAllThreads() // before any thread exists, so every thread inherits it
        s3m_malloc_arenas(2)
        CurlTransport.globalInitialize()
        var env = environment()
        if let cf = config.credentialsFile { env["AWS_SHARED_CREDENTIALS_FILE"] = cf }
        var transportOptions = CurlTransport.Options()
        transportOptions.caBundle = env["AWS_CA_BUNDLE"].flatMap { $0.isEmpty ? nil : $0 }
        transportOptions.stallTimeoutSeconds = config.stallTimeout
        let transport = CurlTransport(options: transportOptions)
        let endpoint = config.endpointURL ?? env["AWS_ENDPOINT_URL_S3"] ?? env["AWS_ENDPOINT_URL"]
        if let ep = endpoint, config.endpointURL == nil, let why = S3Client.endpointProblem(ep) {
            report(false, "invalid endpoint URL \(OptionValues.redacted(ep)) in the environment: \(why)")
            return 1
        }
        var region = config.region ?? env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"]
        let profileName = config.profile ?? env["AWS_PROFILE"]
        if region == nil, let r = AWSConfigFile.profile(profileName ?? "default", env: env)?["region"] { region = r }

        let creds: CredentialsProvider
        do {
            var o = CredentialsChain.Options(profile: config.profile, noSignRequest: config.noSignRequest)
            o.region = region
            creds = try CredentialsChain.resolve(o, env: env, transport: transport)
        } catch {
            report(false, "\(error)")
            return 1
        }
        var s3Config = S3Config(bucket: config.bucket, endpoint: endpoint, region: region, forcePathStyle: config.forcePathStyle)
        s3Config.uploadChecksums = config.uploadChecksums
        s3Config.guessContentType = config.guessContentType
        s3Config.verifyReads = config.verifyReads
        s3Config.readRetrySeconds = config.readRetryTime
        s3Config.writeRetrySeconds = config.writeRetryTime
        s3Config.policy = config.policy
        s3Config.asOf = config.asOf
        let client = S3Client(config: s3Config,
                              credentials: creds, transport: transport, traceRequests: config.debug)
        if region == nil && endpoint == nil, let r = client.discoverRegion() {
            client.setRegion(r)
        }
        var fsOptions = FSOptions()
        fsOptions.prefix = Names.normalizePrefix(config.prefix)
        fsOptions.uid = config.uid
        fsOptions.gid = config.gid
        fsOptions.fileMode = config.fileMode
        fsOptions.dirMode = config.dirMode
        fsOptions.umask = config.umask
        fsOptions.forceOwner = config.forceOwner
        fsOptions.xattr = config.xattr
        fsOptions.metadataTTL = config.metadataTTL
        fsOptions.kernelReadAhead = config.readAheadKiB << 10
        fsOptions.readOnly = config.readOnly
        fsOptions.metadata = config.metadata
        fsOptions.spoolDir = config.spoolDir ?? "/var/tmp"
        fsOptions.notifications = config.notificationQueue != nil
        fsOptions.writeBack = config.writeBack && !config.readOnly
        fsOptions.writeBackMaxFiles = config.writeBackMaxFiles
        fsOptions.writeBackMaxBytes = config.writeBackMaxBytes

        // One small listing proves the bucket exists, is reachable and that we may list it. It asks
        // for the root's metadata index, so it also tells whether there is one.
        let checked: ListPage
        let checkedAt = monotonicSeconds()
        do {
            checked = try client.listObjectsV2(prefix: Filesystem.metadataIndexKey(dir: fsOptions.prefix), delimiter: nil, maxKeys: 1, retrySeconds: 5)
        } catch let e as S3Error {
            report(false, describe(e, config: config, endpoint: endpoint ?? "AWS (\(client.region))"))
            return 1
        } catch {
            report(false, "\(error)")
            return 1
        }

        fsOptions.readPartSize = config.readPartSize
        fsOptions.readConcurrency = config.readConcurrency
        fsOptions.maxReadMemory = config.maxReadMemory
        fsOptions.walkReadAhead = config.walkReadAhead
        fsOptions.verifyReads = config.verifyReads
        // What tells this mount's objects apart from another store's or bucket's in shared
        // folders (the data cache, the record of multipart uploads).
        let storeName = "\(endpoint ?? "aws")/\(config.bucket)"
        var cache: DataCache? = nil
        if let dir = config.cacheDir {
            do {
                cache = try DataCache(root: dir, maxBytes: config.maxCacheSize, namespace: storeName)
            } catch {
                report(false, "cache directory \(dir): \(error)")
                return 1
            }
        }
        let journal = config.readOnly ? nil : UploadJournal(spoolDir: fsOptions.spoolDir, store: storeName)
        var writeBackJournal: WriteBackJournal? = nil
        if fsOptions.writeBack {
            guard let j = WriteBackJournal(spoolDir: fsOptions.spoolDir, store: storeName) else {
                report(false, "--write-back: cannot keep its journal in \(fsOptions.spoolDir)")
                return 1
            }
            writeBackJournal = j
        }
        let fs = Filesystem(store: client, options: fsOptions, cache: cache, journal: journal, writeBackJournal: writeBackJournal)
        // Files an earlier run closed with --write-back and did not upload (it died): sent before
        // the mount answers a lookup, so nobody sees their old contents.
        fs.finishEarlierWriteBacks(spoolDir: fsOptions.spoolDir, store: storeName)
        fs.reportLeftovers()
        if let journal {
            // Multipart uploads an earlier run started and never ended: their parts cost money.
            Thread {
                s3m_set_thread_name("s3m-journal")
                journal.cleanUpAfterEarlierRuns { try client.abortMultipartUpload($0, uploadId: $1) }
            }.start()
        }
        fs.noteRootIndexListing(checked, at: checkedAt)
        let bridge = FuseBridge(fs: fs, trace: config.debug)
        var metrics: MetricsServer? = nil
        if let addr = config.metricsAddress {
            do { metrics = try MetricsServer(address: addr, bridge: bridge) } catch {
                report(false, "\(error)")
                return 1
            }
        }
        var mo = FuseSession.MountOptions(fsname: "s3mount:\(config.bucket)")
        mo.allowOther = config.allowOther
        mo.allowRoot = config.allowRoot
        mo.readOnly = config.readOnly
        mo.suid = config.suid
        mo.dev = config.dev
        mo.exec = !config.noExec
        mo.readAheadKiB = config.readAheadKiB
        let session: FuseSession
        do {
            session = try FuseSession(bridge: bridge, mountpoint: mountpoint, options: mo, debug: false)
        } catch {
            report(false, "\(error)")
            return 1
        }
        metrics?.start()
        StatsSignal.start(bridge)
        var listener: NotificationListener? = nil
        if let url = config.notificationQueue {
            // A queue that cannot be read does not stop the mount: it falls back to the TTL a mount
            // without notifications has, with a warning, until the queue answers.
            do {
                let queue: EventQueue = AMQPEndpoint.isAMQP(url)
                    ? try AMQPQueue(url: url, password: config.amqpPassword ?? "", caFile: env["S3MOUNT_AMQP_CA_FILE"].flatMap { $0.isEmpty ? nil : $0 })
                    : try SQSClient(queueURL: url, region: client.region, credentials: creds, transport: transport)
                fs.setNotificationsHealthy(false)
                listener = NotificationListener(fs: fs, queue: queue, queueName: url, bucket: config.bucket,
                                                receivers: config.notificationReceivers, checkInterval: config.notificationCheckInterval)
                listener?.start()
            } catch {
                Log.warning("notification queue \(url): \(error); changes by others show within the TTL")
            }
        }
        report(true, "mounted \(config.bucket)\(config.prefix.isEmpty ? "" : ":" + config.prefix) on \(mountpoint) (credentials: \(creds.source?.name ?? "anonymous"), endpoint: \(endpoint ?? "AWS \(client.region)"))")
        SdNotify.send("READY=1\nMAINPID=\(getpid())\nSTATUS=Mounted \(config.bucket) on \(mountpoint)")
        let rc = session.run()
        listener?.stop()
        SdNotify.send("STOPPING=1\nSTATUS=Unmounting \(mountpoint)")
        // Files still open for writing when the mount went away: upload them before exiting.
        fs.shutdown(timeout: 300)
        journal?.close()
        // libfuse reports the signal that ended the loop as its result: that is a clean stop.
        let clean = rc == 0 || rc == SIGTERM || rc == SIGINT || rc == SIGHUP
        Log.info("unmounted \(mountpoint)\(clean ? "" : " (session loop error \(rc))")")
        return clean ? 0 : 1
    }

    static func describe(_ e: S3Error, config: MountConfig, endpoint: String) -> String {
        switch e.kind {
        case .noSuchBucket: return "bucket \"\(config.bucket)\" does not exist at \(endpoint)"
        case .notFound: return "bucket \"\(config.bucket)\" not found at \(endpoint) (HTTP 404)"
        case .accessDenied:
            var why = "check the credentials' permissions (\(config.asOf == nil ? "s3:ListBucket" : "s3:ListBucketVersions"))"
            if let owner = config.policy.expectedBucketOwner { why += ", and that account \(owner) owns the bucket (--expected-bucket-owner)" }
            if config.policy.requesterPays { why += "; the bucket may not allow requester-pays access" }
            return "access denied to bucket \"\(config.bucket)\" (\(e.code)): " + why
        case .invalidAccessKeyId, .signatureDoesNotMatch:
            if e.code == "NoCredentials" { return e.message }
            return "credentials rejected by \(endpoint) (\(e.code)): check the access key and secret"
        case .transport: return "cannot reach \(endpoint): \(e.message)"
        default: return "cannot list bucket \"\(config.bucket)\": \(e)"
        }
    }
}

enum StatsCommand {
    static func run(_ mountpoint: String) -> Int32 {
        guard let json = FuseBridge.readStats(mountpoint: mountpoint) else {
            let e = errno
            if e == ENOTTY || e == EINVAL || e == ENOSYS {
                fputs("s3mount: \(mountpoint) is not an s3mount mount\n", stderr)
            } else {
                fputs("s3mount: cannot read statistics from \(mountpoint): \(String(cString: strerror(e)))\n", stderr)
            }
            return 1
        }
        print(json)
        return 0
    }
}

enum RestoreCommand {
    /// One line per path; exit 1 if any restore could not be started.
    static func run(_ c: RestoreCommandLine) -> Int32 {
        var failed = false
        for path in c.paths {
            guard let r = FuseBridge.requestRestore(path: path, days: c.days, tier: c.tier) else {
                let e = errno
                let why = e == ENOTTY || e == ENOSYS ? "not on an s3mount mount" : e == EOPNOTSUPP ? "the store cannot restore" : String(cString: strerror(e))
                fputs("s3mount restore: \(path): \(why)\n", stderr)
                failed = true
                continue
            }
            switch r {
            case .started: print("\(path): restore started (\(c.tier), the copy kept \(c.days) days)")
            case .alreadyInProgress: print("\(path): a restore is already in progress")
            case .alreadyRestored: print("\(path): already restored (its copy is kept \(c.days) days from now)")
            }
        }
        return failed ? 1 : 0
    }
}
