import CCurlShim
import Glibc
import S3

/// The metadata part's directory listings: opendir, readdir, the shared `ListingJob`s that
/// prime the attribute cache, and the subtree sweeps of recursive walks.
extension Filesystem {
    // MARK: - directories

    /// An open directory: its handle, and whether the kernel may keep the entries it cached from
    /// an earlier read. It may only while the complete listing it read is the one held and younger
    /// than the TTL; otherwise it must drop them, or changes made by other S3 clients would never
    /// show in a directory it keeps cached.
    public struct OpenDirectory {
        public var handle: UInt64
        public var kernelMayKeepEntries: Bool
    }

    public func opendir(ino: UInt64) -> Result<UInt64, FSError> { openDirectory(ino: ino).map { $0.handle } }

    /// Opens a directory. A listing that has to be fetched starts at the first readdir, not here:
    /// an open that never reads (`s3mount stats`, a `cd`, an fd kept for *at calls) costs nothing.
    public func openDirectory(ino: UInt64) -> Result<OpenDirectory, FSError> {
        let t = now()
        return state.withLock { s in
            guard let n = s.nodes[ino] else { return .failure(FSError(ENOENT)) }
            guard n.kind == .directory else { return .failure(FSError(ENOTDIR)) }
            let dirPath = path(of: n)
            // A walk: a sibling of this directory was opened moments ago.
            var walkParent: [UInt8]? = nil
            if ino != Self.rootIno, let parent = s.nodes[n.parent] {
                let parentPath = path(of: parent)
                if let last = s.lastChildOpened[parentPath], last.child != dirPath, t - last.at < Self.walkWindow { walkParent = parentPath }
                s.lastChildOpened[parentPath] = (dirPath, t)
            }
            let h = handles.add(.dir(DirHandle(ino: ino, parent: n.parent, dirPath: dirPath, job: nil, walkParent: walkParent)))
            let keep = freshListing(s, dirPath, at: t) != nil && s.attrs.kernelIsCurrent(dirPath)
            return .success(OpenDirectory(handle: h, kernelMayKeepEntries: keep))
        }
    }

    /// A directory handle and the listing it reads: the one it got at its first read, or (at the
    /// first read) the cached listing, one already running, or a listing started now.
    func listing(for handle: UInt64) -> (DirHandle, ListingJob)? {
        let t = now()
        let (found, start): ((DirHandle, ListingJob)?, Bool) = state.withLock { s in
            guard var dh = handles.dir(handle) else { return (nil, false) }
            if let j = dh.job { return ((dh, j), false) }
            var start = false
            if let l = freshListing(s, dh.dirPath, at: t), var entries = s.attrs.completeEntries(dh.dirPath) {
                s.counters.listingHits += 1
                // With the files being written (and directories they make), whether S3 has them yet or not.
                let writing = writingEntries(s, in: dh.dirPath)
                if !writing.isEmpty {
                    let at = Dictionary(entries.enumerated().map { ($0.element.0, $0.offset) }, uniquingKeysWith: { a, _ in a })
                    for (name, e) in writing {
                        if let i = at[name] { if e.kind == .directory { entries[i].1 = e } } else { entries.append((name, e)) }
                    }
                }
                dh.job = ListingJob(dirPath: dh.dirPath, completed: entries)
                s.attrs.noteKernelRead(dh.dirPath, listedAt: l)
            } else if let running = s.listings[dh.dirPath],
                      running.cond.locked({ () -> Bool in
                          // Joined by a reader: a lookup-started listing must now run to the end.
                          if running.done { return false }
                          running.maxPages = nil
                          return true
                      }) {
                s.counters.listingHits += 1
                running.readByKernel = true
                dh.job = running
            } else {
                s.counters.listingMisses += 1
                let j = ListingJob(dirPath: dh.dirPath)
                j.walkParent = dh.walkParent
                j.readByKernel = true
                s.listings[dh.dirPath] = j
                dh.job = j
                start = true
            }
            handles.update(handle, dh)
            return ((dh, dh.job!), start)
        }
        if start, let job = found?.1 {
            Pools.listings.submit { [self] in self.runListing(job) }
        }
        return found
    }

