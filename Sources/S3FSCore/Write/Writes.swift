import Glibc
import S3

/// Changes through the mount. Each one updates the listing, attribute and negative caches at
/// once, so what was just written is listed and stat'ed without a request.
extension Filesystem {
    public static let renameNoReplace: UInt32 = 1
    public static let renameExchange: UInt32 = 2

    // MARK: - cache bookkeeping

    /// Records that `name` in `dirPath` now is `entry` (nil: gone).
    func record(dirPath: [UInt8], name: [UInt8], _ entry: CachedEntry?) {
        let key = Names.entryKey(dirPath: dirPath, name: name)
        state.withLock { s in
            let uncovered = setName(&s, dir: dirPath, name: name, entry)
            // Written anew through the mount: an unlinked reader's deferred delete must not take it.
            // (A directory of that name is another key: the file's object still goes.)
            if entry?.kind == .file && !s.deferredDeletes.isEmpty { s.deferredDeletes.remove(key) }
            s.negatives[key] = entry == nil && uncovered == nil ? now() : nil
            if entry?.kind == .file { s.shadowed[key] = nil }
        }
        // Written anew: a batched delete of the key must not take the new file either.
        if entry?.kind == .file { deletes.revive(key) }
    }

    /// Sets (or removes) a name in its directory's table, as every change of a name does: a walk's
    /// unfinished sweep over the directory, and listings under way above it, would bring back what
    /// they saw before the change (readdirs that begin after it start their own); in a directory
    /// listed completely the name is now listed (or no longer). A directory that goes uncovers a
    /// file of the same name it hid (returned), one that comes hides it.
    @discardableResult
    func setName(_ s: inout State, dir: [UInt8], name: [UInt8], _ entry: CachedEntry?) -> CachedEntry? {
        let key = Names.entryKey(dirPath: dir, name: name)
        for p in s.sweeps.keys where dir.starts(with: p) || p.starts(with: dir) { s.sweeps[p] = nil }
        detachListings(&s, above: key)
        let old = s.attrs[dir: dir, name: name]
        let uncovered = entry == nil && old?.kind == .directory ? s.shadowed.removeValue(forKey: key) : nil
        if entry?.kind == .directory, let old, old.kind == .file { s.shadowed[key] = old }
        s.attrs[dir: dir, name: name] = entry ?? uncovered
        return uncovered
    }

    /// Listings under way of the directories above `key` (a change there may make or remove
    /// implicit directories too): readdirs that begin after a change start their own, and what
    /// those listings saw before it no longer reaches the caches.
    func detachListings(_ s: inout State, above key: [UInt8]) {
        if s.listings.isEmpty { return }
        for i in key.indices.reversed() where key[i] == Names.slash { s.listings.removeValue(forKey: Array(key[...i]))?.changedSince = true }
        s.listings.removeValue(forKey: rootPath)?.changedSince = true
    }

    /// What `name` in `dirPath` is, from the caches or one listing; no lookup reference taken.
    func resolve(dirPath: [UInt8], name: [UInt8]) -> Result<CachedEntry?, FSError> {
        let key = Names.entryKey(dirPath: dirPath, name: name)
        let t = now()
        let cached = state.withLock { s in cachedAnswer(s, dirPath: dirPath, key: key, at: t) }
        if let c = cached { return .success(c) }
        return fetchEntry(dirPath: dirPath, name: name)
    }

    /// The key prefix of directory inode `ino`.
    func directory(_ ino: UInt64) -> Result<[UInt8], FSError> {
        state.withLock { s in
            guard let n = s.nodes[ino] else { return .failure(FSError(ENOENT)) }
            guard n.kind == .directory else { return .failure(FSError(ENOTDIR)) }
            return .success(path(of: n))
        }
    }

