import Glibc
import S3

/// Changes to names through the mount: mkdir, rmdir, rename of files and directories. Each one
/// updates the listing, attribute and negative caches at once.
extension Filesystem {
    // MARK: - directories

    /// mkdir writes a "name/" marker object so the directory survives a remount and other tools see it.
    public func mkdir(parent: UInt64, name: [UInt8], mode: UInt32 = 0o755, caller: Caller? = nil) -> Result<Attributes, FSError> {
        if let e = checkWritable(name) { return .failure(e) }
        let dirPath: [UInt8]
        switch newName(parent: parent, name: name) {
        case .failure(let e): return .failure(e)
        case .success(let p): dirPath = p
        }
        let marker = Names.dirPath(parentPath: dirPath, name: name)
        let m = newMeta(S_IFDIR, mode, caller ?? Caller(uid: options.uid, gid: options.gid))
        // With write-back, the marker goes up behind like a closed file (journaled first).
        let written = writeBack != nil && writeBackMarker(marker, meta: m)
        if !written {
            do { _ = try store.put(marker, body: .none, metadata: headers(m)) } catch { return .failure(FSError(error)) }
        }
        let entry = CachedEntry(kind: .directory, size: 0, mtime: Double(time(nil)), etag: "", at: now())
        record(dirPath: dirPath, name: name, entry)
        recordMeta(dirPath: dirPath, name: name, kind: .directory, etag: "", m)
        touchDirectory(dirPath)
        // Nothing is known of the new directory's index but that there is none.
        meta.noteListed(dir: marker, etag: nil, at: now())
        // A new directory is empty: it is complete without a listing.
        state.withLock { s in
            s.attrs.markEmpty(marker, at: now())
            if options.notifications { s.markers[marker] = now() }
        }
        return .success(state.withLock { s in attributes(referenceNode(&s, parent: parent, parentPath: dirPath, name: name, kind: .directory), entry) })
    }