    /// Lists a directory page by page (delimiter "/"), priming the attribute cache and handing
    /// entries to readers as each page arrives.
    func runListing(_ job: ListingJob) {
        let started = now()
        // Files being written (and directories they make) first: what S3 lists does not replace them.
        let writing = state.withLock { writingEntries($0, in: job.dirPath) }
        job.cond.broadcast { job.startedAt = started; job.append(writing) }
        var token: String? = nil
        var startAfter: [UInt8]? = nil
        var previous: [UInt8]? = nil
        var pages = 0
        // Files of this directory held back by the flat page for the delimiter pages (see storeEntries).
        var rootHeld: [([UInt8], CachedEntry)] = []
        do {
            if options.flatListing, let parent = job.walkParent, try sweep(job, parent: parent, started: started) {
                return
            }
            if options.flatListing {
                // One flat page of the whole subtree first. If it holds everything, this directory
                // and every directory below it are complete; if not, the directories it passed
                // entirely are, and the rest of this one continues with the delimiter after it.
                let flat = try store.list(prefix: job.dirPath, delimiter: nil, continuationToken: nil, startAfter: nil, maxKeys: options.listPageSize)
                pages += 1
                let complete = !flat.isTruncated
                let last = flat.objects.last?.key ?? []
                let primed = primeSubtree(root: job.dirPath, flat.objects, pageStart: nil, lastKey: last, complete: complete, at: started, job: job)
                let direct = primed.direct
                rootHeld = primed.held
                job.cond.broadcast { job.add(direct, through: complete ? ListingJob.pastEverything : last) }
                if complete {
                    finishListing(job, started: started)
                    return
                }
                startAfter = last
            }
            var pageGuard = PageGuard()
            var held = rootHeld
            repeat {
                let page = try store.list(prefix: job.dirPath, delimiter: "/", continuationToken: token,
                                          startAfter: token == nil ? startAfter : nil, maxKeys: options.listPageSize)
                try pageGuard.check(page, prefix: job.dirPath)
                pages += 1
                let entries = entriesOf(page, dirPath: job.dirPath, at: started, listPrefix: job.dirPath, after: token == nil ? startAfter : previous)
                held = prime(dirPath: job.dirPath, held + entries, at: started, job: job, through: page.isTruncated ? page.lastListed : nil)
                let last = page.lastListed
                previous = last
                token = page.isTruncated ? page.nextContinuationToken : nil
                // Past the last page, nothing sorts after: every name has been passed.
                var stop = false
                job.cond.broadcast {
                    job.add(entries, through: token == nil ? ListingJob.pastEverything : last)
                    if let m = job.maxPages, pages >= m, token != nil { stop = true }
                }
                if stop {
                    // A lookup-started listing of a huge directory stops early; it is not complete.
                    state.withLock { s in if s.listings[job.dirPath] === job { s.listings[job.dirPath] = nil } }
                    job.cond.broadcast { job.done = true; job.truncated = true }
                    return
                }
            } while token != nil
        } catch {
            let errno = FSError(error).errno
            Log.warning("listing \"\(Names.display(job.dirPath))\": \(error)")
            state.withLock { s in if s.listings[job.dirPath] === job { s.listings[job.dirPath] = nil } }
            job.cond.broadcast { job.error = errno; job.done = true }
            return
        }
        finishListing(job, started: started)
    }

    func finishListing(_ job: ListingJob, started: Double) {
        let writing = state.withLock { writingEntries($0, in: job.dirPath) }
        let count = job.cond.locked { () -> Int in
            job.append(writing) // the names S3 does not list yet
            job.indexByName = [:] // only needed while pages arrive
            return job.entries.count
        }
        state.withLock { s in
            if !job.changedSince {
                markComplete(&s, dirPath: job.dirPath, at: started)
                if job.readByKernel { s.attrs.noteKernelRead(job.dirPath, listedAt: started) }
            }
            if s.listings[job.dirPath] === job { s.listings[job.dirPath] = nil }
        }
        job.cond.broadcast { job.done = true }
        // A big listing leaves its pages' parse buffers freed but mapped: give them back.
        if count >= 10_000 { s3m_malloc_trim() }
    }