    func checkWritable(_ name: [UInt8]) -> FSError? {
        if options.readOnly { return FSError(EROFS) }
        if name.count > 255 { return FSError(ENAMETOOLONG) }
        if Names.invalidReason(name) != nil { return FSError(EINVAL) }
        // S3 keys are UTF-8: a name that is not would be stored under another key than the one
        // the mount shows.
        if String(validatingUTF8: name.map { CChar(bitPattern: $0) } + [0]) == nil { return FSError(EINVAL) }
        // The directory's metadata index lives under this name.
        if MetadataIndex.isIndex(name: name) { return FSError(EPERM) }
        return nil
    }

    func makeWriter(key: [UInt8], ino: UInt64, meta m: PosixMeta) throws -> FileWriter {
        try FileWriter(store: store, key: key, ino: ino, meta: m, spoolDir: options.spoolDir, multipartThreshold: options.multipartThreshold,
                       partSize: options.partSize, parallelParts: options.parallelParts, journal: journal, storesMeta: options.metadata != .none)
    }

    // MARK: - POSIX metadata

    /// The headers an object is stored with (none with `--metadata none`).
    func headers(_ m: PosixMeta, mtimeIfUnset: Timestamp = Timestamp.now()) -> [(String, String)] {
        options.metadata == .none ? [] : m.headers(mtimeIfUnset: mtimeIfUnset)
    }

    /// What a new file, directory or symlink made by `caller` gets.
    func newMeta(_ type: mode_t, _ mode: UInt32, _ caller: Caller, linkTarget: [UInt8]? = nil) -> PosixMeta {
        if options.metadata == .none { return defaultMeta(type == S_IFDIR ? .directory : .file) }
        return PosixMeta(mode: type | (mode & 0o7777), uid: caller.uid, gid: caller.gid, linkTarget: linkTarget)
    }

    /// Records what `name` in `dirPath` has now: an entry in its directory's index, or none when
    /// that is the mount's default. Written back debounced unless `persist` is false.
    func recordMeta(dirPath: [UInt8], name: [UInt8], kind: EntryKind, etag: String, _ m: PosixMeta, persist: Bool = true) {
        guard options.metadata != .none else { return }
        if m == defaultMeta(kind) {
            meta.update(dir: dirPath, name: name, nil, persist: persist)
        } else {
            meta.update(dir: dirPath, name: name, MetaRecord(etag: kind == .directory ? "" : etag, meta: m), persist: persist)
        }
    }

    /// Where an inode's metadata record lives: its directory's index and its name there.
    func recordLocation(_ n: Node) -> (dir: [UInt8], name: [UInt8]) {
        n.ino == Self.rootIno ? (rootPath, Self.rootRecordName) : (n.parentPath, n.name)
    }

    /// An entry was created, removed or renamed in `dirPath`: its mtime and ctime become now.
    /// Shown at once, at no request; stored with the next write of its parent's index only when
    /// the directory has a record of its own (`MetadataIndex.touch`, docs/SEMANTICS.md, "Times").
    func touchDirectory(_ dirPath: [UInt8]) {
        guard options.metadata != .none else { return }
        let (dir, name) = dirPath == rootPath ? (rootPath, Self.rootRecordName) : splitKey(Array(dirPath.dropLast()))
        var m = meta.anyRecord(dir: dir, name: name)?.meta ?? defaultMeta(.directory)
        guard m.isDirectory else { return }
        m.touch(Timestamp.now(), content: true)
        meta.touch(dir: dir, name: name, MetaRecord(etag: "", meta: m))
    }

    /// The metadata an inode has now: an open writer's, its record's, or the defaults.
    func currentMeta(_ n: Node) -> PosixMeta {
        if n.kind == .file, let w = handles.writer(where: { $0.ino == n.ino }) { return w.meta }
        let e = state.withLock { $0.attrs.entry(of: n) }
        return metadata(of: n, e) ?? defaultMeta(n.kind)
    }

    func register(_ w: FileWriter) -> UInt64 { handles.add(.write(w)) }

    // MARK: - files

    /// Who asks: the uid and gid of the calling process (FUSE's request context), owner of what it creates.
    public struct Caller: Sendable {
        public var uid: UInt32
        public var gid: UInt32
        public init(uid: UInt32, gid: UInt32) { self.uid = uid; self.gid = gid }
    }

