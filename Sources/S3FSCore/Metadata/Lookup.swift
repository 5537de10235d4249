import CCurlShim
import Glibc
import S3

/// The metadata part's answers about names: lookup, getattr and forget, from the caches or one
/// listing (never a HeadObject unless `--metadata head`).
extension Filesystem {
    // MARK: - lookup / forget / getattr

    /// What the caches say of `key` (a name in `dirPath`) at time `t`: the entry, known missing
    /// (`.some(nil)`: a complete listing or a negative entry), or nothing (`nil`: ask S3).
    func cachedAnswer(_ s: State, dirPath: [UInt8], key: [UInt8], at t: Double) -> CachedEntry?? {
        let e = s.attrs[key]
        if e?.kind != .directory, let w = writing(s, key) { return .some(writingEntry(e, w, at: t)) }
        if let e, fresh(e.at, t) { return .some(e) }
        // A directory that holds a file being written exists, whatever S3 lists yet.
        if handles.hasWriters && writingUnder(s, key + [Names.slash]) {
            return .some(e?.kind == .directory ? e : CachedEntry(kind: .directory, size: 0, mtime: 0, etag: "", at: t))
        }
        if freshListing(s, dirPath, at: t) != nil { return .some(nil) }
        if let at = s.negatives[key], fresh(at, t) { return .some(nil) }
        return nil
    }

    /// Looks `name` up in directory `parent`. Returns nil for "no such name" (a negative entry the
    /// kernel may cache). A found entry carries one new lookup reference.
    public func lookup(parent: UInt64, name: [UInt8]) -> Result<Attributes?, FSError> {
        if name.count > 255 { return .failure(FSError(ENAMETOOLONG)) }
        guard let parentNode = state.withLock({ $0.nodes[parent] }) else { return .failure(FSError(ENOENT)) }
        guard parentNode.kind == .directory else { return .failure(FSError(ENOTDIR)) }
        if Names.invalidReason(name) != nil || MetadataIndex.isIndex(name: name) { return .success(nil) }
        let dirPath = path(of: parentNode)
        switch lookupEntry(parent: parent, dirPath: dirPath, name: name) {
        case .success(let a?): return .success(withMetadata(a, dirPath: dirPath))
        case let other: return other
        }
    }

    func lookupEntry(parent: UInt64, dirPath: [UInt8], name: [UInt8]) -> Result<Attributes?, FSError> {
        let key = Names.entryKey(dirPath: dirPath, name: name)

        enum Step { case found(Attributes), missing, wait(Condition, () -> Bool), fetch(Flight), listing(ListingJob, start: Bool) }
        for round in 0..<4 {
            let t = now()
            let step: Step = state.withLock { s in
                switch cachedAnswer(s, dirPath: dirPath, key: key, at: t) {
                case let e??:
                    s.counters.attrHits += 1
                    let n = referenceNode(&s, parent: parent, parentPath: dirPath, name: name, kind: e.kind)
                    return .found(attributes(n, e))
                case .some(nil):
                    s.counters.negativeHits += 1
                    return .missing
                case nil:
                    break
                }
                if round < 3 {
                    // Share a listing of the parent, or another lookup of this very name, already on the wire.
                    if let job = s.listings[dirPath] { return .listing(job, start: false) }
                    if let f = s.lookupFlights[key] { return .wait(f.cond, { f.done }) }
                    // Several names asked in a directory not listed yet (a shell creating files, a
                    // build probing headers): list it once instead of once per name.
                    s.lookupMisses[dirPath, default: 0] += 1
                    if s.lookupMisses[dirPath]! >= 2 {
                        s.lookupMisses[dirPath] = nil
                        let job = ListingJob(dirPath: dirPath, maxPages: 10)
                        s.listings[dirPath] = job
                        s.counters.listingMisses += 1
                        return .listing(job, start: true)
                    }
                }
                s.counters.attrMisses += 1
                let f = Flight()
                s.lookupFlights[key] = f
                return .fetch(f)
            }
            switch step {
            case .found(let a): return .success(a)
            case .missing: return .success(nil)
            case .wait(let c, let done): c.wait(until: done); continue
            case .listing(let job, let start):
                if start {
                    Pools.listings.submit { [self] in self.runListing(job) }
                }
                // Wait until the listing is done or has gone past the name (keys come sorted).
                let dirKey = key + [Names.slash]
                var passed = false
                job.cond.wait(until: {
                    passed = !job.lastKey.lexicographicallyPrecedes(dirKey) && !job.lastKey.isEmpty
                    return job.done || passed
                })
                if passed && job.error == nil {
                    let answer: Attributes?? = state.withLock { s in
                        if job.changedSince { return nil } // it no longer primes: ask again
                        if let e = s.attrs[key], e.at >= job.startedAt {
                            s.counters.attrHits += 1
                            return .some(attributes(referenceNode(&s, parent: parent, parentPath: dirPath, name: name, kind: e.kind), e))
                        }
                        s.negatives[key] = job.startedAt
                        return .some(nil)
                    }
                    if let a = answer { return .success(a) }
                }
                continue
            case .fetch(let flight):
                let result = fetchEntry(dirPath: dirPath, name: name)
                state.withLock { $0.lookupFlights[key] = nil }
                flight.cond.broadcast { flight.done = true }
                switch result {
                case .failure(let e): return .failure(e)
                case .success(nil): return .success(nil)
                case .success(let e?):
                    return .success(state.withLock { s in
                        let n = referenceNode(&s, parent: parent, parentPath: dirPath, name: name, kind: e.kind)
                        return attributes(n, e)
                    })
                }
            }
        }
        return .failure(FSError(EIO))
    }