    /// Records a complete listing begun at `started`; names learned before it and not seen by it
    /// are gone from S3 and leave the attribute cache.
    func markComplete(_ s: inout State, dirPath: [UInt8], at started: Double) {
        s.attrs.markComplete(dirPath, at: started)
        // A marker this complete listing did not see is gone.
        if let m = s.markers[dirPath], m < started { s.markers[dirPath] = nil }
        s.lookupMisses[dirPath] = nil
    }

    struct Sweep {
        var token: String
        var carry: [[UInt8]: [([UInt8], CachedEntry)]]
        var lastKey: [UInt8]
        var at: Double
    }

    /// Lists directory `job.dirPath` during a recursive walk by sweeping its parent's subtree with
    /// flat pages from just before the directory's keys: each page completes the directory and
    /// every later sibling (and everything below them) that it passes, so the walk's next
    /// directories need no request; where a sweep stops, the next directory of the walk resumes
    /// it. About one request per 1,000 keys however the tree is shaped. Returns false when the
    /// directory was not passed within `walkPageLimit` pages: then it is listed on its own.
    func sweep(_ job: ListingJob, parent: [UInt8], started: Double) throws -> Bool {
        let dir = job.dirPath
        let resumed = state.withLock { s -> Sweep? in
            guard let w = s.sweeps[parent], fresh(w.at, started), w.lastKey.starts(with: dir) else { return nil }
            s.sweeps[parent] = nil
            return w
        }
        var carry = resumed?.carry ?? [:]
        var token = resumed?.token
        let at = resumed?.at ?? started
        // "P/D." sorts just before "P/D/": the first page starts with D's keys (and any "P/D.x" files).
        let justBefore = Array(dir.dropLast()) + [0x2E]
        var pageStart = resumed?.lastKey
        var pageGuard = PageGuard()
        for _ in 0..<options.walkPageLimit {
            let page = try store.list(prefix: parent, delimiter: nil, continuationToken: token,
                                      startAfter: token == nil ? justBefore : nil, maxKeys: options.listPageSize)
            try pageGuard.check(page, prefix: parent)
            let last = page.objects.last?.key ?? []
            let complete = !page.isTruncated
            carry = primeSubtree(root: parent, page.objects, pageStart: token == nil ? justBefore : pageStart, lastKey: last, complete: complete,
                                 at: at, carry: carry, markRoot: false, job: job).carry
            pageStart = last
            token = page.isTruncated ? page.nextContinuationToken : nil
            if carry[dir] != nil {
                if token == nil || last.isEmpty { return false }
                continue
            }
            // Passed: `dir` is complete. Leave the rest of the sweep for the walk's next directory.
            let entries = state.withLock { s -> [([UInt8], CachedEntry)]? in
                if let t = token, !last.isEmpty { s.sweeps[parent] = Sweep(token: t, carry: carry, lastKey: last, at: at) }
                return s.attrs.completeEntries(dir)
            }
            guard let entries else { return false } // not in the pages (gone meanwhile), or changed: list it
            job.cond.broadcast {
                job.append(entries)
                job.lastKey = ListingJob.pastEverything
            }
            finishListing(job, started: at)
            return true
        }
        return false
    }