    /// Creates a file: the object appears in S3 when the file is first flushed (closed or fsync'ed).
    public func create(parent: UInt64, name: [UInt8], flags: Int32, mode: UInt32 = 0o644, caller: Caller? = nil) -> Result<(Attributes, UInt64), FSError> {
        if let e = checkWritable(name) { return .failure(e) }
        let dirPath: [UInt8]
        switch directory(parent) {
        case .failure(let e): return .failure(e)
        case .success(let p): dirPath = p
        }
        if Self.keyTooLong(dirPath: dirPath, name: name) { return .failure(FSError(ENAMETOOLONG)) }
        if case .success(let e?) = resolve(dirPath: dirPath, name: name), e.kind == .directory { return .failure(FSError(EISDIR)) }
        let key = Names.entryKey(dirPath: dirPath, name: name)
        let entry = CachedEntry(kind: .file, size: 0, mtime: Double(time(nil)), etag: "", at: now())
        record(dirPath: dirPath, name: name, entry)
        let m = newMeta(S_IFREG, mode, caller ?? Caller(uid: options.uid, gid: options.gid))
        // Shown at once; stored with the upload (its headers, then its index entry).
        recordMeta(dirPath: dirPath, name: name, kind: .file, etag: "", m, persist: false)
        touchDirectory(dirPath)
        let node = state.withLock { s in referenceNode(&s, parent: parent, parentPath: dirPath, name: name, kind: .file) }
        do {
            let w = try makeWriter(key: key, ino: node.ino, meta: m)
            w.markPendingEmpty() // even an empty file is created in S3
            return .success((state.withLock { _ in attributes(node, entry) }, register(w)))
        } catch {
            forget(ino: node.ino, count: 1)
            return .failure(FSError(error))
        }
    }

    func openForWrite(ino: UInt64, flags: Int32) -> Result<UInt64, FSError> {
        if options.readOnly { return .failure(FSError(EROFS)) }
        guard let n = state.withLock({ $0.nodes[ino] }) else { return .failure(FSError(ENOENT)) }
        guard n.kind == .file else { return .failure(FSError(EISDIR)) }
        // With write-back: an earlier close's upload of this file lands before it is opened
        // again (the new writer starts from what S3 then holds).
        if let e = settleWriteBack(ino: ino) { return .failure(e) }
        let w: FileWriter
        // An overwrite keeps mode, owner and times until it writes (a write or truncate sets the
        // mtime and ctime: `touch -a` opens for writing and changes neither).
        var m = currentMeta(n)
        if flags & O_TRUNC != 0 {
            m.mtime = nil
            m.ctime = nil
        }
        do { w = try makeWriter(key: n.entryKey, ino: ino, meta: m) } catch { return .failure(FSError(error)) }
        if flags & O_TRUNC != 0 {
            w.markPendingEmpty()
        } else {
            // Overwrite in place or append: download, modify, upload (see docs/SEMANTICS.md).
            switch resolve(dirPath: n.parentPath, name: n.name) {
            case .failure(let e): w.close(); return .failure(e)
            case .success(nil): w.markPendingEmpty() // gone from S3 meanwhile: start empty
            case .success(let e?):
                w.loadLazily(size: e.size, etag: e.etag)
            }
        }
        return .success(register(w))
    }

    public func write(handle: UInt64, offset: Int64, data: UnsafeRawBufferPointer) -> Result<Int, FSError> {
        guard let w = handles.writer(handle) else { return .failure(FSError(EBADF)) }
        // Refused before a byte is spooled: S3 could never hold the file, and the part arithmetic
        // past this point would overflow.
        if offset < 0 { return .failure(FSError(EINVAL)) }
        guard ObjectSize.end(offset: offset, length: data.count, limit: w.maxSize) != nil else { return .failure(FSError(EFBIG)) }
        return w.write(offset: offset, data: data)
    }

