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
        self.ttl = fs.options.metadataTTL.isFinite ? fs.options.metadataTTL : 60 * 60 * 24 * 365
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
        st.st_blocks = Int((a.size + 511) / 512)
        let ts = timespec(tv_sec: Int(a.mtime.sec), tv_nsec: Int(a.mtime.nsec))
        st.st_mtim = ts
        st.st_atim = ts
        st.st_ctim = ts
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

    func replyAttr(_ req: fuse_req_t?, _ r: Result<Attributes, FSError>) {
        switch r {
        case .success(let a):
            var st = stat(a)
            fuse_reply_attr(req, &st, a.provisional ? 0 : ttl)
        case .failure(let err):
            fuse_reply_err(req, err.errno)
        }
    }

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

    // MARK: - callbacks

    static let initCallback: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<fuse_conn_info>?) -> Void = { _, conn in
        guard let conn else { return }
        s3m_conn_want(conn, UInt32(S3M_CAP_READDIRPLUS))
        s3m_conn_unwant(conn, UInt32(S3M_CAP_READDIRPLUS_AUTO))
        s3m_conn_want(conn, UInt32(S3M_CAP_ASYNC_READ))
        s3m_conn_want(conn, UInt32(S3M_CAP_PARALLEL_DIROPS))
        s3m_conn_want(conn, UInt32(S3M_CAP_AUTO_INVAL_DATA))
        s3m_conn_want(conn, UInt32(S3M_CAP_IOCTL_DIR))
        // readlink answers are kept in the kernel's page cache (invalidated when the link changes).
        s3m_conn_want(conn, UInt32(S3M_CAP_CACHE_SYMLINKS))
        conn.pointee.max_readahead = 8 << 20
        conn.pointee.max_background = 64
        conn.pointee.congestion_threshold = 48
    }

    static let lookupCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, parent, name in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let r = b.fs.lookup(parent: parent, name: n)
        b.trace("lookup", parent, n, { if case .success(nil) = r { return "negative" }; return outcome(r) }())
        switch r {
        case .success(let a):
            var e = b.entry(a)
            fuse_reply_entry(req, &e)
        case .failure(let err):
            fuse_reply_err(req, err.errno)
        }
    }

    static let forgetCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UInt64) -> Void = { req, ino, n in
        bridge(req).fs.forget(ino: ino, count: n)
        fuse_reply_none(req)
    }

    static let forgetMultiCallback: @convention(c) (fuse_req_t?, Int, UnsafeMutablePointer<fuse_forget_data>?) -> Void = { req, count, list in
        let b = bridge(req)
        if let list {
            b.fs.forget((0..<count).map { (ino: list[$0].ino, count: list[$0].nlookup) })
        }
        fuse_reply_none(req)
    }

    static let getattrCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, _ in
        let b = bridge(req)
        let r = b.fs.getattr(ino: ino)
        b.trace("getattr", ino, nil, outcome(r))
        b.replyAttr(req, r)
    }

    static let opendirCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, fi in
        let b = bridge(req)
        let r = b.fs.openDirectory(ino: ino)
        b.trace("opendir", ino, nil, {
            if case .success(let d) = r { return d.kernelMayKeepEntries ? "ok, kernel keeps its entries" : "ok, kernel reads anew" }
            return outcome(r)
        }())
        switch r {
        case .success(let d):
            s3m_fi_set_fh(fi, d.handle)
            // The kernel caches the entries it reads (cache_readdir) and keeps them at the next
            // open only with keep_cache; without, it drops them and reads anew.
            s3m_fi_set_cache_flags(fi, d.kernelMayKeepEntries ? 1 : 0, b.ttl > 0 ? 1 : 0)
            fuse_reply_open(req, fi)
        case .failure(let err):
            fuse_reply_err(req, err.errno)
        }
    }

    static func readdirCommon(_ req: fuse_req_t?, _ size: Int, _ off: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?, plus: Bool) {
        let b = bridge(req)
        var buf = [CChar](repeating: 0, count: size)
        var used = 0
        let err = buf.withUnsafeMutableBufferPointer { bp -> FSError? in
            b.fs.readdir(handle: s3m_fi_fh(fi), offset: Int64(off), plus: plus) { ent in
                let cname = ent.name.map { CChar(bitPattern: $0) } + [0]
                let remaining = size - used
                let need: Int = cname.withUnsafeBufferPointer { np in
                    if plus {
                        var e = b.entry(ent.attributes)
                        if ent.isDotEntry {
                            // "." and ".." add no lookup: hand only the type and inode.
                            e = fuse_entry_param()
                            e.attr.st_ino = UInt(ent.attributes?.ino ?? 0)
                            e.attr.st_mode = S_IFDIR
                        } else if ent.attributes == nil {
                            // No attributes yet (`--metadata head`): node id 0 makes no inode in
                            // the kernel, which looks the name up when a program stats it. The
                            // type is unknown (DT_UNKNOWN); the inode number is a stand-in.
                            e = fuse_entry_param()
                            e.attr.st_ino = UInt(ent.nextOffset) | (1 << 62)
                        }
                        return fuse_add_direntry_plus(req, bp.baseAddress! + used, remaining, np.baseAddress, &e, off_t(ent.nextOffset))
                    }
                    var st = Glibc.stat()
                    st.st_mode = ent.kind == .directory ? S_IFDIR : ent.isSymlink ? S_IFLNK : S_IFREG
                    st.st_ino = UInt(ent.attributes?.ino ?? 0)
                    return fuse_add_direntry(req, bp.baseAddress! + used, remaining, np.baseAddress, &st, off_t(ent.nextOffset))
                }
                if need > remaining { return false }
                used += need
                return true
            }
        }
        if let err, used == 0 {
            fuse_reply_err(req, err.errno)
            return
        }
        buf.withUnsafeBufferPointer { _ = fuse_reply_buf(req, $0.baseAddress, used) }
    }

    static let readdirCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, _, size, off, fi in
        readdirCommon(req, size, off, fi, plus: false)
    }

    static let readdirplusCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, _, size, off, fi in
        readdirCommon(req, size, off, fi, plus: true)
    }

    static let releasedirCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, _, fi in
        bridge(req).fs.releasedir(handle: s3m_fi_fh(fi))
        fuse_reply_err(req, 0)
    }

    static let openCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, fi in
        let b = bridge(req)
        if b.pendingReadAhead.load(ordering: .relaxed) != 0 { b.applyReadAhead() }
        let r = b.fs.open(ino: ino, flags: s3m_fi_flags(fi))
        b.trace("open", ino, nil, outcome(r))
        switch r {
        case .success(let h):
            s3m_fi_set_fh(fi, h)
            s3m_fi_set_cache_flags(fi, 1, 0)
            fuse_reply_open(req, fi)
        case .failure(let err):
            fuse_reply_err(req, err.errno)
        }
    }

    /// libfuse's interrupt function for a read: its data is the file handle itself (no object
    /// whose lifetime would have to outlast the reply).
    static let readInterruptCallback: @convention(c) (fuse_req_t?, UnsafeMutableRawPointer?) -> Void = { req, data in
        guard let data else { return }
        bridge(req).fs.interruptReads(handle: UInt64(UInt(bitPattern: data)))
    }

    static let readCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, _, size, off, fi in
        let b = bridge(req)
        var replied = false
        let handle = s3m_fi_fh(fi)
        // Ctrl-C or a kill of the reader: libfuse calls this, and a read waiting on a stuck
        // stream answers EINTR at once.
        fuse_req_interrupt_func(req, readInterruptCallback, UnsafeMutableRawPointer(bitPattern: UInt(handle)))
        let err = b.fs.read(handle: handle, offset: Int64(off), size: size, interrupted: { fuse_req_interrupted(req) != 0 }) { parts in
            // Straight from the read window into the kernel: one iovec per chunk.
            var iov = parts.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
            _ = iov.withUnsafeMutableBufferPointer { fuse_reply_iov(req, $0.baseAddress, Int32($0.count)) }
            replied = true
        }
        if let err, !replied { fuse_reply_err(req, err.errno) }
    }

    static let releaseCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, _, fi in
        bridge(req).fs.release(handle: s3m_fi_fh(fi))
        fuse_reply_err(req, 0)
    }

    static let statfsCallback: @convention(c) (fuse_req_t?, fuse_ino_t) -> Void = { req, _ in
        let i = bridge(req).fs.statfs()
        var st = statvfs()
        st.f_bsize = UInt(i.blockSize)
        st.f_frsize = UInt(i.blockSize)
        st.f_blocks = UInt(i.blocks)
        st.f_bfree = UInt(i.freeBlocks)
        st.f_bavail = UInt(i.freeBlocks)
        st.f_files = UInt(i.files)
        st.f_ffree = UInt(i.freeFiles)
        st.f_favail = UInt(i.freeFiles)
        st.f_namemax = UInt(i.nameMax)
        fuse_reply_statfs(req, &st)
    }

    /// `s3mount stats`: the statistics as JSON, from an ioctl on a directory of the mount. Not an xattr:
    /// with no xattr operations libfuse answers ENOSYS once and the kernel stops asking, so
    /// `ls -l` (two xattr reads per file) and `cp -a` cost no round trip to the daemon per file.
    static let ioctlCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UInt32, UnsafeMutableRawPointer?, UnsafeMutablePointer<fuse_file_info>?, UInt32, UnsafeRawPointer?, Int, Int) -> Void = { req, ino, cmd, _, _, _, _, _, outSize in
        // Any directory of the mount answers (the figures are the mount's): `s3mount stats .` works
        // from inside it.
        guard cmd == S3M_STATS_IOCTL else {
            fuse_reply_err(req, ENOTTY)
            return
        }
        let json = Array(bridge(req).fs.statsJSON().utf8) + [0]
        guard json.count <= outSize else {
            fuse_reply_err(req, EOVERFLOW)
            return
        }
        json.withUnsafeBytes { _ = fuse_reply_ioctl(req, 0, $0.baseAddress, json.count) }
    }

    /// Reads the statistics of the mount at `mountpoint` (see `ioctlCallback`); nil and errno set
    /// on failure.
    public static func readStats(mountpoint: String) -> String? {
        let fd = open(mountpoint, O_RDONLY | O_DIRECTORY)
        if fd < 0 { return nil }
        defer { let e = errno; close(fd); errno = e }
        var buf = [CChar](repeating: 0, count: Int(S3M_STATS_MAX))
        if s3m_stats_ioctl(fd, &buf) != 0 { return nil }
        return String(cString: buf)
    }

    static let accessCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int32) -> Void = { req, _, _ in
        // default_permissions: the kernel has checked the mode bits already.
        fuse_reply_err(req, 0)
    }

    static let createCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, mode_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, parent, name, mode, fi in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let r = b.fs.create(parent: parent, name: n, flags: s3m_fi_flags(fi), mode: mode, caller: caller(req))
        b.trace("create", parent, n, outcome(r))
        switch r {
        case .success(let (a, h)):
            var e = b.entry(a)
            s3m_fi_set_fh(fi, h)
            if fuse_reply_create(req, &e, fi) != 0 {
                // The kernel did not take the entry: drop its reference and the handle.
                b.fs.forget(ino: a.ino, count: 1)
                b.fs.release(handle: h)
            }
        case .failure(let err):
            fuse_reply_err(req, err.errno)
        }
    }

    static let writeCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, _, buf, size, off, fi in
        let b = bridge(req)
        switch b.fs.write(handle: s3m_fi_fh(fi), offset: Int64(off), data: UnsafeRawBufferPointer(start: buf, count: size)) {
        case .success(let n): fuse_reply_write(req, n)
        case .failure(let err): fuse_reply_err(req, err.errno)
        }
    }

    static let flushCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, fi in
        let b = bridge(req)
        let e = b.fs.flush(handle: s3m_fi_fh(fi))
        b.trace("flush", ino, nil, e.map { "error \($0.errno) (\($0))" } ?? "ok")
        fuse_reply_err(req, e?.errno ?? 0)
    }

    static let fsyncCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int32, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, _, _, fi in
        fuse_reply_err(req, bridge(req).fs.fsync(handle: s3m_fi_fh(fi))?.errno ?? 0)
    }

    static let setattrCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<stat>?, Int32, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, attr, toSet, fi in
        let b = bridge(req)
        guard let attr else { fuse_reply_err(req, EINVAL); return }
        let set = UInt32(bitPattern: toSet)
        // atime is not kept (S3 has no access times; stat shows the mtime).
        var mtime: Timestamp? = nil
        if set & UInt32(FUSE_SET_ATTR_MTIME_NOW) != 0 {
            mtime = Timestamp.now()
        } else if set & UInt32(FUSE_SET_ATTR_MTIME) != 0 {
            mtime = Timestamp(sec: Int64(attr.pointee.st_mtim.tv_sec), nsec: UInt32(attr.pointee.st_mtim.tv_nsec))
        }
        let r = b.fs.setattr(ino: ino,
                             size: set & UInt32(FUSE_SET_ATTR_SIZE) != 0 ? Int64(attr.pointee.st_size) : nil,
                             mode: set & UInt32(FUSE_SET_ATTR_MODE) != 0 ? attr.pointee.st_mode & 0o7777 : nil,
                             uid: set & UInt32(FUSE_SET_ATTR_UID) != 0 ? attr.pointee.st_uid : nil,
                             gid: set & UInt32(FUSE_SET_ATTR_GID) != 0 ? attr.pointee.st_gid : nil,
                             mtime: mtime,
                             handle: fi.map { s3m_fi_fh($0) })
        b.trace("setattr", ino, nil, outcome(r))
        b.replyAttr(req, r)
    }

    static let unlinkCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, parent, name in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let e = b.fs.unlink(parent: parent, name: n)
        b.trace("unlink", parent, n, e.map { "error \($0.errno)" } ?? "ok")
        fuse_reply_err(req, e?.errno ?? 0)
    }

    static let rmdirCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, parent, name in
        fuse_reply_err(req, bridge(req).fs.rmdir(parent: parent, name: FuseBridge.name(name))?.errno ?? 0)
    }

    static let mkdirCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, mode_t) -> Void = { req, parent, name, mode in
        let b = bridge(req)
        b.replyEntry(req, b.fs.mkdir(parent: parent, name: FuseBridge.name(name), mode: mode, caller: caller(req)))
    }

    static let symlinkCallback: @convention(c) (fuse_req_t?, UnsafePointer<CChar>?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, link, parent, name in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let r = b.fs.symlink(parent: parent, name: n, target: FuseBridge.name(link), caller: caller(req))
        b.trace("symlink", parent, n, outcome(r))
        b.replyEntry(req, r)
    }

    static let mknodCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, mode_t, dev_t) -> Void = { req, parent, name, mode, _ in
        let b = bridge(req)
        b.replyEntry(req, b.fs.mknod(parent: parent, name: FuseBridge.name(name), mode: mode, caller: caller(req)))
    }

    static let readlinkCallback: @convention(c) (fuse_req_t?, fuse_ino_t) -> Void = { req, ino in
        switch bridge(req).fs.readlink(ino: ino) {
        case .success(let target):
            let c = target.map { CChar(bitPattern: $0) } + [0]
            c.withUnsafeBufferPointer { _ = fuse_reply_readlink(req, $0.baseAddress) }
        case .failure(let err):
            fuse_reply_err(req, err.errno)
        }
    }

    func replyEntry(_ req: fuse_req_t?, _ r: Result<Attributes, FSError>) {
        switch r {
        case .success(let a):
            var e = entry(a)
            if fuse_reply_entry(req, &e) != 0 { fs.forget(ino: a.ino, count: 1) }
        case .failure(let err):
            fuse_reply_err(req, err.errno)
        }
    }

    static let renameCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, fuse_ino_t, UnsafePointer<CChar>?, UInt32) -> Void = { req, parent, name, newParent, newName, flags in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let err = b.fs.rename(parent: parent, name: n, newParent: newParent, newName: FuseBridge.name(newName), flags: flags)
        b.trace("rename", parent, n, err.map { "error \($0.errno)" } ?? "ok")
        fuse_reply_err(req, err?.errno ?? 0)
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
        ops.open = Self.openCallback
        ops.read = Self.readCallback
        ops.release = Self.releaseCallback
        ops.statfs = Self.statfsCallback
        ops.access = Self.accessCallback
        ops.ioctl = Self.ioctlCallback
        // No xattr operations: see ioctlCallback.
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
        // Regular files only: device nodes and FIFOs do not exist in S3.
        ops.mknod = Self.mknodCallback
        // Hard links do not exist in S3 (see docs/SEMANTICS.md).
        ops.link = { req, _, _, _ in fuse_reply_err(req, EPERM) }
        return ops
    }
}