    /// Turns a flat (no delimiter) page of keys under `root` into directory entries at every
    /// level, primes them all, and marks complete each directory whose key range the page passed
    /// entirely (keys sharing a prefix are contiguous in S3's order). Returns `root`'s own entries
    /// from this page, and the entries of the directories below `root` that the page ended
    /// inside: passed back in as `carry` with the next page of the same listing, they join that
    /// page's, so a directory spread over pages is marked complete with all its names.
    /// `markRoot: false` leaves marking `root` to the caller (which holds all of its pages).
    func primeSubtree(root: [UInt8], _ objects: [ListedObject], pageStart: [UInt8]?, lastKey: [UInt8], complete: Bool, at t: Double,
                      carry: [[UInt8]: [([UInt8], CachedEntry)]] = [:], markRoot: Bool = true, job: ListingJob? = nil)
        -> (direct: [([UInt8], CachedEntry)], carry: [[UInt8]: [([UInt8], CachedEntry)]], held: [([UInt8], CachedEntry)]) {
        var entries: [[UInt8]: [([UInt8], CachedEntry)]] = [root: []]
        var index: [[UInt8]: [[UInt8]: Int]] = [root: [:]]
        var order: [[UInt8]] = [root]
        for (dir, list) in carry where dir != root {
            entries[dir] = list
            index[dir] = Dictionary(list.enumerated().map { ($0.element.0, $0.offset) }, uniquingKeysWith: { a, _ in a })
            order.append(dir)
        }
        var shadowedFiles: [[UInt8]: CachedEntry] = [:]
        func add(_ dir: [UInt8], _ name: [UInt8], _ e: CachedEntry) {
            if let i = index[dir]?[name] {
                let old = entries[dir]![i].1
                if old.kind == .file && e.kind == .directory { shadowedFiles[dir + name] = old }
                if old.kind == .directory && e.kind == .file { shadowedFiles[dir + name] = e }
                if e.kind == .directory { entries[dir]![i].1 = e } else if entries[dir]![i].1.kind == .directory {
                    Log.shared.once(.info, key: "shadow:" + Names.display(dir + name), "\"\(Names.display(dir + name))\" is both a file and a prefix; showing the directory")
                }
                return
            }
            index[dir, default: [:]][name] = entries[dir, default: []].count
            entries[dir, default: []].append((name, e))
        }
        let dirEntry = CachedEntry(kind: .directory, size: 0, mtime: 0, etag: "", at: t)
        // Metadata indexes the page listed, by directory.
        var indexes: [[UInt8]: String] = [:]
        let hidden = unlinkedKeys(listingStartedAt: t)
        var rootHeld: [([UInt8], CachedEntry)] = []
        var markers: [[UInt8]] = []
        for o in objects {
            guard o.key.count > root.count, o.key.starts(with: root) else {
                if o.key == root { markers.append(root) } // root's own marker
                continue
            }
            // Unlinked while open for reading: not an entry, but its directories are there (as a
            // delimiter listing shows their prefixes) until its object goes at the last close.
            let isHidden = !hidden.isEmpty && hidden.contains(o.key)
            var parent = root
            var rest = o.key[root.count...]
            while true {
                if let slash = rest.firstIndex(of: Names.slash) {
                    let comp = Array(rest[rest.startIndex..<slash])
                    if let why = Names.directoryReason(comp) { skip(o.key, why); break }
                    let dir = parent + comp + [Names.slash]
                    add(parent, comp, dirEntry)
                    if entries[dir] == nil { entries[dir] = []; index[dir] = [:]; order.append(dir) }
                    parent = dir
                    rest = rest[(slash + 1)...]
                    if rest.isEmpty { markers.append(dir); break } // a directory marker
                } else {
                    let comp = Array(rest)
                    if MetadataIndex.isIndex(name: comp) { indexes[parent] = o.etag; break }
                    if let why = Names.invalidReason(comp) { skip(o.key, why); break }
                    if !isHidden { add(parent, comp, CachedEntry(kind: .file, size: o.size, mtime: o.lastModified, etag: o.etag, at: t, storageClass: o.storageClass)) }
                    break
                }
            }
        }
        // A directory's index, or its absence where the page covered the key it would have: the
        // page lists keys after `pageStart` (nil: from the first under `root`) up to `lastKey`.
        for dir in order {
            let indexKey = MetadataIndex.key(dir: dir)
            if let etag = indexes[dir] {
                meta.noteListed(dir: dir, etag: etag, at: t)
            } else if MetadataIndex.covered(indexKey, prefix: root, after: pageStart, last: lastKey, complete: complete) {
                meta.noteListed(dir: dir, etag: nil, at: t)
            }
        }
        state.withLock { s in
            if job?.changedSince == true { return }
            if options.notifications { for m in markers { s.markers[m] = t } }
            for (k, e) in shadowedFiles { s.shadowed[k] = e }
            for dir in order {
                // The root's files whose prefix may come on the next page are held for it (a
                // listing of the root continues with them; a sweep leaves the root's entries to
                // the root's own listing); below the root the page's own order decides.
                let h = storeEntries(&s, dirPath: dir, entries[dir]!, at: t, logShadowed: false, through: dir == root && !complete ? lastKey : nil)
                if dir == root { rootHeld = h }
                let passed = dir != root && !lastKey.starts(with: dir)
                if (complete || passed) && (dir != root || markRoot) {
                    markComplete(&s, dirPath: dir, at: t)
                }
            }
        }
        var open: [[UInt8]: [([UInt8], CachedEntry)]] = [:]
        if !complete {
            for dir in order where dir != root && lastKey.starts(with: dir) { open[dir] = entries[dir]! }
        }
        return (entries[root]!, open, rootHeld)
    }