    /// Uploads what the handle wrote (or the empty object a new or truncated file is); close()
    /// and fsync() return only once S3 has it. `final` marks release and shutdown.
    public func flush(handle: UInt64, final: Bool = false) -> FSError? {
        guard let w = handles.writer(handle) else { return nil }
        if let wb = writeBack, !final { return persistForClose(handle: handle, w, wb) }
        // A batch on the wire that deletes this key lands before the upload, never after it. (An
        // unlinked file uploads nothing: its pending delete stays.)
        if !w.state.withLock({ $0.unlinked }) { deletes.revive(w.key) }
        let result = w.upload(final: final)
        if case .success = result { endWriteBackRecord(w) }
        switch result {
        case .failure(let e): return e
        case .success(nil): return nil
        case .success where w.key.last == Names.slash:
            return nil // a directory's marker (write-back mkdir): its entry is the directory's
        case .success(let up?):
            let node = state.withLock { $0.nodes[w.ino] }
            let (dirPath, name) = node.map { ($0.parentPath, $0.name) } ?? splitKey(w.key)
            record(dirPath: dirPath, name: name, CachedEntry(kind: .file, size: up.size, mtime: (up.meta.mtime ?? Timestamp.now()).seconds, etag: up.etag, at: now()))
            meta.takeCopy(w.key) // the upload carried the headers
            recordMeta(dirPath: dirPath, name: name, kind: .file, etag: up.etag, up.meta)
            invalidator?(.inode(w.ino))
            return nil
        }
    }

    /// fsync: the file's data, and its directory's metadata index, are in S3 when it returns; so
    /// are the deletes of unlinks answered before S3 had them (of any file: a program that syncs
    /// after `rm` counts on it).
    public func fsync(handle: UInt64) -> FSError? {
        deletes.flush()
        if let e = flush(handle: handle, final: true) { return e }
        // With write-back: what earlier closes of this file left to upload lands first, whatever
        // the handle fsync'ed (a reader's too).
        if let ino = handles.writer(handle)?.ino ?? handles.reader(handle)?.ino ?? handles.spoolReader(handle)?.ino,
           let e = settleWriteBack(ino: ino) { return e }
        guard let w = handles.writer(handle) else { return nil }
        let dir = state.withLock { $0.nodes[w.ino]?.parentPath } ?? splitKey(w.key).0
        meta.runCopies(where: { $0.key == w.key })
        return meta.write(dir) ? nil : FSError(EIO)
    }

    func splitKey(_ key: [UInt8]) -> ([UInt8], [UInt8]) {
        if let i = key.lastIndex(of: Names.slash) { return (Array(key[...i]), Array(key[(i + 1)...])) }
        return ([], key)
    }

