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
            // A walk's unfinished sweep over this directory would bring back what it saw before the change.
            for p in s.sweeps.keys where dirPath.starts(with: p) || p.starts(with: dirPath) { s.sweeps[p] = nil }
            // In a directory listed completely, the name is now listed (or no longer).
            s.attrs[dir: dirPath, name: name] = entry
            s.negatives[key] = entry == nil ? now() : nil
        }
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
        return nil
    }

    func makeWriter(key: [UInt8], ino: UInt64) throws -> FileWriter {
        try FileWriter(store: store, key: key, ino: ino, spoolDir: options.spoolDir, multipartThreshold: options.multipartThreshold,
                       partSize: options.partSize, parallelParts: options.parallelParts)
    }

    func register(_ w: FileWriter) -> UInt64 {
        state.withLock { s in
            let h = s.nextHandle
            s.nextHandle += 1
            s.writers[h] = w
            return h
        }
    }

    // MARK: - files

    /// Creates a file: the object appears in S3 when the file is first flushed (closed or fsync'ed).
    public func create(parent: UInt64, name: [UInt8], flags: Int32) -> Result<(Attributes, UInt64), FSError> {
        if let e = checkWritable(name) { return .failure(e) }
        let dirPath: [UInt8]
        switch directory(parent) {
        case .failure(let e): return .failure(e)
        case .success(let p): dirPath = p
        }
        if case .success(let e?) = resolve(dirPath: dirPath, name: name), e.kind == .directory { return .failure(FSError(EISDIR)) }
        let key = Names.entryKey(dirPath: dirPath, name: name)
        let entry = CachedEntry(kind: .file, size: 0, mtime: Double(time(nil)), etag: "", at: now())
        record(dirPath: dirPath, name: name, entry)
        let node = state.withLock { s in referenceNode(&s, parent: parent, parentPath: dirPath, name: name, kind: .file) }
        do {
            let w = try makeWriter(key: key, ino: node.ino)
            w.markPendingEmpty() // even an empty file is created in S3
            return .success((attributes(node, entry), register(w)))
        } catch {
            forget(ino: node.ino, count: 1)
            return .failure(FSError(error))
        }
    }

    func openForWrite(ino: UInt64, flags: Int32) -> Result<UInt64, FSError> {
        if options.readOnly { return .failure(FSError(EROFS)) }
        guard let n = state.withLock({ $0.nodes[ino] }) else { return .failure(FSError(ENOENT)) }
        guard n.kind == .file else { return .failure(FSError(EISDIR)) }
        let w: FileWriter
        do { w = try makeWriter(key: n.entryKey, ino: ino) } catch { return .failure(FSError(error)) }
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
        guard let w = state.withLock({ $0.writers[handle] }) else { return .failure(FSError(EBADF)) }
        return w.write(offset: offset, data: data)
    }

    /// Uploads what the handle wrote (or the empty object a new or truncated file is); close()
    /// and fsync() return only once S3 has it. `final` marks release and shutdown.
    public func flush(handle: UInt64, final: Bool = false) -> FSError? {
        guard let w = state.withLock({ $0.writers[handle] }) else { return nil }
        switch w.upload(final: final) {
        case .failure(let e): return e
        case .success(nil): return nil
        case .success(let (size, etag)?):
            let node = state.withLock { $0.nodes[w.ino] }
            let (dirPath, name) = node.map { ($0.parentPath, $0.name) } ?? splitKey(w.key)
            record(dirPath: dirPath, name: name, CachedEntry(kind: .file, size: size, mtime: Double(time(nil)), etag: etag, at: now()))
            invalidator?(.inode(w.ino))
            return nil
        }
    }

    func splitKey(_ key: [UInt8]) -> ([UInt8], [UInt8]) {
        if let i = key.lastIndex(of: Names.slash) { return (Array(key[...i]), Array(key[(i + 1)...])) }
        return ([], key)
    }

    /// Size of the file as the writers see it, when one is open.
    func openWriterSize(ino: UInt64) -> Int64? {
        state.withLock { s in s.writers.values.first { $0.ino == ino }?.size }
    }

    /// Attribute changes. Size is honoured (truncate); modes, owners and times are mount-wide:
    /// setting them to what they already are succeeds, anything else is EPERM; times are accepted
    /// and not kept (S3 sets LastModified itself).
    public func setattr(ino: UInt64, size: Int64?, mode: UInt32?, uid: UInt32?, gid: UInt32?, handle: UInt64?) -> Result<Attributes, FSError> {
        guard let n = state.withLock({ $0.nodes[ino] }) else { return .failure(FSError(ENOENT)) }
        if let m = mode, m & 0o7777 != (n.kind == .directory ? options.dirMode : options.fileMode) { return .failure(FSError(options.readOnly ? EROFS : EPERM)) }
        if let u = uid, u != options.uid { return .failure(FSError(options.readOnly ? EROFS : EPERM)) }
        if let g = gid, g != options.gid { return .failure(FSError(options.readOnly ? EROFS : EPERM)) }
        if let newSize = size {
            if options.readOnly { return .failure(FSError(EROFS)) }
            guard n.kind == .file else { return .failure(FSError(EISDIR)) }
            let open = state.withLock { s -> FileWriter? in
                if let h = handle, let w = s.writers[h] { return w }
                return s.writers.values.first { $0.ino == ino }
            }
            if let w = open {
                if let e = w.truncate(to: newSize) { return .failure(e) }
            } else {
                // No open writer: truncate through a temporary one, uploaded at once.
                guard case .success(let h) = openForWrite(ino: ino, flags: newSize == 0 ? O_WRONLY | O_TRUNC : O_WRONLY) else {
                    return .failure(FSError(EIO))
                }
                let w = state.withLock { $0.writers[h]! }
                if let e = w.truncate(to: newSize) { release(handle: h); return .failure(e) }
                let err = flush(handle: h, final: true)
                release(handle: h)
                if let err { return .failure(err) }
            }
        }
        return getattr(ino: ino)
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
        do { try store.delete(key) } catch { return FSError(error) }
        record(dirPath: dirPath, name: name, nil)
        detachNode(parent: parent, name: name, kind: .file)
        return nil
    }

    // MARK: - directories

    /// mkdir writes a "name/" marker object so the directory survives a remount and other tools see it.
    public func mkdir(parent: UInt64, name: [UInt8]) -> Result<Attributes, FSError> {
        if let e = checkWritable(name) { return .failure(e) }
        let dirPath: [UInt8]
        switch directory(parent) {
        case .failure(let e): return .failure(e)
        case .success(let p): dirPath = p
        }
        switch resolve(dirPath: dirPath, name: name) {
        case .failure(let e): return .failure(e)
        case .success(_?): return .failure(FSError(EEXIST))
        case .success(nil): break
        }
        let marker = Names.dirPath(parentPath: dirPath, name: name)
        do { _ = try store.put(marker, body: .none) } catch { return .failure(FSError(error)) }
        let entry = CachedEntry(kind: .directory, size: 0, mtime: Double(time(nil)), etag: "", at: now())
        record(dirPath: dirPath, name: name, entry)
        // A new directory is empty: it is complete without a listing.
        state.withLock { s in s.attrs.markEmpty(marker, at: now()) }
        return .success(state.withLock { s in attributes(referenceNode(&s, parent: parent, parentPath: dirPath, name: name, kind: .directory), entry) })
    }

    /// Keys under a directory prefix, all pages (no delimiter).
    func allKeys(under prefix: [UInt8], limit: Int? = nil) throws -> [ListedObject] {
        var out: [ListedObject] = []
        var token: String? = nil
        repeat {
            let page = try store.list(prefix: prefix, delimiter: nil, continuationToken: token, maxKeys: limit.map { min($0, 1000) } ?? 1000)
            out += page.objects
            if let l = limit, out.count >= l { break }
            token = page.isTruncated ? page.nextContinuationToken : nil
        } while token != nil
        return out
    }

    public func rmdir(parent: UInt64, name: [UInt8]) -> FSError? {
        let dirPath: [UInt8]
        switch existing(.directory, parent: parent, name: name) {
        case .failure(let e): return e
        case .success(let p): dirPath = p
        }
        let marker = Names.dirPath(parentPath: dirPath, name: name)
        do {
            // Listed completely within the TTL: its emptiness is known. Deleting a marker that
            // does not exist is harmless in S3 (204), so no listing is needed (rm -r).
            let t = now()
            let knownEmpty: Bool? = state.withLock { s in
                guard freshListing(s, marker, at: t) != nil else { return nil }
                return s.attrs.isEmpty(marker)
            }
            switch knownEmpty {
            case false?: return FSError(ENOTEMPTY)
            case true?: try store.delete(marker)
            case nil:
                let keys = try allKeys(under: marker, limit: 2)
                if keys.contains(where: { $0.key != marker }) { return FSError(ENOTEMPTY) }
                if !keys.isEmpty { try store.delete(marker) }
            }
        } catch {
            return FSError(error)
        }
        record(dirPath: dirPath, name: name, nil)
        state.withLock { s in s.attrs.removeTable(marker) }
        detachNode(parent: parent, name: name, kind: .directory)
        return nil
    }

    /// A removed name no longer finds its inode (which lives on while the kernel holds it): the
    /// next object of that name gets a new one.
    func detachNode(parent: UInt64, name: [UInt8], kind: EntryKind) {
        state.withLock { s in
            s.nodes.detach(parent: parent, name: name, kind: kind)
        }
    }

    // MARK: - rename

    public func rename(parent: UInt64, name: [UInt8], newParent: UInt64, newName: [UInt8], flags: UInt32) -> FSError? {
        if options.readOnly { return FSError(EROFS) }
        if flags & Self.renameExchange != 0 { return FSError(EINVAL) }
        if let e = checkWritable(newName) { return e }
        let srcDir: [UInt8], dstDir: [UInt8]
        switch (directory(parent), directory(newParent)) {
        case (.success(let a), .success(let b)): srcDir = a; dstDir = b
        case (.failure(let e), _), (_, .failure(let e)): return e
        }
        let src: CachedEntry
        switch resolve(dirPath: srcDir, name: name) {
        case .failure(let e): return e
        case .success(nil): return FSError(ENOENT)
        case .success(let e?): src = e
        }
        var dst: CachedEntry? = nil
        switch resolve(dirPath: dstDir, name: newName) {
        case .failure(let e): return e
        case .success(let e): dst = e
        }
        if srcDir == dstDir && name == newName { return nil }
        if dst != nil && flags & Self.renameNoReplace != 0 { return FSError(EEXIST) }
        let srcKey = Names.entryKey(dirPath: srcDir, name: name)
        let dstKey = Names.entryKey(dirPath: dstDir, name: newName)
        if src.kind == .file {
            if dst?.kind == .directory { return FSError(EISDIR) }
            do {
                let etag = try store.copy(from: srcKey, to: dstKey, size: src.size)
                try store.delete(srcKey)
                var moved = src
                moved.at = now()
                if !etag.isEmpty { moved.etag = etag }
                record(dirPath: dstDir, name: newName, moved)
            } catch {
                return FSError(error)
            }
            record(dirPath: srcDir, name: name, nil)
            moveNodes(fromPath: srcKey, parent: parent, name: name, toParentPath: dstDir, toName: newName, newParent: newParent, isDirectory: false)
            return nil
        }
        // A directory: copy every key under the prefix in parallel, then delete the originals.
        if dst?.kind == .file { return FSError(ENOTDIR) }
        let srcPrefix = srcKey + [Names.slash], dstPrefix = dstKey + [Names.slash]
        if dstPrefix.starts(with: srcPrefix) { return FSError(EINVAL) }
        do {
            if dst != nil, try allKeys(under: dstPrefix, limit: 2).contains(where: { $0.key != dstPrefix }) { return FSError(ENOTEMPTY) }
            let keys = try allKeys(under: srcPrefix)
            if let failure = parallelCopy(keys, from: srcPrefix, to: dstPrefix) {
                Log.error("rename of directory \(Names.display(srcPrefix)) stopped: \(failure); keys copied so far exist under both names, run the mv again to finish")
                return FSError(failure.errno)
            }
            let failed = try store.deleteMany(keys.map { $0.key })
            if !failed.isEmpty {
                Log.error("rename of directory \(Names.display(srcPrefix)): \(failed.count) originals could not be deleted")
                return FSError(EIO)
            }
        } catch {
            return FSError(error)
        }
        state.withLock { s in
            // Everything cached under the old prefix is gone; the new directory is relisted on demand.
            s.attrs.removeTables(where: { $0.starts(with: srcPrefix) })
            s.attrs.forgetListings(where: { $0.starts(with: dstPrefix) })
            for k in s.negatives.keys where k.starts(with: dstPrefix) { s.negatives[k] = nil }
        }
        record(dirPath: srcDir, name: name, nil)
        record(dirPath: dstDir, name: newName, CachedEntry(kind: .directory, size: 0, mtime: Double(time(nil)), etag: "", at: now()))
        moveNodes(fromPath: srcPrefix, parent: parent, name: name, toParentPath: dstDir, toName: newName, newParent: newParent, isDirectory: true)
        return nil
    }

    /// Copies keys in parallel (16 at a time); returns the first failure.
    func parallelCopy(_ keys: [ListedObject], from: [UInt8], to: [UInt8]) -> S3Error? {
        let cond = Condition()
        var next = 0
        var running = 0
        var failure: S3Error? = nil
        let workers = min(16, max(1, keys.count))
        for _ in 0..<workers {
            cond.broadcast { running += 1 }
            let t = Thread { [self] in
                while true {
                    var i = -1
                    cond.broadcast {
                        if failure == nil && next < keys.count { i = next; next += 1 }
                    }
                    if i < 0 { break }
                    let k = keys[i]
                    do {
                        _ = try store.copy(from: k.key, to: to + Array(k.key[from.count...]), size: k.size)
                    } catch {
                        let e = error as? S3Error ?? S3Error(kind: .transport, status: 0, code: "Copy", message: "\(error)", operation: "CopyObject")
                        cond.broadcast { if failure == nil { failure = e } }
                    }
                }
                cond.broadcast { running -= 1 }
            }
            t.start()
        }
        cond.wait(until: { running == 0 })
        return failure
    }

    /// Keeps inode numbers across a rename: the moved node (and, for a directory, every known
    /// node below it) now lives under the new path.
    func moveNodes(fromPath: [UInt8], parent: UInt64, name: [UInt8], toParentPath: [UInt8], toName: [UInt8], newParent: UInt64, isDirectory: Bool) {
        let kind: EntryKind = isDirectory ? .directory : .file
        state.withLock { s in
            guard let n = s.nodes.find(parent: parent, name: name, kind: kind) else { return }
            // What the kernel knew under the new name was replaced.
            s.nodes.detach(parent: newParent, name: toName, kind: kind)
            s.nodes.move(n.ino, parent: newParent, parentPath: toParentPath, name: storedName(s, dir: toParentPath, name: toName))
            guard isDirectory else { return }
            // Nodes below keep their parents and names; their parent paths change.
            let newPrefix = Names.dirPath(parentPath: toParentPath, name: toName)
            s.nodes.updateAll { c in
                if c.parentPath.starts(with: fromPath) { c.parentPath = newPrefix + Array(c.parentPath[fromPath.count...]) }
            }
        }
        for w in state.withLock({ Array($0.writers.values) }) where w.key.starts(with: fromPath) || w.key == fromPath {
            let rest = w.key == fromPath ? [] : Array(w.key[fromPath.count...])
            w.rename(to: (isDirectory ? Names.dirPath(parentPath: toParentPath, name: toName) : Names.entryKey(dirPath: toParentPath, name: toName)) + rest)
        }
    }

    // MARK: - shutdown

    /// Uploads what open files still hold (the kernel will never send their release after an
    /// unmount). Bounded by `timeout` seconds; logs what it does.
    public func shutdown(timeout: Double) {
        let dirty = state.withLock { s in s.writers.filter { $0.value.isDirty } }
        guard !dirty.isEmpty else { return }
        Log.info("unmount: uploading \(dirty.count) file(s) still open for writing (up to \(Int(timeout)) s)")
        let cond = Condition()
        var left = dirty.count
        for (h, w) in dirty {
            let t = Thread { [self] in
                if let e = flush(handle: h, final: true) { Log.error("unmount: \(Names.display(w.key)) not uploaded: \(e)") }
                w.close()
                cond.broadcast { left -= 1 }
            }
            t.start()
        }
        if !cond.wait(timeout: timeout, until: { left == 0 }) {
            Log.error("unmount: gave up waiting for \(left) upload(s) after \(Int(timeout)) s; their spool files are kept in \(options.spoolDir)")
        }
    }
}

/// What the core asks the bridge to tell the kernel.
public enum Invalidation: Sendable {
    case inode(UInt64)
    case entry(parent: UInt64, name: [UInt8])
}