    /// One ListObjectsV2 with prefix = the name and delimiter "/": the key itself means a file, a
    /// common prefix "name/" a directory (implicit or with a marker), neither means no such name.
    /// Every sibling the page shows is primed too.
    func fetchEntry(dirPath: [UInt8], name: [UInt8]) -> Result<CachedEntry?, FSError> {
        let key = Names.entryKey(dirPath: dirPath, name: name)
        let dirKey = key + [Names.slash]
        var token: String? = nil
        var found: CachedEntry? = nil
        var previous: [UInt8]? = nil
        var pageGuard = PageGuard()
        let started = now()
        var held: [([UInt8], CachedEntry)] = []
        do {
            repeat {
                let page = try store.list(prefix: key, delimiter: "/", continuationToken: token, maxKeys: options.listPageSize)
                try pageGuard.check(page, prefix: key)
                let entries = entriesOf(page, dirPath: dirPath, at: started, listPrefix: key, after: previous)
                previous = page.lastListed
                held = prime(dirPath: dirPath, held + entries, at: started, through: page.isTruncated ? page.lastListed : nil)
                for (n, e) in entries where n == name {
                    if found == nil || e.kind == .directory { found = e }
                }
                // Keys sort as bytes: once past "name/", nothing further can be the name.
                if found?.kind == .directory || !page.isTruncated || !(page.lastListed.lexicographicallyPrecedes(dirKey)) { break }
                token = page.nextContinuationToken
            } while token != nil
        } catch {
            Log.warning("lookup of \(Names.display(key)): \(error)")
            return .failure(FSError(error))
        }
        if found == nil {
            state.withLock { $0.negatives[key] = started }
        }
        return .success(found)
    }

    /// Names and entries of one listing page, relative to `dirPath`; invalid names skipped (logged
    /// once). The directory's metadata index is not an entry: the page tells whether it exists
    /// (the page listed `listPrefix` after the key `after`).
    func entriesOf(_ page: ListPage, dirPath: [UInt8], at t: Double, listPrefix: [UInt8], after: [UInt8]?) -> [([UInt8], CachedEntry)] {
        var out: [([UInt8], CachedEntry)] = []
        out.reserveCapacity(page.objects.count + page.commonPrefixes.count)
        let n = dirPath.count
        var indexSeen = false
        let hidden = unlinkedKeys(listingStartedAt: t)
        for o in page.objects {
            guard o.key.count > n, o.key.starts(with: dirPath) else {
                if o.key == dirPath && options.notifications { state.withLock { $0.markers[dirPath] = t } } // the directory's own marker
                continue
            }
            if !hidden.isEmpty && hidden.contains(o.key) { continue }
            let name = Array(o.key[n...])
            if name.contains(Names.slash) { continue }
            if MetadataIndex.isIndex(name: name) {
                meta.noteListed(dir: dirPath, etag: o.etag, at: t)
                indexSeen = true
                continue
            }
            if let why = Names.invalidReason(name) { skip(o.key, why); continue }
            out.append((name, CachedEntry(kind: .file, size: o.size, mtime: o.lastModified, etag: o.etag, at: t, storageClass: o.storageClass)))
        }
        for p in page.commonPrefixes {
            guard p.count > n, p.starts(with: dirPath), p.last == Names.slash else { continue }
            let name = Array(p[n..<(p.count - 1)])
            if name.contains(Names.slash) { continue }
            if let why = Names.directoryReason(name) { skip(p, why); continue }
            out.append((name, CachedEntry(kind: .directory, size: 0, mtime: 0, etag: "", at: t)))
        }
        // The page went past where the index would sort without showing it: there is none.
        let indexKey = MetadataIndex.key(dir: dirPath)
        if !indexSeen && MetadataIndex.covered(indexKey, prefix: listPrefix, after: after, last: page.lastListed, complete: !page.isTruncated) {
            meta.noteListed(dir: dirPath, etag: nil, at: t)
        }
        return out
    }