    /// Attribute changes: size (truncate), and mode, owner, group and mtime, stored in the object's
    /// headers and its directory's index (docs/SEMANTICS.md). With `--metadata none` they are
    /// mount-wide: setting what they already are succeeds, anything else is EPERM, times are
    /// accepted and not kept. The kernel has checked who may change what (default_permissions).
    public func setattr(ino: UInt64, size: Int64?, mode: UInt32?, uid: UInt32?, gid: UInt32?, mtime: Timestamp? = nil, atime: Timestamp? = nil,
                        handle: UInt64?) -> Result<Attributes, FSError> {
        guard let n = state.withLock({ $0.nodes[ino] }) else { return .failure(FSError(ENOENT)) }
        // Owners pinned by the admin: only what they already show may be set, and setting it
        // changes nothing stored.
        var uid = uid, gid = gid
        if options.forceOwner {
            if let u = uid, u != options.uid { return .failure(FSError(options.readOnly ? EROFS : EPERM)) }
            if let g = gid, g != options.gid { return .failure(FSError(options.readOnly ? EROFS : EPERM)) }
            uid = nil
            gid = nil
        }
        let metaChange = mode != nil || uid != nil || gid != nil || mtime != nil || atime != nil
        if options.metadata == .none {
            if let m = mode, m & 0o7777 != (n.kind == .directory ? options.dirMode : options.fileMode) { return .failure(FSError(options.readOnly ? EROFS : EPERM)) }
            if let u = uid, u != options.uid { return .failure(FSError(options.readOnly ? EROFS : EPERM)) }
            if let g = gid, g != options.gid { return .failure(FSError(options.readOnly ? EROFS : EPERM)) }
        } else if metaChange && options.readOnly {
            return .failure(FSError(EROFS))
        }

        if let newSize = size {
            if options.readOnly { return .failure(FSError(EROFS)) }
            guard n.kind == .file else { return .failure(FSError(EISDIR)) }
            if newSize < 0 { return .failure(FSError(EINVAL)) }
            if newSize > FileWriter.maxSize(partSize: options.partSize) { return .failure(FSError(EFBIG)) }
            let open = handle.flatMap { handles.writer($0) } ?? handles.writer { $0.ino == ino }
            if let w = open {
                if let e = w.truncate(to: newSize) { return .failure(e) }
            } else {
                // No open writer: truncate through a temporary one, uploaded at once.
                guard case .success(let h) = openForWrite(ino: ino, flags: newSize == 0 ? O_WRONLY | O_TRUNC : O_WRONLY) else {
                    return .failure(FSError(EIO))
                }
                guard let w = handles.writer(h) else { return .failure(FSError(EIO)) }
                if let e = w.truncate(to: newSize) { release(handle: h); return .failure(e) }
                let err = flush(handle: h, final: true)
                release(handle: h)
                if let err { return .failure(err) }
            }
        }
        if metaChange && options.metadata != .none, let e = changeMeta(n, handle: handle, { m in
            if let mode { m.mode = (m.mode & UInt32(S_IFMT)) | (mode & 0o7777) }
            if let uid { m.uid = uid }
            if let gid { m.gid = gid }
            if let mtime { m.mtime = mtime }
            if let atime { m.atime = atime }
            return nil
        }) {
            return .failure(e)
        }
        return getattr(ino: ino)
    }

    /// chmod, chown, utimens, xattrs: `edit` changes the inode's metadata (or refuses), and its
    /// ctime becomes now. An open file with unsent data (or one waiting for its write-back) takes
    /// the change with its upload. Otherwise the change goes to the directory's index, written
    /// once per directory and second however many entries changed (tar's utimens and chmod after
    /// each close cost no request of their own); the object's headers keep what its upload said.
    /// With `--metadata head`, kept for buckets shared with tools that read only headers (s3fs),
    /// a stored object is also copied onto itself with the new headers (one CopyObject, as s3fs
    /// does), and a directory's marker written again.
    func changeMeta(_ n: Node, handle: UInt64?, _ edit: (inout PosixMeta) -> FSError?) -> FSError? {
        // An index this program cannot read is never written over: its directory's metadata is
        // read-only (said once in the log when it was read).
        if meta.isForeign(recordLocation(n).0) { return FSError(EROFS) }
        var m = currentMeta(n)
        if let e = edit(&m) { return e }
        m.ctime = Timestamp.now()
        let (dir, name) = recordLocation(n)
        if n.kind == .directory {
            recordMeta(dirPath: dir, name: name, kind: .directory, etag: "", m)
            // Its marker is written again with the new headers, a moment later (rsync sets a
            // directory's times and mode one after the other).
            if n.ino != Self.rootIno && options.metadata == .head {
                meta.deferCopy(.init(dir: dir, name: name, key: n.path, meta: m, size: 0, etag: "", since: now()))
            }
            return nil
        }
        let writer = handle.flatMap { handles.writer($0) } ?? handles.writer { $0.ino == n.ino }
        writer?.setMeta(m)
        if let writer { noteWriteBack(writer) }
        let entry: CachedEntry
        switch resolve(dirPath: n.parentPath, name: n.name) {
        case .failure(let e): return e
        case .success(let e?) where e.kind == .file: entry = e
        case .success: return FSError(ENOENT)
        }
        if let w = writer, w.isDirty {
            // Goes up with the data; shown until then.
            recordMeta(dirPath: dir, name: name, kind: .file, etag: entry.etag, m, persist: false)
            return nil
        }
        // Its mtime is the one shown until now, whatever LastModified a copy would give it.
        if m.mtime == nil { m.mtime = Timestamp(seconds: entry.mtime) }
        writer?.setMeta(m)
        guard options.metadata == .head else {
            recordMeta(dirPath: dir, name: name, kind: .file, etag: entry.etag, m)
            return nil
        }
        // Shown at once; the copy waits a moment for the next change (or a rename that carries it).
        recordMeta(dirPath: dir, name: name, kind: .file, etag: entry.etag, m, persist: false)
        meta.deferCopy(.init(dir: n.parentPath, name: n.name, key: n.entryKey, meta: m, size: entry.size, etag: entry.etag, since: now()))
        return nil
    }

