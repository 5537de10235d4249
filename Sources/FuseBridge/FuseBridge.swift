import CFuse3
import Glibc
import S3
import S3FSCore
import Synchronization

/// Translates libfuse lowlevel requests into calls on the filesystem core and back. The C
/// callbacks are static, nonisolated functions: libfuse calls them on its worker threads.
public final class FuseBridge: @unchecked Sendable {
    public let fs: Filesystem
    let ttl: Double

    /// --debug: one log line per FUSE operation.
    let tracing: Bool
    /// Read-ahead (KiB) still to be set for the mount: the kernel only accepts it once INIT is done,
    /// so the first open applies it.
    let pendingReadAhead = Atomic<Int>(0)
    /// `/sys/class/bdi/MAJ:MIN/read_ahead_kb` of this mount, once found.
    private let readAheadFile = Locked<String?>(nil)
    var mountpoint = ""

    public init(fs: Filesystem, trace: Bool = false) {
        self.fs = fs
        self.tracing = trace
        // The kernel's own caches (entries, attributes, negative entries) follow --metadata-ttl.
        // With notifications the core's TTL is long, but drops to the short one while the queue
        // fails: the kernel asks the core again at least that often (which costs no request), so
        // that the fallback reaches it too. Events reach it at once (invalidations).
        let ttl = fs.options.notifications ? min(fs.options.metadataTTL, fs.options.degradedTTL) : fs.options.metadataTTL
        self.ttl = ttl.isFinite ? ttl : 60 * 60 * 24 * 365
        fs.currentKernelReadAhead = { [weak self] in self?.currentReadAhead() }
    }

