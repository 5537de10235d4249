import CCurlShim
import Glibc
import S3

/// Files opened for reading: open, read and release, handed to the read part (Read/); reads of a
/// file open for writing come from its spool.
extension Filesystem {
    // MARK: - files

    public func open(ino: UInt64, flags: Int32) -> Result<UInt64, FSError> {
        if flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0 {
            return openForWrite(ino: ino, flags: flags)
        }
        let t = now()
        enum Step { case ready(CachedEntry, Node), revalidate(Node) }
        let step: Result<Step, FSError> = state.withLock { s in
            guard let n = s.nodes[ino] else { return .failure(FSError(ENOENT)) }
            guard n.kind == .file else { return .failure(FSError(EISDIR)) }
            if let e = s.attrs.entry(of: n), e.kind == .file, fresh(e.at, t) { return .success(.ready(e, n)) }
            return .success(.revalidate(n))
        }
        var entry: CachedEntry
        var node: Node
        switch step {
        case .failure(let e): return .failure(e)
        case .success(.ready(let e, let n)): entry = e; node = n
        case .success(.revalidate(let n)):
            // Attributes older than the TTL: re-list the name (never a HeadObject) so a changed
            // object is seen at open.
            switch fetchEntry(dirPath: n.parentPath, name: n.name) {
            case .failure(let e): return .failure(e)
            case .success(let e?) where e.kind == .file: entry = e; node = n
            case .success: return .failure(FSError(ENOENT))
            }
        }
        // Data this mount has not sent yet (a file still open for writing, a write-back owed):
        // readers on this mount see it, from the spool (a dirty spool holds the whole file: the
        // first write or truncate downloads what an overwrite starts from).
        if handles.hasWriters, let w = handles.writer(where: { $0.key == node.entryKey && $0.isDirty }),
           let r = SpoolReader(path: w.spoolPath, key: node.entryKey, ino: ino) {
            return .success(handles.add(.spool(r)))
        }
        if let refused = archivedOpenError(node.entryKey, entry) { return .failure(refused) }
        // Only a streamed file has a window to size from the kernel's read-ahead (asked then, not at
        // every open): a small one is fetched whole.
        let kernelReadAhead = entry.size > FileReader.smallFileLimit ? currentKernelReadAhead?() ?? options.kernelReadAhead : options.kernelReadAhead
        // A walk through the directory may have fetched this file already.
        let mode = walkPrefetch.mode(dir: node.parentPath, name: node.name)
        let prefetched = entry.size <= options.walkReadAheadMaxSize || mode == .head
            ? walkPrefetch.opened(dir: node.parentPath, name: node.name, key: node.entryKey, etag: entry.etag, size: entry.size) : nil
        let reader = FileReader(shared: reads, key: node.entryKey, size: entry.size, etag: entry.etag, readAhead: options.readAhead,
                                kernelReadAhead: kernelReadAhead, prefetched: prefetched,
                                headFirst: mode == .head && entry.size > WalkPrefetch.headSize ? WalkPrefetch.headSize : nil)
        reader.ino = ino
        return .success(handles.add(.read(reader)))
    }

    /// Reads into buffers handed to `reply` (valid only during the call): no copy of the data in
    /// between for the streaming path. Returns the error instead when there is one.
    public func read(handle: UInt64, offset: Int64, size: Int, interrupted: (() -> Bool)? = nil, reply: ([UnsafeRawBufferPointer]) -> Void) -> FSError? {
        if let w = handles.writer(handle) {
            switch w.read(offset: offset, length: size) {
            case .success(let d): d.withUnsafeBytes { reply([$0]) }; return nil
            case .failure(let e): return e
            }
        }
        if let sr = handles.spoolReader(handle) {
            switch sr.read(offset: offset, length: size) {
            case .success(let d): d.withUnsafeBytes { reply([$0]) }; return nil
            case .failure(let e): return e
            }
        }
        guard let r = handles.reader(handle) else { return FSError(EBADF) }
        let e = r.read(offset: offset, length: size, interrupted: interrupted, reply: reply)
        if let e, e.errno == ESTALE {
            // The object changed since it was listed: forget what we knew (if the cache still says
            // so) so the next open sees it anew; the directory is then no longer known complete,
            // or its name would seem gone.
            state.withLock { s in
                guard let c = s.attrs[r.key], c.kind == .file, MetadataIndex.sameETag(c.etag, r.etag) else { return }
                s.attrs[r.key] = nil
                let dir = AttrCache.split(r.key).0
                s.attrs.forgetListings(where: { $0 == dir })
            }
        }
        // Bytes served that turned out wrong (a checksum checked at the end): the kernel must not
        // keep them (keep_cache) for the next open.
        if e != nil && r.servedBadBytes { invalidator?(.inode(r.ino)) }
        return e
    }

    /// The kernel interrupted a read of `handle`: reads waiting for its stream answer EINTR.
    public func interruptReads(handle: UInt64) {
        handles.reader(handle)?.interrupts.interrupt()
    }

    /// The same read, into one array.
    public func read(handle: UInt64, offset: Int64, size: Int) -> Result<[UInt8], FSError> {
        var out = [UInt8]()
        if let e = read(handle: handle, offset: offset, size: size, reply: { parts in
            for p in parts { out.append(contentsOf: p) }
        }) { return .failure(e) }
        return .success(out)
    }

    public func release(handle: UInt64) {
        if let w = handles.writer(handle) {
            // With write-back, a file whose close put it in the journal goes up in the background.
            if let wb = writeBack {
                if persistForClose(handle: handle, w, wb) == nil, releaseToWriteBack(handle: handle, w, wb) { return }
                wb.update { $0.drop(handle) }
            }
            if let e = flush(handle: handle, final: true) {
                Log.error("release of \(Names.display(w.key)): upload failed (\(e)); nobody is left to tell")
            }
            finishWriter(handle: handle, w)
            return
        }
        let removed = handles.remove(handle)
        if case .spool(let sr)? = removed { sr.close(); return }
        guard case .read(let r)? = removed else { return }
        let (dir, name) = AttrCache.split(r.key)
        walkPrefetch.closed(dir: dir, name: name, size: r.size, readTo: r.readTo)
        r.close()
        // The last reader of a file unlinked while open: now its object goes.
        let last = state.withLock { s -> Bool in
            guard s.deferredDeletes.contains(r.key), !handles.isReading(key: r.key) else { return false }
            s.deferredDeletes.remove(r.key)
            return true
        }
        if last {
            do { try store.delete(r.key) } catch { Log.error("deleting \(Names.display(r.key)) after its last close: \(error)") }
        }
        if options.notifications && last { settleDirectories(above: r.key) }
    }

    /// A writer whose upload is done (or given up): out of the handle table, its spool closed.
    func finishWriter(handle: UInt64, _ w: FileWriter) {
        // (It no longer makes what listings show.)
        state.withLock { s in
            _ = handles.remove(handle)
            detachListings(&s, above: w.key)
        }
        w.close()
        // Notifications: a directory whose keys others deleted while this file was being
        // written, and that this close left empty (nothing uploaded), is gone as S3 shows it.
        if options.notifications { settleDirectories(above: w.key) }
    }

    public func statfs() -> StatfsInfo { StatfsInfo() }
}