    /// Sends a deferred header change: a CopyObject of the object onto itself with the new headers
    /// (only if it still has the ETag it had then). False: try again later.
    func sendHeaderCopy(_ c: MetadataIndex.PendingCopy) -> Bool {
        if c.meta.isDirectory {
            do {
                _ = try store.put(c.key, body: .none, metadata: headers(c.meta))
                meta.counters.withLock { $0.metadataCopies += 1 }
                return true
            } catch {
                Log.warning("writing the metadata of \"\(Names.display(c.key))\": \(error) (retried in 5 s)")
                return false
            }
        }
        do {
            // A copy onto itself in another class would move the object: it keeps the class listed.
            let storageClass = state.withLock { $0.attrs[dir: c.dir, name: c.name]?.storageClass }
            let etag = try store.copy(from: c.key, to: c.key, size: c.size, metadata: headers(c.meta), sourceETag: c.etag.isEmpty ? nil : c.etag,
                                      storageClass: storageClass)
            meta.counters.withLock { $0.metadataCopies += 1 }
            let newETag = etag.isEmpty ? c.etag : etag
            let current = state.withLock { s -> Bool in
                guard var e = s.attrs[dir: c.dir, name: c.name], MetadataIndex.sameETag(e.etag, c.etag) else { return false }
                e.etag = newETag
                s.attrs[dir: c.dir, name: c.name] = e
                return true
            }
            if current { recordMeta(dirPath: c.dir, name: c.name, kind: .file, etag: newETag, c.meta) }
            return true
        } catch let e as S3Error where [.preconditionFailed, .noSuchKey, .notFound].contains(e.kind) {
            // Replaced or removed by another client since: its metadata is no longer ours to set.
            Log.info("metadata of \"\(Names.display(c.key))\" not written: the object changed or went meanwhile")
            return true
        } catch {
            Log.warning("writing the metadata of \"\(Names.display(c.key))\": \(error) (retried in 5 s)")
            return false
        }
    }

    /// A symlink: an object whose body is the target, with mode S_IFLNK|0777 (as s3fs stores it).
    public func symlink(parent: UInt64, name: [UInt8], target: [UInt8], caller: Caller) -> Result<Attributes, FSError> {
        if let e = checkWritable(name) { return .failure(e) }
        if options.metadata == .none { return .failure(FSError(EPERM)) }
        if target.isEmpty || target.count >= Int(PATH_MAX) { return .failure(FSError(target.isEmpty ? ENOENT : ENAMETOOLONG)) }
        return makeObject(parent: parent, name: name, body: target, meta: newMeta(S_IFLNK, 0o777, caller, linkTarget: target))
    }