/// A mounted FUSE session: mount, serve on worker threads until unmounted or signalled, unmount.
public final class FuseSession: @unchecked Sendable {
    let bridge: FuseBridge
    let ops: UnsafeMutablePointer<fuse_lowlevel_ops>
    var session: OpaquePointer?
    var args: fuse_args
    public let mountpoint: String

    public struct MountOptions {
        public var fsname: String
        public var allowOther = false
        public var allowRoot = false
        public var readOnly = false
        /// Kernel read-ahead for the mount in KiB; 0 keeps the kernel's default.
        public var readAheadKiB = 0
        public init(fsname: String) { self.fsname = fsname }
    }

    public init(bridge: FuseBridge, mountpoint: String, options: MountOptions, debug: Bool) throws {
        self.bridge = bridge
        self.mountpoint = mountpoint
        ops = .allocate(capacity: 1)
        ops.initialize(to: bridge.makeOperations())
        var o = ["fsname=\(options.fsname.replacingCommas())", "subtype=s3mount", "default_permissions"]
        if options.allowOther { o.append("allow_other") }
        if options.allowRoot { o.append("allow_root") }
        if options.readOnly { o.append("ro") }
        var argv = ["s3mount", "-o", o.joined(separator: ",")]
        if debug { argv.append("-d") }
        let cargv = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: argv.count + 1)
        for (i, a) in argv.enumerated() { cargv[i] = strdup(a) }
        cargv[argv.count] = nil
        args = fuse_args(argc: Int32(argv.count), argv: cargv, allocated: 0)
        let ud = Unmanaged.passRetained(bridge).toOpaque()
        guard let se = s3m_session_new(&args, ops, ud) else {
            throw FuseError("could not create the FUSE session (bad mount options?)")
        }
        session = se
        bridge.installInvalidator(session: se)
        guard fuse_set_signal_handlers(se) == 0 else { throw FuseError("could not install signal handlers") }
        // Resolved before mounting: afterwards a stat of the mountpoint would wait on this very session.
        if let real = realpath(mountpoint, nil) {
            bridge.mountpoint = String(cString: real)
            free(real)
        } else {
            bridge.mountpoint = mountpoint
        }
        guard fuse_session_mount(se, mountpoint) == 0 else {
            fuse_remove_signal_handlers(se)
            fuse_session_destroy(se)
            session = nil
            throw FuseError("could not mount on \(mountpoint) (is /dev/fuse available and fusermount3 installed?)")
        }
        bridge.pendingReadAhead.store(options.readAheadKiB, ordering: .relaxed)
    }

    /// Serves requests until unmount or SIGINT/SIGTERM; then unmounts.
    public func run(maxThreads: UInt32 = 64) -> Int32 {
        guard let se = session else { return 1 }
        // Idle workers stay (as libfuse's own default since 3.12): the kernel's parallel
        // read-ahead keeps ~20 reads of one file waiting at once, and with a cap of 10 idle
        // workers libfuse started and ended about 130 threads per GiB read, each with a new 1 MiB
        // buffer to fault in.
        let rc = s3m_session_loop_mt(se, maxThreads, maxThreads)
        bridge.fs.invalidator = nil
        fuse_session_unmount(se)
        fuse_remove_signal_handlers(se)
        fuse_session_destroy(se)
        session = nil
        return rc
    }
}

public struct FuseError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

extension String {
    func replacingCommas() -> String { String(map { $0 == "," ? "_" : $0 }) }
}

/// The mounts this process sees (/proc/self/mountinfo), in mount order.
public enum MountTable {
    public struct Entry {
        /// "MAJ:MIN"
        public var device: String
        public var mountpoint: String
        public var fstype: String
    }

    public static func entries() -> [Entry] {
        guard let f = fopen("/proc/self/mountinfo", "r") else { return [] }
        defer { fclose(f) }
        var out: [Entry] = []
        var line: UnsafeMutablePointer<CChar>? = nil
        var cap = 0
        while getline(&line, &cap, f) > 0 {
            // id parent MAJ:MIN root mountpoint options ... - fstype source superoptions
            let fields = String(cString: line!).split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
            out.append(Entry(device: String(fields[2]), mountpoint: unescape(fields[4]), fstype: String(fields[dash + 1])))
        }
        free(line)
        return out
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo octal escapes.
    static func unescape(_ s: Substring) -> String {
        var out = [UInt8]()
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 3 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