    public struct DirEntry {
        public var name: [UInt8]
        public var kind: EntryKind
        /// Offset of the entry after this one (what the kernel passes back to continue).
        public var nextOffset: Int64
        /// For readdirplus: attributes and one lookup reference (nil for "." and "..").
        public var attributes: Attributes?
        public var isDotEntry: Bool
        /// A file's type bits as its directory's index says (S_IFLNK, S_IFIFO...): readdir's d_type.
        public var fileType = UInt32(S_IFREG)
    }

    /// Entries from `offset` on, as many as `add` accepts; waits only when nothing is ready yet.
    /// With `plus`, every entry handed to `add` carries a lookup reference; `add` returning false
    /// means it did not fit, and that reference is dropped again.
    public func readdir(handle: UInt64, offset: Int64, plus: Bool, add: (DirEntry) -> Bool) -> FSError? {
        guard let (dh, job) = listing(for: handle) else { return FSError(EBADF) }
        var idx = Int(offset)
        if idx < 2 {
            while idx < 2 {
                let dot = DirEntry(name: idx == 0 ? [0x2E] : [0x2E, 0x2E], kind: .directory, nextOffset: Int64(idx + 1),
                                   attributes: plus ? attributes(ino: idx == 0 ? dh.ino : dh.parent, kind: .directory, nil) : nil,
                                   isDotEntry: true)
                if !add(dot) { return nil }
                idx += 1
            }
        }
        let dirIno = dh.ino
        var batch: [([UInt8], CachedEntry)] = []
        var err: Int32? = nil
        job.cond.wait(until: { job.entries.count > idx - 2 || job.done })
        job.cond.locked {
            // A bounded batch: the kernel's buffer holds a few hundred entries at most, and copying
            // everything left on every call would make a 100,000-entry listing quadratic.
            if job.entries.count > idx - 2 { batch = Array(job.entries[(idx - 2)..<min(job.entries.count, idx - 2 + 1024)]) }
            if batch.isEmpty, let e = job.error { err = e }
        }
        if let err { return FSError(err) }
        let dirPath = job.dirPath
        // Modes, owners and symlinks come with the entries: the directory's index first (one GET,
        // only when the listing showed one not read yet).
        if plus && !batch.isEmpty { meta.ensureLoaded(dirPath, probe: false) }
        for (name, e) in batch {
            var attr: Attributes? = nil
            var type = UInt32(S_IFREG)
            if plus && options.metadata == .head && needsHeaders(dir: dirPath, name: name, e) {
                // Its type is not known before its headers are read: no inode yet (the kernel looks
                // it up when a program stats it, and that lookup reads them).
            } else if plus {
                attr = state.withLock { s in
                    var e = e
                    if e.kind == .file && handles.hasWriters, let w = writing(s, dirPath + name) { e.size = w.size } // being written
                    return attributes(referenceNode(&s, parent: dirIno, parentPath: dirPath, name: name, kind: e.kind), e)
                }
                type = attr?.fileType ?? type
            } else if e.kind == .file && options.metadata != .none {
                type = name.withUnsafeBytes { meta.record(dir: dirPath, name: $0, etag: e.etag, isDirectory: false)?.fileType } ?? type
            }
            let entry = DirEntry(name: name, kind: e.kind, nextOffset: Int64(idx + 1), attributes: attr, isDotEntry: false, fileType: type)
            if !add(entry) {
                if let a = attr { forget(ino: a.ino, count: 1) }
                return nil
            }
            idx += 1
        }
        return nil
    }