    static func bridge(_ req: fuse_req_t?) -> FuseBridge {
        Unmanaged<FuseBridge>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    func stat(_ a: Attributes) -> stat {
        var st = Glibc.stat()
        st.st_ino = UInt(a.ino)
        st.st_mode = a.typeBits | a.mode
        st.st_nlink = UInt(a.nlink)
        st.st_uid = a.uid
        st.st_gid = a.gid
        st.st_size = Int(a.size)
        st.st_blksize = 1 << 20
        // (A size is at most 1 PiB once past the S3 layer; the division comes first all the same.)
        st.st_blocks = Int(a.size / 512 + (a.size % 512 > 0 ? 1 : 0))
        func ts(_ t: Timestamp) -> timespec { timespec(tv_sec: Int(clamping: t.sec), tv_nsec: Int(t.nsec)) }
        st.st_mtim = ts(a.mtime)
        st.st_atim = ts(a.atime ?? a.mtime)
        st.st_ctim = ts(a.ctime ?? a.mtime)
        st.st_rdev = UInt(a.rdev)
        return st
    }

    func entry(_ a: Attributes?) -> fuse_entry_param {
        var e = fuse_entry_param()
        e.entry_timeout = ttl
        if let a {
            e.ino = a.ino
            e.generation = 1
            e.attr = stat(a)
            // Attributes shown before the object's headers were read must be asked for again.
            e.attr_timeout = a.provisional ? 0 : ttl
        }
        return e
    }

    func trace(_ op: String, _ ino: UInt64, _ name: [UInt8]? = nil, _ result: @autoclosure () -> String) {
        guard tracing else { return }
        Log.debug("fuse \(op) ino=\(ino)\(name.map { " name=" + String(decoding: $0, as: UTF8.self) } ?? "") -> \(result())")
    }

    static func outcome<T>(_ r: Result<T, FSError>) -> String {
        switch r {
        case .success: return "ok"
        case .failure(let e): return "error \(e.errno) (\(e))"
        }
    }

    func replyAttr(_ req: fuse_req_t?, _ op: String, _ ino: UInt64, _ r: Result<Attributes, FSError>) {
        switch r {
        case .success(let a):
            var st = stat(a)
            fuse_reply_attr(req, &st, a.provisional ? 0 : ttl)
        case .failure(let err):
            replyError(req, op, ino, err)
        }
    }

    // MARK: - errors

    /// Error replies by FUSE operation and errno since the mount started (`s3mount stats`
    /// "fuse_errors", Prometheus `s3mount_fuse_errors_total`).
    let errorCounts = Locked<StatsText.FuseErrors>([:])
    /// When each (operation, errno) was last logged: failures are logged at most every few
    /// seconds each, with how many were not.
    private let lastLogged = Locked<[String: (at: Double, quiet: Int)]>([:])

    /// Answers a program expects in normal work (a name that does not exist, a directory that is
    /// not empty, a permission the kernel checks): counted, logged only with --debug. Anything
    /// else is a failure the user may need to know about: logged at warning.
    static let expectedErrnos: Set<Int32> = [ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, EISDIR, EPERM, EACCES, EROFS, EXDEV, ENAMETOOLONG,
                                             EINVAL, ENOSYS, EINTR, ENODATA, ENOTTY, ERANGE, ENOTSUP, ESTALE]

    /// The one way a callback answers with an error: counted per operation, logged at its
    /// level, then replied.
    func replyError(_ req: fuse_req_t?, _ op: String, _ ino: UInt64, _ err: FSError) {
        errorCounts.withLock { $0[op, default: [:]][err.errno, default: 0] += 1 }
        if Self.expectedErrnos.contains(err.errno) {
            trace(op, ino, nil, "error \(err.errno) (\(err))")
        } else {
            let key = "\(op) \(err.errno)"
            let now = monotonicSeconds()
            let quiet: Int? = lastLogged.withLock { l in
                if let last = l[key], now - last.at < 5 { l[key]!.quiet += 1; return nil }
                let q = l[key]?.quiet ?? 0
                l[key] = (now, 0)
                return q
            }
            if let quiet { Log.warning("fuse \(op) ino=\(ino): \(err) (\(StatsText.errnoName(err.errno)))\(quiet > 0 ? "; \(quiet) more like it not logged" : "")") }
        }
        fuse_reply_err(req, err.errno)
    }

    /// Success (0) or the error, through `replyError`.
    func replyStatus(_ req: fuse_req_t?, _ op: String, _ ino: UInt64, _ err: FSError?) {
        if let err { replyError(req, op, ino, err) } else { fuse_reply_err(req, 0) }
    }

    /// The statistics as `s3mount stats` prints them, and as Prometheus text and a log line.
    public func statsJSON() -> String { StatsText.json(fs.stats(), fuseErrors: errorCounts.withLock { $0 }) }
    public func prometheusText() -> String { StatsText.prometheus(fs.stats(), fuseErrors: errorCounts.withLock { $0 }) }
    public func statsSummary() -> String { StatsText.summary(fs.stats()) }

    /// The calling process's uid and gid: the owner of what it creates.
    static func caller(_ req: fuse_req_t?) -> Filesystem.Caller {
        guard let ctx = fuse_req_ctx(req) else { return Filesystem.Caller(uid: getuid(), gid: getgid()) }
        return Filesystem.Caller(uid: ctx.pointee.uid, gid: ctx.pointee.gid)
    }

    static func name(_ p: UnsafePointer<CChar>?) -> [UInt8] {
        guard let p else { return [] }
        return Array(UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
    }

    /// Sets the mount's kernel read-ahead (`/sys/class/bdi/MAJ:MIN/read_ahead_kb`), found through
    /// /proc/self/mountinfo so no request reaches this mount. Only root may; anyone else keeps
    /// FUSE's 128 KiB, which is logged once.
    func applyReadAhead() {
        let kib = pendingReadAhead.exchange(0, ordering: .relaxed)
        guard kib != 0 else { return }
        guard let dev = MountTable.entries().last(where: { $0.mountpoint == mountpoint && $0.fstype.hasPrefix("fuse") })?.device else {
            Log.info("read-ahead left at the kernel's default: \(mountpoint) not found in /proc/self/mountinfo")
            return
        }
        let path = "/sys/class/bdi/\(dev)/read_ahead_kb"
        readAheadFile.withLock { $0 = path }
        let fd = Glibc.open(path, O_WRONLY)
        let text = "\(kib)\n"
        let ok = fd >= 0 && Glibc.write(fd, text, text.utf8.count) == text.utf8.count
        let err = errno
        if fd >= 0 { Glibc.close(fd) }
        if ok {
            Log.debug("read-ahead of \(mountpoint) set to \(kib) KiB")
        } else {
            Log.info("read-ahead left at the kernel's default (128 KiB): cannot write \(path): \(String(cString: strerror(err))) (needs root)")
        }
    }

    /// The mount's read-ahead in bytes as the kernel has it now (root may change it at any time, as
    /// TROUBLESHOOTING suggests), for a reader about to stream: its window must span the reads the
    /// kernel sends ahead, or those fall outside the stream and cost a GET each.
    func currentReadAhead() -> Int? {
        guard let path = readAheadFile.withLock({ $0 }) else { return nil }
        let fd = Glibc.open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 31) }
        Glibc.close(fd)
        guard n > 0, let kib = Int(String(decoding: buf[..<n].prefix { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self)) else { return nil }
        return kib << 10
    }

    /// Sends kernel cache invalidations from their own threads: libfuse forbids sending them on
    /// the path of a request that may hold the same inode's locks. A few threads, so that one
    /// waiting for a page lock does not hold up the rest.
    let notifyPool = WorkerPool(name: "s3m-notify", maxThreads: 4)

    func installInvalidator(session: OpaquePointer) {
        let se = session
        fs.invalidator = { [notifyPool] what in
            notifyPool.submit {
                switch what {
                case .inode(let ino): _ = fuse_lowlevel_notify_inval_inode(se, ino, 0, 0)
                case .entry(let parent, let name):
                    let cname = name.map { CChar(bitPattern: $0) } + [0]
                    _ = cname.withUnsafeBufferPointer { fuse_lowlevel_notify_inval_entry(se, parent, $0.baseAddress, name.count) }
                }
            }
        }
    }

    public func makeOperations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = Self.initCallback
        ops.lookup = Self.lookupCallback
        ops.forget = Self.forgetCallback
        ops.forget_multi = Self.forgetMultiCallback
        ops.getattr = Self.getattrCallback
        ops.opendir = Self.opendirCallback
        ops.readdir = Self.readdirCallback
        ops.readdirplus = Self.readdirplusCallback
        ops.releasedir = Self.releasedirCallback
        ops.fsyncdir = Self.fsyncdirCallback
        ops.open = Self.openCallback
        ops.read = Self.readCallback
        ops.release = Self.releaseCallback
        ops.statfs = Self.statfsCallback
        ops.access = Self.accessCallback
        ops.ioctl = Self.ioctlCallback
        // Without --xattr, no xattr operations: see ioctlCallback.
        if fs.options.xattr {
            ops.getxattr = Self.getxattrCallback
            ops.listxattr = Self.listxattrCallback
            ops.setxattr = Self.setxattrCallback
            ops.removexattr = Self.removexattrCallback
        }
        ops.create = Self.createCallback
        ops.write = Self.writeCallback
        ops.flush = Self.flushCallback
        ops.fsync = Self.fsyncCallback
        ops.setattr = Self.setattrCallback
        ops.unlink = Self.unlinkCallback
        ops.mkdir = Self.mkdirCallback
        ops.rmdir = Self.rmdirCallback
        ops.rename = Self.renameCallback
        ops.symlink = Self.symlinkCallback
        ops.readlink = Self.readlinkCallback
        // Regular files, FIFOs, sockets and device nodes (empty objects whose mode says the type).
        ops.mknod = Self.mknodCallback
        // Hard links do not exist in S3 (see docs/SEMANTICS.md).
        ops.link = { req, ino, _, _ in FuseBridge.bridge(req).replyError(req, "link", ino, FSError(EPERM)) }
        return ops
    }
}