    /// mknod: a regular file is an empty object; a FIFO, socket or device node an empty object
    /// whose mode says its type and whose `rdev` header its device number, as s3fs stores them.
    /// The kernel handles opening them (a FIFO's data never reaches the daemon); devices are inert
    /// under `nodev`, the default. Without stored metadata there is nowhere to keep the type: EPERM.
    public func mknod(parent: UInt64, name: [UInt8], mode: UInt32, rdev: UInt64 = 0, caller: Caller) -> Result<Attributes, FSError> {
        let type = mode & UInt32(S_IFMT) == 0 ? UInt32(S_IFREG) : mode & UInt32(S_IFMT)
        if let e = checkWritable(name) { return .failure(e) }
        if type == UInt32(S_IFREG) { return makeObject(parent: parent, name: name, body: [], meta: newMeta(S_IFREG, mode, caller)) }
        guard [S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].contains(where: { UInt32($0) == type }) else { return .failure(FSError(EINVAL)) }
        if options.metadata == .none { return .failure(FSError(EPERM)) }
        var m = newMeta(type, mode, caller)
        if type == UInt32(S_IFCHR) || type == UInt32(S_IFBLK) { m.rdev = rdev }
        return makeObject(parent: parent, name: name, body: [], meta: m)
    }

    /// The key prefix of directory `parent`, where `name` must not exist yet (else EEXIST).
    func newName(parent: UInt64, name: [UInt8]) -> Result<[UInt8], FSError> {
        directory(parent).flatMap { dirPath in
            if Self.keyTooLong(dirPath: dirPath, name: name) { return .failure(FSError(ENAMETOOLONG)) }
            switch resolve(dirPath: dirPath, name: name) {
            case .failure(let e): return .failure(e)
            case .success(_?): return .failure(FSError(EEXIST))
            case .success(nil): return .success(dirPath)
            }
        }
    }

    /// S3 keys are at most 1,024 bytes (UTF-8): a longer one is refused by S3 (KeyTooLongError) and
    /// Ceph RGW. Counted with the "/" a directory's marker adds, so that mkdir and create agree.
    static let maxKeyLength = 1024
    static func keyTooLong(dirPath: [UInt8], name: [UInt8]) -> Bool { dirPath.count + name.count + 1 > maxKeyLength }

    /// Puts a small object made whole at once (symlink, mknod) and records it.
    func makeObject(parent: UInt64, name: [UInt8], body: [UInt8], meta m: PosixMeta) -> Result<Attributes, FSError> {
        let dirPath: [UInt8]
        switch newName(parent: parent, name: name) {
        case .failure(let e): return .failure(e)
        case .success(let p): dirPath = p
        }
        let key = Names.entryKey(dirPath: dirPath, name: name)
        let etag: String
        var m = m
        if options.metadata != .none { m.mtime = Timestamp.now() }
        deletes.revive(key)
        do { etag = try store.put(key, body: body.isEmpty ? .none : .bytes(body), metadata: headers(m)) } catch { return .failure(FSError(error)) }
        let entry = CachedEntry(kind: .file, size: Int64(body.count), mtime: (m.mtime ?? Timestamp.now()).seconds, etag: etag, at: now())
        record(dirPath: dirPath, name: name, entry)
        recordMeta(dirPath: dirPath, name: name, kind: .file, etag: etag, m)
        touchDirectory(dirPath)
        return .success(state.withLock { s in attributes(referenceNode(&s, parent: parent, parentPath: dirPath, name: name, kind: .file), entry) })
    }

    /// A symlink's target: from its directory's index, else the object's body (s3fs's symlinks).
    public func readlink(ino: UInt64) -> Result<[UInt8], FSError> {
        guard let n = state.withLock({ $0.nodes[ino] }), n.kind == .file else { return .failure(FSError(EINVAL)) }
        let e = state.withLock { $0.attrs.entry(of: n) }
        let m = metadata(of: n, e)
        if let t = m?.linkTarget { return .success(t) }
        guard m?.isSymlink == true else { return .failure(FSError(EINVAL)) }
        var body: [UInt8] = []
        do {
            try store.get(n.entryKey, range: 0..<Int64(PATH_MAX), from: nil, ifMatch: nil) { buf in body.append(contentsOf: buf); return body.count <= Int(PATH_MAX) }
        } catch {
            return .failure(FSError(error))
        }
        // s3fs trims white space around the target it stores.
        while let l = body.last, l == 0x0A || l == 0x20 || l == 0x0D || l == 0x09 { body.removeLast() }
        while let f = body.first, f == 0x20 { body.removeFirst() }
        if var r = m.map({ MetaRecord(etag: e?.etag ?? "", meta: $0) }) {
            r.meta.linkTarget = body
            meta.learn(dir: n.parentPath, name: n.name, r)
        }
        return .success(body)
    }