    public func releasedir(handle: UInt64) {
        _ = handles.remove(handle)
    }
}

/// One listing of a directory, shared by every reader that opens it while it runs. Fields are
/// guarded by `cond`'s lock.
final class ListingJob: @unchecked Sendable {
    let dirPath: [UInt8]
    let cond = Condition()
    var entries: [([UInt8], CachedEntry)] = []
    var indexByName: [[UInt8]: Int] = [:]
    var done = false
    var error: Int32? = nil
    /// Sorts after every key: what `lastKey` becomes once the last page is in.
    static let pastEverything: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF]
    /// The greatest key or prefix listed so far.
    var lastKey: [UInt8] = []
    var startedAt: Double = 0
    /// Pages after which a lookup-started listing gives up (nil: to the end).
    var maxPages: Int?
    /// Stopped early by maxPages: not a complete listing.
    var truncated = false
    /// Set when the directory is opened during a recursive walk: its parent's key prefix, whose
    /// subtree is then swept with flat pages (see `Filesystem.sweep`).
    var walkParent: [UInt8]? = nil
    /// Read through readdir (guarded by the filesystem's lock): what it lists ends up in the
    /// kernel's cache of the directory.
    var readByKernel = false
    /// Something changed through the mount in its directory (or below) since it began (guarded by
    /// the filesystem's lock): it still answers the readdirs that joined it, but no longer primes
    /// the caches, which it would take back to what it saw before the change.
    var changedSince = false

    init(dirPath: [UInt8], maxPages: Int? = nil) {
        self.dirPath = dirPath
        self.maxPages = maxPages
    }

    init(dirPath: [UInt8], completed: [([UInt8], CachedEntry)]) {
        self.dirPath = dirPath
        self.entries = completed
        self.done = true
        self.lastKey = ListingJob.pastEverything
    }

    /// Files whose name may still turn out to be a directory: listed up to "x", and "x/…" not passed
    /// yet (S3 sorts "x-1", "x.txt" between them). Handed out with the next page, so that no
    /// readdir shows a file the directory of the same name hides a page later.
    var held: [([UInt8], CachedEntry)] = []

    /// Adds a page's entries and where the listing has got (`last`); guarded by `cond`.
    func add(_ page: [([UInt8], CachedEntry)], through last: [UInt8]) {
        // A directory replaces a file of the same name in place (a page lists its files before
        // its prefixes), before deciding what is settled.
        var all: [([UInt8], CachedEntry)] = []
        var at: [[UInt8]: Int] = [:]
        for (name, e) in held + page {
            if let i = at[name] { if e.kind == .directory { all[i].1 = e }; continue }
            at[name] = all.count
            all.append((name, e))
        }
        let cut = all.firstIndex { $0.1.kind == .file && last.lexicographicallyPrecedes(dirPath + $0.0 + [Names.slash]) } ?? all.count
        append(Array(all[..<cut]))
        held = Array(all[cut...])
        lastKey = last
    }

    /// Adds a page's entries, once per name; a directory replaces a file of the same name.
    func append(_ page: [([UInt8], CachedEntry)]) {
        for (name, e) in page {
            if let i = indexByName[name] {
                if e.kind == .directory { entries[i].1 = e }
                continue
            }
            indexByName[name] = entries.count
            entries.append((name, e))
        }
    }
}

struct DirHandle {
    var ino: UInt64
    var parent: UInt64
    var dirPath: [UInt8]
    /// nil until the first readdir (see `Filesystem.listing(for:)`).
    var job: ListingJob?
    /// Opened during a recursive walk: the parent whose subtree its listing sweeps.
    var walkParent: [UInt8]?
}