    func skip(_ key: [UInt8], _ why: Names.Invalid) {
        state.withLock { s in
            if s.skippedKeys.count < 10_000, s.skippedKeys.insert(key).inserted { s.counters.skippedNames += 1 }
        }
        Log.shared.once(.warning, key: "skip:" + Names.display(key), "skipping key \"\(Names.display(key))\": \(why.rawValue)")
    }

    /// Puts listed entries in the attribute cache under their entry keys. A directory beats a file
    /// of the same name learned at the same time (key that is both a file and a prefix).
    /// `through`: a delimiter page's last key or prefix when more pages follow (nil: the last page).
    /// Returns the files held back for the next page (see `storeEntries`), to be passed in with it.
    @discardableResult
    func prime(dirPath: [UInt8], _ entries: [([UInt8], CachedEntry)], at t: Double, job: ListingJob? = nil, through: [UInt8]? = nil) -> [([UInt8], CachedEntry)] {
        state.withLock { s in
            if job?.changedSince == true { return [] }
            return storeEntries(&s, dirPath: dirPath, entries, at: t, logShadowed: true, through: through)
        }
    }

    /// Sets listed entries in a directory's table; a file never replaces a directory of the same
    /// name learned at the same time or later. Nor one whose prefix ("name/") the page has not
    /// passed (`through`: more pages follow): the next page may list that prefix, and a listing
    /// that stops between the two must not leave the directory shown as a file. Such files are
    /// returned, held back for the next page.
    @discardableResult
    func storeEntries(_ s: inout State, dirPath: [UInt8], _ entries: [([UInt8], CachedEntry)], at t: Double, logShadowed: Bool,
                      through: [UInt8]? = nil) -> [([UInt8], CachedEntry)] {
        if entries.isEmpty { return [] }
        var hidden: [([UInt8], CachedEntry)] = []
        var held: [([UInt8], CachedEntry)] = []
        // (Only a page with more to follow can hold a file back.)
        let dirNames: Set<[UInt8]> = through == nil ? [] : Set(entries.lazy.filter { $0.1.kind == .directory }.map { $0.0 })
        s.attrs.update(dir: dirPath) { table in
            for (name, e) in entries {
                if e.kind == .file, let last = through, !dirNames.contains(name), table[name]?.kind == .directory,
                   last.lexicographicallyPrecedes(dirPath + name + [Names.slash]) {
                    held.append((name, e))
                    continue
                }
                if e.kind == .file, let old = table[name], old.kind == .directory, old.at >= t {
                    if logShadowed {
                        let key = Names.entryKey(dirPath: dirPath, name: name)
                        Log.shared.once(.info, key: "shadow:" + Names.display(key), "\"\(Names.display(key))\" is both a file and a prefix; showing the directory")
                    }
                    hidden.append((name, e))
                    continue
                }
                if e.kind == .directory, let old = table[name], old.kind == .file { hidden.append((name, old)) }
                table.set(name, e)
            }
        }
        for (name, e) in hidden { s.shadowed[Names.entryKey(dirPath: dirPath, name: name)] = e }
        if !s.negatives.isEmpty {
            for (name, _) in entries { s.negatives[Names.entryKey(dirPath: dirPath, name: name)] = nil }
        }
        return held
    }

