import CFuse3
import Glibc
import S3
import S3FSCore
import Synchronization

/// The libfuse lowlevel callbacks: static and nonisolated (libfuse calls them on its worker
/// threads), each one call into the core and one reply, errors through `replyError`.
extension FuseBridge {

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
            b.replyError(req, "lookup", parent, err)
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
        b.replyAttr(req, "getattr", ino, r)
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
            b.replyError(req, "opendir", ino, err)
        }
    }

    static func readdirCommon(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ off: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?, plus: Bool) {
        let b = bridge(req)
        var buf = [CChar](repeating: 0, count: size)
        var used = 0
        let err = buf.withUnsafeMutableBufferPointer { bp -> FSError? in
            b.fs.readdir(handle: s3m_fi_fh(fi), offset: Int64(clamping: off), plus: plus) { ent in
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
                    st.st_mode = ent.kind == .directory ? S_IFDIR : ent.fileType
                    st.st_ino = UInt(ent.attributes?.ino ?? 0)
                    return fuse_add_direntry(req, bp.baseAddress! + used, remaining, np.baseAddress, &st, off_t(ent.nextOffset))
                }
                if need > remaining { return false }
                used += need
                return true
            }
        }
        if let err, used == 0 {
            b.replyError(req, plus ? "readdirplus" : "readdir", ino, err)
            return
        }
        buf.withUnsafeBufferPointer { _ = fuse_reply_buf(req, $0.baseAddress, used) }
    }

    static let readdirCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, size, off, fi in
        readdirCommon(req, ino, size, off, fi, plus: false)
    }

    static let readdirplusCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, size, off, fi in
        readdirCommon(req, ino, size, off, fi, plus: true)
    }

    static let releasedirCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, _, fi in
        bridge(req).fs.releasedir(handle: s3m_fi_fh(fi))
        fuse_reply_err(req, 0)
    }

    static let fsyncdirCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int32, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, _, _ in
        let b = bridge(req)
        let e = b.fs.fsyncDirectory()
        if e == nil { b.trace("fsyncdir", ino, nil, "ok") }
        b.replyStatus(req, "fsyncdir", ino, e)
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
            b.replyError(req, "open", ino, err)
        }
    }

    /// libfuse's interrupt function for a read: its data is the file handle itself (no object
    /// whose lifetime would have to outlast the reply).
    static let readInterruptCallback: @convention(c) (fuse_req_t?, UnsafeMutableRawPointer?) -> Void = { req, data in
        guard let data else { return }
        bridge(req).fs.interruptReads(handle: UInt64(UInt(bitPattern: data)))
    }

    static let readCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, size, off, fi in
        let b = bridge(req)
        var replied = false
        let handle = s3m_fi_fh(fi)
        // Ctrl-C or a kill of the reader: libfuse calls this, and a read waiting on a stuck
        // stream answers EINTR at once.
        fuse_req_interrupt_func(req, readInterruptCallback, UnsafeMutableRawPointer(bitPattern: UInt(handle)))
        let err = b.fs.read(handle: handle, offset: Int64(clamping: off), size: size, interrupted: { fuse_req_interrupted(req) != 0 }) { parts in
            // Straight from the read window into the kernel: one iovec per chunk.
            var iov = parts.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
            b.trace("read", ino, nil, "ok, \(parts.reduce(0) { $0 + $1.count }) bytes at \(off)")
            _ = iov.withUnsafeMutableBufferPointer { fuse_reply_iov(req, $0.baseAddress, Int32($0.count)) }
            replied = true
        }
        if let err, !replied { b.replyError(req, "read", ino, err) }
    }

    static let releaseCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, fi in
        let b = bridge(req)
        b.fs.release(handle: s3m_fi_fh(fi))
        b.trace("release", ino, nil, "ok")
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
    static let ioctlCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UInt32, UnsafeMutableRawPointer?, UnsafeMutablePointer<fuse_file_info>?, UInt32, UnsafeRawPointer?, Int, Int) -> Void = { req, ino, cmd, _, _, _, inBuf, inSize, outSize in
        // Any directory of the mount answers (the figures are the mount's): `s3mount stats .` works
        // from inside it.
        let b = bridge(req)
        if cmd == S3M_RESTORE_IOCTL {
            restore(b, req, ino, inBuf, inSize, outSize)
            return
        }
        guard cmd == S3M_STATS_IOCTL else {
            b.replyError(req, "ioctl", ino, FSError(ENOTTY))
            return
        }
        let json = Array(b.statsJSON().utf8) + [0]
        guard json.count <= outSize else {
            b.replyError(req, "ioctl", ino, FSError(EOVERFLOW))
            return
        }
        json.withUnsafeBytes { _ = fuse_reply_ioctl(req, 0, $0.baseAddress, json.count) }
    }

    /// `s3mount restore`: the request as the caller's kernel copied it in, checked before use
    /// (its size, a name that ends within its field and is one path component).
    static func restore(_ b: FuseBridge, _ req: fuse_req_t?, _ ino: fuse_ino_t, _ inBuf: UnsafeRawPointer?, _ inSize: Int, _ outSize: Int) {
        let size = MemoryLayout<s3m_restore>.size
        guard let inBuf, inSize >= size, outSize >= size else {
            b.replyError(req, "ioctl", ino, FSError(EINVAL))
            return
        }
        var r = s3m_restore()
        withUnsafeMutableBytes(of: &r) { $0.copyMemory(from: UnsafeRawBufferPointer(start: inBuf, count: size)) }
        func text<T>(_ field: T) -> [UInt8]? {
            withUnsafeBytes(of: field) { raw in raw.firstIndex(of: 0).map { Array(raw[..<$0]) } }
        }
        guard let name = text(r.name), !name.isEmpty, !name.contains(0x2F), name != [0x2E], name != [0x2E, 0x2E],
              let tier = text(r.tier), let days = Int(exactly: r.days) else {
            b.replyError(req, "ioctl", ino, FSError(EINVAL))
            return
        }
        switch b.fs.restore(dirIno: ino, name: name, days: days, tier: String(decoding: tier, as: UTF8.self)) {
        case .failure(let e): b.replyError(req, "ioctl", ino, e)
        case .success(let started):
            r.result = started == .started ? 0 : started == .alreadyInProgress ? 1 : 2
            withUnsafeBytes(of: &r) { _ = fuse_reply_ioctl(req, 0, $0.baseAddress, size) }
        }
    }

    /// Starts the restore of the archived file at `path` on a mount (see `restore`); the answer,
    /// or nil with errno set.
    public static func requestRestore(path: String, days: Int, tier: String) -> RestoreStarted? {
        var dir = "."
        var name = Substring(path)
        while name.count > 1 && name.hasSuffix("/") { name.removeLast() }
        if let slash = name.lastIndex(of: "/") {
            dir = slash == name.startIndex ? "/" : String(name[..<slash])
            name = name[name.index(after: slash)...]
        }
        var r = s3m_restore()
        guard let d = UInt32(exactly: days), name.utf8.count < 256, tier.utf8.count < 16 else { errno = EINVAL; return nil }
        r.days = d
        withUnsafeMutableBytes(of: &r.name) { raw in raw.copyBytes(from: name.utf8) }
        withUnsafeMutableBytes(of: &r.tier) { raw in raw.copyBytes(from: tier.utf8) }
        let fd = open(dir, O_RDONLY | O_DIRECTORY)
        if fd < 0 { return nil }
        defer { let e = errno; close(fd); errno = e }
        if s3m_restore_ioctl(fd, &r) != 0 { return nil }
        return r.result == 0 ? .started : r.result == 1 ? .alreadyInProgress : .alreadyRestored
    }

    /// Reads the statistics of the mount at `mountpoint` (see `ioctlCallback`); nil and errno set
    /// on failure.
    public static func readStats(mountpoint: String) -> String? {
        let fd = open(mountpoint, O_RDONLY | O_DIRECTORY)
        if fd < 0 { return nil }
        defer { let e = errno; close(fd); errno = e }
        // One byte more than the ioctl fills: another filesystem answering the same number need
        // not end its answer with a NUL.
        var buf = [CChar](repeating: 0, count: Int(S3M_STATS_MAX) + 1)
        if s3m_stats_ioctl(fd, &buf) != 0 { return nil }
        return buf.withUnsafeBytes { raw in String(decoding: raw.prefix(Int(S3M_STATS_MAX)).prefix { $0 != 0 }, as: UTF8.self) }
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
            b.replyError(req, "create", parent, err)
        }
    }

    static let writeCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, Int, off_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, buf, size, off, fi in
        let b = bridge(req)
        switch b.fs.write(handle: s3m_fi_fh(fi), offset: Int64(clamping: off), data: UnsafeRawBufferPointer(start: buf, count: size)) {
        case .success(let n):
            b.trace("write", ino, nil, "ok, \(n) bytes at \(off)")
            fuse_reply_write(req, n)
        case .failure(let err): b.replyError(req, "write", ino, err)
        }
    }

    static let flushCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, fi in
        let b = bridge(req)
        let e = b.fs.flush(handle: s3m_fi_fh(fi))
        b.trace("flush", ino, nil, e.map { "error \($0.errno) (\($0))" } ?? "ok")
        b.replyStatus(req, "flush", ino, e)
    }

    static let fsyncCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int32, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, _, fi in
        let b = bridge(req)
        let e = b.fs.fsync(handle: s3m_fi_fh(fi))
        if e == nil { b.trace("fsync", ino, nil, "ok") }
        b.replyStatus(req, "fsync", ino, e)
    }

    static let setattrCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafeMutablePointer<stat>?, Int32, UnsafeMutablePointer<fuse_file_info>?) -> Void = { req, ino, attr, toSet, fi in
        let b = bridge(req)
        guard let attr else { b.replyError(req, "setattr", ino, FSError(EINVAL)); return }
        let set = UInt32(bitPattern: toSet)
        // Times set by utimensat; reads never change the atime (the mount is noatime).
        var mtime: Timestamp? = nil, atime: Timestamp? = nil
        if set & UInt32(FUSE_SET_ATTR_ATIME_NOW) != 0 {
            atime = Timestamp.now()
        } else if set & UInt32(FUSE_SET_ATTR_ATIME) != 0 {
            atime = Timestamp(sec: Int64(attr.pointee.st_atim.tv_sec), nsec: UInt32(clamping: attr.pointee.st_atim.tv_nsec))
        }
        if set & UInt32(FUSE_SET_ATTR_MTIME_NOW) != 0 {
            mtime = Timestamp.now()
        } else if set & UInt32(FUSE_SET_ATTR_MTIME) != 0 {
            mtime = Timestamp(sec: Int64(attr.pointee.st_mtim.tv_sec), nsec: UInt32(clamping: attr.pointee.st_mtim.tv_nsec))
        }
        let r = b.fs.setattr(ino: ino,
                             size: set & UInt32(FUSE_SET_ATTR_SIZE) != 0 ? Int64(attr.pointee.st_size) : nil,
                             mode: set & UInt32(FUSE_SET_ATTR_MODE) != 0 ? attr.pointee.st_mode & 0o7777 : nil,
                             uid: set & UInt32(FUSE_SET_ATTR_UID) != 0 ? attr.pointee.st_uid : nil,
                             gid: set & UInt32(FUSE_SET_ATTR_GID) != 0 ? attr.pointee.st_gid : nil,
                             mtime: mtime,
                             atime: atime,
                             handle: fi.map { s3m_fi_fh($0) })
        b.trace("setattr", ino, nil, outcome(r))
        b.replyAttr(req, "setattr", ino, r)
    }

    static let unlinkCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, parent, name in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let e = b.fs.unlink(parent: parent, name: n)
        b.trace("unlink", parent, n, e.map { "error \($0.errno)" } ?? "ok")
        b.replyStatus(req, "unlink", parent, e)
    }

    static let rmdirCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, parent, name in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let e = b.fs.rmdir(parent: parent, name: n)
        if e == nil { b.trace("rmdir", parent, n, "ok") }
        b.replyStatus(req, "rmdir", parent, e)
    }

    static let mkdirCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, mode_t) -> Void = { req, parent, name, mode in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let r = b.fs.mkdir(parent: parent, name: n, mode: mode, caller: caller(req))
        if case .success(let a) = r { b.trace("mkdir", parent, n, "ok, ino=\(a.ino)") }
        b.replyEntry(req, "mkdir", parent, r)
    }

    static let symlinkCallback: @convention(c) (fuse_req_t?, UnsafePointer<CChar>?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, link, parent, name in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let r = b.fs.symlink(parent: parent, name: n, target: FuseBridge.name(link), caller: caller(req))
        b.trace("symlink", parent, n, outcome(r))
        b.replyEntry(req, "symlink", parent, r)
    }

    static let mknodCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, mode_t, dev_t) -> Void = { req, parent, name, mode, rdev in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let r = b.fs.mknod(parent: parent, name: n, mode: mode, rdev: UInt64(rdev), caller: caller(req))
        b.trace("mknod", parent, n, outcome(r))
        b.replyEntry(req, "mknod", parent, r)
    }

    // MARK: - extended attributes (--xattr)

    /// A getxattr or listxattr answer: its size when asked with size 0, ERANGE when it does not fit.
    func replyXattr(_ req: fuse_req_t?, _ op: String, _ ino: UInt64, size: Int, _ r: Result<[UInt8], FSError>) {
        switch r {
        case .failure(let err): replyError(req, op, ino, err)
        case .success(let value):
            trace(op, ino, nil, "\(value.count) bytes")
            if size == 0 { fuse_reply_xattr(req, value.count) }
            else if value.count > size { replyError(req, op, ino, FSError(ERANGE)) }
            else { value.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), value.count) } }
        }
    }

    static func attributeName(_ name: UnsafePointer<CChar>?) -> String { name.map { String(cString: $0) } ?? "" }

    static let getxattrCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, Int) -> Void = { req, ino, name, size in
        let b = bridge(req)
        b.replyXattr(req, "getxattr", ino, size: size, b.fs.getxattr(ino: ino, name: attributeName(name)))
    }

    static let listxattrCallback: @convention(c) (fuse_req_t?, fuse_ino_t, Int) -> Void = { req, ino, size in
        let b = bridge(req)
        // NUL-terminated names, one after the other.
        b.replyXattr(req, "listxattr", ino, size: size, b.fs.listxattr(ino: ino).map { $0.flatMap { Array($0.utf8) + [0] } })
    }

    static let setxattrCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, UnsafePointer<CChar>?, Int, Int32) -> Void = { req, ino, name, value, size, flags in
        let b = bridge(req)
        let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
        let e = b.fs.setxattr(ino: ino, name: attributeName(name), value: bytes, flags: flags)
        b.trace("setxattr", ino, nil, e.map { "error \($0.errno)" } ?? "ok")
        b.replyStatus(req, "setxattr", ino, e)
    }

    static let removexattrCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?) -> Void = { req, ino, name in
        let b = bridge(req)
        let e = b.fs.removexattr(ino: ino, name: attributeName(name))
        if e == nil { b.trace("removexattr", ino, nil, "ok") }
        b.replyStatus(req, "removexattr", ino, e)
    }

    static let readlinkCallback: @convention(c) (fuse_req_t?, fuse_ino_t) -> Void = { req, ino in
        let b = bridge(req)
        switch b.fs.readlink(ino: ino) {
        case .success(let target):
            let c = target.map { CChar(bitPattern: $0) } + [0]
            c.withUnsafeBufferPointer { _ = fuse_reply_readlink(req, $0.baseAddress) }
        case .failure(let err):
            b.replyError(req, "readlink", ino, err)
        }
    }

    func replyEntry(_ req: fuse_req_t?, _ op: String, _ parent: UInt64, _ r: Result<Attributes, FSError>) {
        switch r {
        case .success(let a):
            var e = entry(a)
            if fuse_reply_entry(req, &e) != 0 { fs.forget(ino: a.ino, count: 1) }
        case .failure(let err):
            replyError(req, op, parent, err)
        }
    }

    static let renameCallback: @convention(c) (fuse_req_t?, fuse_ino_t, UnsafePointer<CChar>?, fuse_ino_t, UnsafePointer<CChar>?, UInt32) -> Void = { req, parent, name, newParent, newName, flags in
        let b = bridge(req)
        let n = FuseBridge.name(name)
        let err = b.fs.rename(parent: parent, name: n, newParent: newParent, newName: FuseBridge.name(newName), flags: flags)
        b.trace("rename", parent, n, err.map { "error \($0.errno)" } ?? "ok")
        b.replyStatus(req, "rename", parent, err)
    }
}