    /// The parent's key prefix for removing `name`, which must exist and be of `kind`.
    func existing(_ kind: EntryKind, parent: UInt64, name: [UInt8]) -> Result<[UInt8], FSError> {
        if options.readOnly { return .failure(FSError(EROFS)) }
        let dirPath: [UInt8]
        switch directory(parent) {
        case .failure(let e): return .failure(e)
        case .success(let p): dirPath = p
        }
        switch resolve(dirPath: dirPath, name: name) {
        case .failure(let e): return .failure(e)
        case .success(nil): return .failure(FSError(ENOENT))
        case .success(let e?) where e.kind != kind: return .failure(FSError(kind == .file ? EISDIR : ENOTDIR))
        case .success: return .success(dirPath)
        }
    }

    public func unlink(parent: UInt64, name: [UInt8]) -> FSError? {
        let dirPath: [UInt8]
        switch existing(.file, parent: parent, name: name) {
        case .failure(let e): return e
        case .success(let p): dirPath = p
        }
        let key = Names.entryKey(dirPath: dirPath, name: name)
        // Files still open under this name live on until closed, and are then discarded: marked
        // first, so that no close uploads them again after the delete.
        let (open, reading) = (handles.writers.filter { $0.key == key }, handles.isReading(key: key))
        for w in open {
            if let e = w.loadBeforeUnlink() { return e }
            w.markUnlinked()
        }
        if reading {
            // Readers still have it open: the object goes when the last of them closes (unless
            // the mount writes that key again first).
            state.withLock { s in _ = s.deferredDeletes.insert(key) }
        } else if !deletes.queueIfBurst(key) {
            // The first unlink of a burst is sent alone and answered with S3's reply; those that
            // follow it closely are answered at once and deleted in batches (DeleteBatch).
            do {
                try store.delete(key)
                deletes.noteDeleted()
            } catch {
                for w in open { w.markUnlinked(false) }
                return FSError(error)
            }
        }
        meta.takeCopy(key)
        record(dirPath: dirPath, name: name, nil)
        meta.remove(dir: dirPath, name: name)
        touchDirectory(dirPath)
        detachNode(parent: parent, name: name, kind: .file)
        return nil
    }

    /// Keys a batch did not delete (S3 refused them, or the request failed after its retries): said
    /// in the log, and their names show again (the next lookup or listing asks S3).
    func batchedDeletesRefused(_ refused: [(key: [UInt8], code: String)]) {
        let shown = 10
        for (key, code) in refused.prefix(shown) {
            Log.error("deleting \"\(Names.display(key))\" failed (\(code.isEmpty ? "refused" : code)) after its unlink was answered; the file is still in S3 and shows again")
        }
        if refused.count > shown { Log.error("\(refused.count - shown) more unlinked files could not be deleted and show again") }
        var invalidations: [Invalidation] = []
        state.withLock { s in
            for (key, _) in refused {
                let (dir, name) = AttrCache.split(key)
                s.negatives[key] = nil
                s.attrs.forgetListings(where: { $0 == dir })
                detachListings(&s, above: key)
                if let p = nodeIno(s, ofDir: dir) { invalidations.append(.entry(parent: p, name: name)) }
            }
        }
        for i in invalidations { invalidator?(i) }
    }

    /// fsyncdir: the deletes of unlinks answered before S3 had them are in S3 when it returns.
    public func fsyncDirectory() -> FSError? {
        deletes.flush()
        return nil
    }
}