    public func forget(ino: UInt64, count: UInt64) {
        guard ino != Self.rootIno else { return }
        state.withLock { s in
            guard var n = s.nodes[ino] else { return }
            n.lookups = UInt64(n.lookups) > count ? n.lookups - UInt32(count) : 0
            if n.lookups == 0 {
                s.nodes.remove(ino)
            } else {
                s.nodes.update(n)
            }
        }
    }

    /// The kernel's batch forget; afterwards the inode table shrinks if it became mostly empty
    /// and the memory goes back to the system.
    public func forget(_ batch: [(ino: UInt64, count: UInt64)]) {
        for f in batch { forget(ino: f.ino, count: f.count) }
        let shrunk = state.withLock { $0.nodes.shrinkIfSparse() }
        if shrunk { s3m_malloc_trim() }
    }

    public func getattr(ino: UInt64) -> Result<Attributes, FSError> {
        var r = getattrCached(ino: ino)
        if case .failure(let e) = r, e.errno == ENOENT {
            // Open and unlinked (or not in S3 yet): it lives on until the last close.
            let open = state.withLock { s -> (FileWriter?, FileReader?) in
                guard let n = s.nodes[ino], n.kind == .file else { return (nil, nil) }
                let key = n.entryKey
                return (handles.writer { $0.ino == ino }, handles.readers.first { $0.key == key })
            }
            if let w = open.0 {
                var a = attributes(ino: ino, kind: .file, nil, w.shownMeta)
                a.size = w.size
                a.unlinked = w.state.withLock { $0.unlinked }
                return .success(a)
            }
            if let rd = open.1 {
                var a = attributes(ino: ino, kind: .file, nil)
                a.size = rd.size
                a.provisional = false
                a.unlinked = true // its name went while it was open
                return .success(a)
            }
        }
        // A file open for writing is as large as its spool, whatever S3 holds yet, and was
        // modified when it was last written.
        if handles.hasWriters, let w = handles.writer(where: { $0.ino == ino }) {
            let (size, written) = (w.size, w.isDirty ? w.shownMeta : nil)
            r = r.map { a in
                var a = a
                a.size = size
                if let t = written?.mtime { a.mtime = t; a.ctime = written?.ctime }
                return a
            }
        }
        guard case .success(let a) = r, options.metadata != .none,
              let dirPath = state.withLock({ s in s.nodes[ino].map { $0.parentPath } }) else { return r }
        // A directory's attributes cost no request (its lookup or listing read its index); a
        // file whose directory was not listed within the TTL may ask whether there is an index.
        return .success(withMetadata(a, dirPath: dirPath, probe: a.kind == .file))
    }

    func getattrCached(ino: UInt64) -> Result<Attributes, FSError> {
        let t = now()
        enum Step { case done(Attributes), revalidate(Node) }
        let step: Step? = state.withLock { s in
            guard let n = s.nodes[ino] else { return nil }
            if n.ino == Self.rootIno { return .done(attributes(n, nil)) }
            // A file whose name was removed or given to another file since (unlink, a rename over
            // it) is not what that name is now: its open handles answer (see getattr).
            if n.kind == .file && s.nodes.find(parent: n.parent, name: n.name, kind: .file)?.ino != ino { return nil }
            let e = s.attrs.entry(of: n)
            if let e, e.kind == n.kind, fresh(e.at, t) || (n.kind == .file && openForWriting(s, n.entryKey)) {
                s.counters.attrHits += 1
                return .done(attributes(n, e))
            }
            // A directory's attributes do not depend on S3; no request to refresh them.
            if n.kind == .directory { return .done(attributes(n, e?.kind == .directory ? e : nil)) }
            s.counters.attrMisses += 1
            return .revalidate(n)
        }
        switch step {
        case nil: return .failure(FSError(ENOENT))
        case .done(let a)?: return .success(a)
        case .revalidate(let n)?:
            switch fetchEntry(dirPath: n.parentPath, name: n.name) {
            case .failure(let e): return .failure(e)
            case .success(let e?) where e.kind == n.kind: return .success(attributes(n, e))
            case .success: return .failure(FSError(ENOENT))
            }
        }
    }
}