    /// Keys under a directory prefix, all pages (no delimiter).
    func allKeys(under prefix: [UInt8], limit: Int? = nil) throws -> [ListedObject] {
        var out: [ListedObject] = []
        var token: String? = nil
        var pageGuard = PageGuard()
        repeat {
            let page = try store.list(prefix: prefix, delimiter: nil, continuationToken: token, maxKeys: limit.map { min($0, 1000) } ?? 1000)
            try pageGuard.check(page, prefix: prefix)
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
        let index = MetadataIndex.key(dir: marker)
        // Unlinks answered before S3 had them: deleted first, so that when `rm -r` returns (its
        // last step is this rmdir) S3 holds nothing of the directory. One that failed shows again.
        deletes.flush(under: marker)
        do {
            // Listed completely within the TTL: its emptiness is known. Deleting a marker that
            // does not exist is harmless in S3 (204), so no listing is needed (rm -r). Its
            // metadata index is not an entry: it goes with the marker.
            let t = now()
            let knownEmpty: Bool? = state.withLock { s in
                guard freshListing(s, marker, at: t) != nil else { return nil }
                return s.attrs.isEmpty(marker)
            }
            if knownEmpty == false || state.withLock({ writingUnder($0, marker, countingMarker: false) }) { return FSError(ENOTEMPTY) }
            // A marker still owed (write-back) is never sent now; one on the wire lands first,
            // and is deleted below with the rest.
            for (_, w) in handles.writers(where: { $0.key == marker }) { w.markUnlinked() }
            var remove = [marker]
            if knownEmpty == true {
                if meta.mayExist(marker) { remove.append(index) }
            } else {
                let keys = try allKeys(under: marker, limit: 3)
                if keys.contains(where: { $0.key != marker && $0.key != index }) { return FSError(ENOTEMPTY) }
                remove = keys.map { $0.key }
            }
            // No write of its index or its marker may bring the directory back after this.
            meta.discard(where: { $0 == marker })
            meta.takeCopy(marker)
            if remove.count == 1 {
                try store.delete(remove[0])
            } else if remove.count > 1, !(try store.deleteMany(remove)).isEmpty {
                return FSError(EIO)
            }
        } catch {
            return FSError(error)
        }
        record(dirPath: dirPath, name: name, nil)
        meta.update(dir: dirPath, name: name, nil)
        touchDirectory(dirPath)
        state.withLock { s in
            s.attrs.removeTable(marker)
            s.markers[marker] = nil
        }
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
        if Self.keyTooLong(dirPath: dstDir, name: newName) { return FSError(ENAMETOOLONG) }
        if dst != nil && flags & Self.renameNoReplace != 0 { return FSError(EEXIST) }
        let srcKey = Names.entryKey(dirPath: srcDir, name: name)
        let dstKey = Names.entryKey(dirPath: dstDir, name: newName)
        if src.kind == .file {
            if dst?.kind == .directory { return FSError(EISDIR) }
            // Its metadata moves with it: in the copy's headers (kept, or written whole when known,
            // since a multipart copy above 5 GiB starts with none) and in the new directory's index.
            // A rename changes the file's ctime (kept where its metadata is ours to write).
            let rec = meta.anyRecord(dir: srcDir, name: name).flatMap { MetadataIndex.sameETag($0.etag, src.etag) ? $0 : nil }
                .map { r in var r = r; r.meta.ctime = Timestamp.now(); return r }
            // A header change still waiting goes with this copy.
            let pending = meta.takeCopy(srcKey)
            // A file open for writing under the name replaced lives on detached, as after an unlink:
            // loaded now if it meant to modify its object, and never uploaded.
            let replaced = handles.writers.filter { $0.key == dstKey }
            for w in replaced { if let e = w.loadBeforeUnlink() { if let pending { meta.deferCopy(pending) }; return e } }
            do {
                var moved = src
                moved.at = now()
                if let w = state.withLock({ writing($0, srcKey) }), w.retargetIfUnsent(to: dstKey) {
                    // Its data is not in S3 yet (open for writing, or a write-back owed): it goes
                    // up under the new key, and nothing is copied (rsync's and git's temporary
                    // files). An object the old name had in S3 goes; one the new name had stays
                    // until the upload replaces it, and its ETag is what the entry keeps (a later
                    // rename must delete it).
                    moved.etag = dst?.kind == .file ? dst?.etag ?? "" : ""
                    if !src.etag.isEmpty {
                        do { try store.delete(srcKey) } catch {
                            _ = w.retargetIfUnsent(to: srcKey)
                            throw error
                        }
                    }
                    noteWriteBack(w)
                } else {
                    // A batched delete of the target name lands before the copy, never after it.
                    // (A retargeted file's own upload does the same when it goes.)
                    deletes.revive(dstKey)
                    do {
                        let etag = try store.copy(from: srcKey, to: dstKey, size: src.size,
                                                  metadata: rec.map { headers($0.meta, mtimeIfUnset: Timestamp(seconds: src.mtime)) }, sourceETag: nil,
                                                  storageClass: src.storageClass)
                        try store.delete(srcKey)
                        if !etag.isEmpty { moved.etag = etag }
                    } catch let notFound as S3Error where [.noSuchKey, .notFound].contains(notFound.kind) && state.withLock({ writing($0, srcKey) != nil }) {
                        // Created and not closed yet, so not in S3: its writer uploads it under the new
                        // name when closed (replacing what that name held). One still to download its
                        // object must have it first (gone from S3 meanwhile: the rename fails).
                        if let w = state.withLock({ writing($0, srcKey) }) {
                            if let loadError = w.loadBeforeUnlink() { throw loadError }
                            w.markPendingEmpty()
                        }
                    }
                }
                record(dirPath: dstDir, name: newName, moved)
                meta.update(dir: dstDir, name: newName, rec.map { MetaRecord(etag: moved.etag, meta: $0.meta) })
                meta.remove(dir: srcDir, name: name)
            } catch {
                if let pending { meta.deferCopy(pending) }
                return FSError(error)
            }
            for w in replaced { w.markUnlinked() }
            record(dirPath: srcDir, name: name, nil)
            touchDirectory(srcDir)
            if dstDir != srcDir { touchDirectory(dstDir) }
            moveNodes(fromPath: srcKey, parent: parent, name: name, toParentPath: dstDir, toName: newName, newParent: newParent, isDirectory: false)
            return nil
        }
        // A directory: copy every key under the prefix in parallel, then delete the originals.
        if dst?.kind == .file { return FSError(ENOTDIR) }
        let srcPrefix = srcKey + [Names.slash], dstPrefix = dstKey + [Names.slash]
        if dstPrefix.starts(with: srcPrefix) { return FSError(EINVAL) }
        let dirRecord = meta.anyRecord(dir: srcDir, name: name).map { r in var r = r; r.meta.ctime = Timestamp.now(); return r }
        // Unlinks under either name still to be deleted: what is listed and copied must not hold them.
        deletes.flush(under: srcPrefix)
        deletes.flush(under: dstPrefix)
        do {
            if dst != nil, try state.withLock({ writingUnder($0, dstPrefix, countingMarker: false) })
                || allKeys(under: dstPrefix, limit: 3).contains(where: { $0.key != dstPrefix && $0.key != MetadataIndex.key(dir: dstPrefix) }) {
                return FSError(ENOTEMPTY)
            }
            // The indexes below move with the keys: what they hold must be in S3 first.
            meta.flush(where: { $0.starts(with: srcPrefix) })
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
        meta.discard(where: { $0.starts(with: srcPrefix) || $0.starts(with: dstPrefix) })
        meta.update(dir: dstDir, name: newName, dirRecord)
        meta.update(dir: srcDir, name: name, nil)
        state.withLock { s in
            // Everything cached under the old prefix is gone; the new directory is relisted on demand.
            s.attrs.removeTables(where: { $0.starts(with: srcPrefix) })
            s.markers = s.markers.filter { !$0.key.starts(with: srcPrefix) }
            s.attrs.forgetListings(where: { $0.starts(with: dstPrefix) })
            for k in Array(s.listings.keys) where k.starts(with: srcPrefix) || k.starts(with: dstPrefix) { s.listings.removeValue(forKey: k)?.changedSince = true }
            for k in s.negatives.keys where k.starts(with: dstPrefix) { s.negatives[k] = nil }
        }
        record(dirPath: srcDir, name: name, nil)
        record(dirPath: dstDir, name: newName, CachedEntry(kind: .directory, size: 0, mtime: Double(time(nil)), etag: "", at: now()))
        touchDirectory(srcDir)
        if dstDir != srcDir { touchDirectory(dstDir) }
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
            Pools.copies.submit { [self] in
                while true {
                    var i = -1
                    cond.broadcast {
                        if failure == nil && next < keys.count { i = next; next += 1 }
                    }
                    if i < 0 { break }
                    let k = keys[i]
                    do {
                        _ = try store.copy(from: k.key, to: to + Array(k.key[from.count...]), size: k.size, metadata: nil, sourceETag: nil,
                                           storageClass: k.storageClass)
                    } catch {
                        let e = error as? S3Error ?? S3Error(kind: .transport, status: 0, code: "Copy", message: "\(error)", operation: "CopyObject")
                        cond.broadcast { if failure == nil { failure = e } }
                    }
                }
                cond.broadcast { running -= 1 }
            }
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
        // A file's writers have its key; a directory's have keys under its prefix (fromPath).
        for w in handles.writers where isDirectory ? w.key.starts(with: fromPath) : w.key == fromPath {
            let rest = w.key == fromPath ? [] : Array(w.key[fromPath.count...])
            w.rename(to: (isDirectory ? Names.dirPath(parentPath: toParentPath, name: toName) : Names.entryKey(dirPath: toParentPath, name: toName)) + rest)
            noteWriteBack(w)
        }
    }
}
