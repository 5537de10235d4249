import CCurlShim
import Glibc
import S3

/// The filesystem core: inodes, the listing/attribute/negative caches and reads, with no FUSE
/// types. The FUSE bridge calls it from many threads at once; all metadata lives behind one lock
/// that is never held across a request.
public final class Filesystem: @unchecked Sendable {
    public static let rootIno: UInt64 = 1
    /// Seconds within which opening a second subdirectory of the same directory counts as a walk.
    static let walkWindow: Double = 30

    public let store: ObjectStore
    public let options: FSOptions
    /// Modes, owners, mtimes and symlinks: per-directory indexes (see MetadataIndex).
    let meta: MetadataIndex
    /// The name under which the mount root's own metadata is kept in its index.
    static let rootRecordName: [UInt8] = [0x2E]
    let mountTime: Double
    /// Set by the bridge: tells the kernel to drop what its caches hold for an inode or a name.
    public var invalidator: ((Invalidation) -> Void)?
    /// Set by the bridge: the read-ahead (bytes) the kernel uses for this mount now; root may change
    /// it at any time. nil: `options.kernelReadAhead`.
    public var currentKernelReadAhead: (() -> Int?)?

    struct State {
        var nodes = NodeTable(root: Filesystem.rootIno)
        /// What each name is, and which directories were listed completely. Primed by every
        /// listing, read by lookup and getattr.
        var attrs = AttrCache()
        /// entryKey -> when the name was found missing.
        var negatives: [[UInt8]: Double] = [:]
        var listings: [[UInt8]: ListingJob] = [:]
        var lookupFlights: [[UInt8]: Flight] = [:]
        /// Lookups that had to ask S3, per directory not listed yet: the second one lists it.
        var lookupMisses: [[UInt8]: Int] = [:]
        /// Per directory: the last subdirectory opened in it, and when. A second subdirectory
        /// opened soon after is a recursive walk (find, du, ls -R, a search).
        var lastChildOpened: [[UInt8]: (child: [UInt8], at: Double)] = [:]
        /// Per directory: where the last sweep of its subtree stopped, to be resumed by the walk's
        /// next directory.
        var sweeps: [[UInt8]: Sweep] = [:]
        /// Keys skipped as unusable names (counted once each).
        var skippedKeys = Set<[UInt8]>()
        var dirHandles: [UInt64: DirHandle] = [:]
        var fileHandles: [UInt64: FileReader] = [:]
        var writers: [UInt64: FileWriter] = [:]
        /// Keys unlinked while readers had them open: deleted at the last reader's close.
        var deferredDeletes = Set<[UInt8]>()
        var nextHandle: UInt64 = 1
        var counters = CacheCounters()
    }

    let state = Locked(State())
    lazy var headPrefetch = HeadPrefetch(fs: self)
    /// The read part: parts pool, read memory, data cache (Read/).
    let reads: ReadShared
    lazy var walkPrefetch = WalkPrefetch(fs: self, window: options.walkReadAhead, maxSize: options.walkReadAheadMaxSize)

    /// Multipart uploads in progress, recorded so a later mount can abort what this one leaves.
    let journal: UploadJournal?

    public init(store: ObjectStore, options: FSOptions, cache: DataCache? = nil, journal: UploadJournal? = nil) {
        self.store = store
        self.journal = journal
        self.options = options
        self.reads = ReadShared(store: store, options: options, cache: cache)
        self.mountTime = Double(time(nil))
        self.meta = MetadataIndex(store: store, ttl: options.metadataTTL, debounce: options.metadataDebounce, enabled: options.metadata != .none)
        meta.copier = { [unowned self] c in self.sendHeaderCopy(c) }
        if options.metadataTTL.isFinite && options.sweepCaches {
            startSweeper()
        }
    }

    /// Drops expired listings, attributes and negative entries every half TTL (at least every
    /// 5 s, at most every 5 minutes) and returns the memory to the system, so a large listing
    /// costs memory only while it can still be used.
    func startSweeper() {
        let period = min(300, max(5, options.metadataTTL / 2))
        let t = Thread { [weak self] in
            while true {
                usleep(useconds_t(period * 1_000_000))
                guard let self else { return }
                if self.sweep() > 10_000 { s3m_malloc_trim() }
            }
        }
        t.start()
    }

    /// The key of a directory's metadata index.
    public static func metadataIndexKey(dir: [UInt8]) -> [UInt8] { MetadataIndex.key(dir: dir) }

    /// What the mount-time check (a listing of exactly the root's index key) showed.
    public func noteRootIndexListing(_ page: ListPage, at t: Double) {
        let key = MetadataIndex.key(dir: rootPath)
        meta.noteListed(dir: rootPath, etag: page.objects.first(where: { $0.key == key })?.etag, at: t)
    }

    /// Removes expired cache entries; returns how many.
    @discardableResult
    public func sweep() -> Int {
        let t = now()
        meta.sweep(at: t)
        walkPrefetch.sweep(at: t)
        return state.withLock { s -> Int in
            let negatives = s.negatives.count
            let removed = s.attrs.sweep(fresh: { fresh($0, t) })
            // filter builds new dictionaries sized for what is left: the memory shrinks too.
            s.negatives = s.negatives.filter { fresh($0.value, t) }
            s.lastChildOpened = s.lastChildOpened.filter { t - $0.value.at < Self.walkWindow }
            s.sweeps = s.sweeps.filter { fresh($0.value.at, t) }
            return removed + negatives - s.negatives.count
        }
    }

    var rootPath: [UInt8] { options.prefix }

    @inline(__always) func now() -> Double { monotonicSeconds() }
    @inline(__always) func fresh(_ at: Double, _ now: Double) -> Bool { now - at < options.metadataTTL }

    func path(of n: Node) -> [UInt8] { n.ino == Self.rootIno ? rootPath : n.path }

    /// An inode's attributes: what the listing said, with what its directory's metadata index
    /// (or, in `head` mode, its own headers) says of mode, owner, mtime and type.
    func attributes(_ n: Node, _ e: CachedEntry?) -> Attributes {
        attributes(ino: n.ino, kind: n.kind, e, metadata(of: n, e))
    }

    func metadata(of n: Node, _ e: CachedEntry?) -> PosixMeta? {
        if options.metadata == .none { return nil }
        if n.ino == Self.rootIno {
            return Self.rootRecordName.withUnsafeBytes { meta.record(dir: rootPath, name: $0, etag: "", isDirectory: true) }
        }
        return meta.record(dir: n.parentPath, name: n.storedName.raw, etag: e?.etag ?? "", isDirectory: n.kind == .directory)
    }

    func attributes(ino: UInt64, kind: EntryKind, _ e: CachedEntry?, _ m: PosixMeta? = nil) -> Attributes {
        var a: Attributes
        if kind == .directory {
            a = Attributes(ino: ino, kind: .directory, size: 0, mtime: Timestamp(seconds: e.map { $0.mtime > 0 ? $0.mtime : mountTime } ?? mountTime),
                           mode: options.dirMode, uid: options.uid, gid: options.gid)
        } else {
            a = Attributes(ino: ino, kind: .file, size: e?.size ?? 0, mtime: Timestamp(seconds: e?.mtime ?? mountTime),
                           mode: options.fileMode, uid: options.uid, gid: options.gid)
        }
        if let m {
            a.mode = m.permissions
            a.uid = m.uid
            a.gid = m.gid
            if let t = m.mtime { a.mtime = t }
            a.isSymlink = kind == .file && m.isSymlink
        } else if options.metadata == .head && kind == .file && ino != Self.rootIno {
            a.provisional = true
        }
        return a
    }

    /// The metadata a name has when nothing is stored for it: the mount's defaults.
    func defaultMeta(_ kind: EntryKind) -> PosixMeta {
        kind == .directory ? PosixMeta(mode: UInt32(S_IFDIR) | options.dirMode, uid: options.uid, gid: options.gid)
                           : PosixMeta(mode: UInt32(S_IFREG) | options.fileMode, uid: options.uid, gid: options.gid)
    }

    /// The attributes of `ino` once its directory's metadata is known: reads the index first when
    /// a listing showed a version not read yet, or no listing within the TTL said whether there
    /// is one (with `probe`); in `head` mode asks the object itself when the index does not cover it.
    func withMetadata(_ a: Attributes, dirPath: [UInt8], probe: Bool = true) -> Attributes {
        guard options.metadata != .none else { return a }
        let dir = a.ino == Self.rootIno ? rootPath : dirPath
        var stale = false
        if meta.need(dir, at: now(), probe: probe) != .nothing {
            meta.ensureLoaded(dir, probe: probe)
            stale = true
        }
        if options.metadata == .head, let n = state.withLock({ $0.nodes[a.ino] }), n.kind == .file,
           metadata(of: n, state.withLock { $0.attrs.entry(of: n) }) == nil {
            learnHeaders(n)
            stale = true
        }
        guard stale else { return a }
        return state.withLock { s -> Attributes? in
            guard let n = s.nodes[a.ino] else { return nil }
            var b = attributes(n, s.attrs.entry(of: n))
            if b.kind == .file && b.size != a.size { b.size = a.size } // an open writer's size
            return b
        } ?? a
    }

    /// `head` mode: one HeadObject for a file no index entry covers (and, in parallel, for the
    /// next ones of its directory a program stating them one by one will ask for).
    func learnHeaders(_ n: Node) {
        headPrefetch.ahead(of: n.name, in: n.parentPath)
        learnHeaders(dir: n.parentPath, name: n.name)
    }

    /// Its headers (or the mount's defaults when it has none) are kept while its ETag stays.
    func learnHeaders(dir: [UInt8], name: [UInt8]) {
        let key = Names.entryKey(dirPath: dir, name: name)
        guard headPrefetch.begin(key) else { return } // on the wire already: waited for
        defer { headPrefetch.end(key) }
        if let e = state.withLock({ $0.attrs[dir: dir, name: name] }), !needsHeaders(dir: dir, name: name, e) { return }
        do {
            let info = try store.head(key)
            meta.counters.withLock { $0.heads += 1 }
            let m = PosixMeta.from(headers: info.metadata, defaults: defaultMeta(.file), type: UInt32(S_IFREG)) ?? defaultMeta(.file)
            meta.learn(dir: dir, name: name, MetaRecord(etag: info.etag, meta: m))
        } catch {
            Log.warning("reading the headers of \"\(Names.display(key))\": \(error)")
        }
    }

    /// Whether `name` in `dir` still needs its headers read (`head` mode).
    func needsHeaders(dir: [UInt8], name: [UInt8], _ e: CachedEntry) -> Bool {
        e.kind == .file && name.withUnsafeBytes { meta.record(dir: dir, name: $0, etag: e.etag, isDirectory: false) } == nil
    }

    /// A file open for writing through this mount is what the mount says it is, whatever the TTL
    /// (it may not be in S3 yet: `--metadata-ttl 0` must not make a file just created vanish).
    func openForWriting(_ s: State, _ key: [UInt8]) -> Bool {
        !s.writers.isEmpty && s.writers.values.contains { $0.key == key }
    }

    /// Objects unlinked through the mount that stay in S3 until their last reader closes: listings
    /// must not bring their names back.
    func unlinkedKeys() -> Set<[UInt8]> { state.withLock { $0.deferredDeletes } }

    /// When directory `dir` was listed completely, if that is younger than the TTL at `t`.
    func freshListing(_ s: State, _ dir: [UInt8], at t: Double) -> Double? {
        s.attrs.listedAt(dir).flatMap { fresh($0, t) ? $0 : nil }
    }

    /// The name's bytes as its directory's table holds them (shared, not copied), or a copy.
    func storedName(_ s: State, dir: [UInt8], name: [UInt8]) -> StoredName {
        s.attrs.storedName(dir: dir, name: name) ?? StoredName(copying: name)
    }

    /// Finds or makes the inode for a name and adds one kernel lookup reference.
    func referenceNode(_ s: inout State, parent: UInt64, parentPath: [UInt8], name: [UInt8], kind: EntryKind) -> Node {
        if var n = s.nodes.find(parent: parent, name: name, kind: kind) {
            n.lookups = n.lookups == .max ? .max : n.lookups + 1
            s.nodes.update(n)
            return n
        }
        return s.nodes.add(parent: parent, parentPath: parentPath, name: storedName(s, dir: parentPath, name: name), kind: kind)
    }

    // MARK: - lookup / forget / getattr

    /// What the caches say of `key` (a name in `dirPath`) at time `t`: the entry, known missing
    /// (`.some(nil)`: a complete listing or a negative entry), or nothing (`nil`: ask S3).
    func cachedAnswer(_ s: State, dirPath: [UInt8], key: [UInt8], at t: Double) -> CachedEntry?? {
        if let e = s.attrs[key], fresh(e.at, t) || (e.kind == .file && openForWriting(s, key)) { return .some(e) }
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
        do {
            repeat {
                let page = try store.list(prefix: key, delimiter: "/", continuationToken: token, maxKeys: options.listPageSize)
                try pageGuard.check(page, prefix: key)
                let entries = entriesOf(page, dirPath: dirPath, at: started, listPrefix: key, after: previous)
                previous = page.lastListed
                prime(dirPath: dirPath, entries, at: started)
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
        let hidden = unlinkedKeys()
        for o in page.objects {
            guard o.key.count > n, o.key.starts(with: dirPath) else { continue } // the directory's own marker
            if !hidden.isEmpty && hidden.contains(o.key) { continue }
            let name = Array(o.key[n...])
            if name.contains(Names.slash) { continue }
            if MetadataIndex.isIndex(name: name) {
                meta.noteListed(dir: dirPath, etag: o.etag, at: t)
                indexSeen = true
                continue
            }
            if let why = Names.invalidReason(name) { skip(o.key, why); continue }
            out.append((name, CachedEntry(kind: .file, size: o.size, mtime: o.lastModified, etag: o.etag, at: t)))
        }
        for p in page.commonPrefixes {
            guard p.count > n, p.starts(with: dirPath), p.last == Names.slash else { continue }
            let name = Array(p[n..<(p.count - 1)])
            if name.contains(Names.slash) { continue }
            if let why = Names.invalidReason(name) { skip(p, why); continue }
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
    func prime(dirPath: [UInt8], _ entries: [([UInt8], CachedEntry)], at t: Double) {
        state.withLock { s in
            storeEntries(&s, dirPath: dirPath, entries, at: t, logShadowed: true)
        }
    }

    /// Sets listed entries in a directory's table; a file never replaces a directory of the same
    /// name learned at the same time or later.
    func storeEntries(_ s: inout State, dirPath: [UInt8], _ entries: [([UInt8], CachedEntry)], at t: Double, logShadowed: Bool) {
        if entries.isEmpty { return }
        s.attrs.update(dir: dirPath) { table in
            for (name, e) in entries {
                if e.kind == .file, let old = table[name], old.kind == .directory, old.at >= t {
                    if logShadowed {
                        let key = Names.entryKey(dirPath: dirPath, name: name)
                        Log.shared.once(.info, key: "shadow:" + Names.display(key), "\"\(Names.display(key))\" is both a file and a prefix; showing the directory")
                    }
                    continue
                }
                table.set(name, e)
            }
        }
        if !s.negatives.isEmpty {
            for (name, _) in entries { s.negatives[Names.entryKey(dirPath: dirPath, name: name)] = nil }
        }
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
                return (s.writers.values.first { $0.ino == ino }, s.fileHandles.values.first { $0.key == key })
            }
            if let w = open.0 {
                var a = attributes(ino: ino, kind: .file, nil, w.meta)
                a.size = w.size
                return .success(a)
            }
            if let rd = open.1 {
                var a = attributes(ino: ino, kind: .file, nil)
                a.size = rd.size
                a.provisional = false
                return .success(a)
            }
        }
        // A file open for writing is as large as its spool, whatever S3 holds yet.
        if let size = openWriterSize(ino: ino) { r = r.map { a in var a = a; a.size = size; return a } }
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
            let h = s.nextHandle
            s.nextHandle += 1
            s.dirHandles[h] = DirHandle(ino: ino, parent: n.parent, dirPath: dirPath, job: nil, walkParent: walkParent)
            let keep = freshListing(s, dirPath, at: t) != nil && s.attrs.kernelIsCurrent(dirPath)
            return .success(OpenDirectory(handle: h, kernelMayKeepEntries: keep))
        }
    }

    /// A directory handle and the listing it reads: the one it got at its first read, or (at the
    /// first read) the cached listing, one already running, or a listing started now.
    func listing(for handle: UInt64) -> (DirHandle, ListingJob)? {
        let t = now()
        let (found, start): ((DirHandle, ListingJob)?, Bool) = state.withLock { s in
            guard var dh = s.dirHandles[handle] else { return (nil, false) }
            if let j = dh.job { return ((dh, j), false) }
            var start = false
            if let l = freshListing(s, dh.dirPath, at: t), let entries = s.attrs.completeEntries(dh.dirPath) {
                s.counters.listingHits += 1
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
            s.dirHandles[handle] = dh
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
        job.cond.broadcast { job.startedAt = started }
        var token: String? = nil
        var startAfter: [UInt8]? = nil
        var previous: [UInt8]? = nil
        var pages = 0
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
                let direct = primeSubtree(root: job.dirPath, flat.objects, pageStart: nil, lastKey: last, complete: complete, at: started).direct
                job.cond.broadcast {
                    job.append(direct)
                    job.lastKey = complete ? ListingJob.pastEverything : last
                }
                if complete {
                    finishListing(job, started: started)
                    return
                }
                startAfter = last
            }
            var pageGuard = PageGuard()
            repeat {
                let page = try store.list(prefix: job.dirPath, delimiter: "/", continuationToken: token,
                                          startAfter: token == nil ? startAfter : nil, maxKeys: options.listPageSize)
                try pageGuard.check(page, prefix: job.dirPath)
                pages += 1
                let entries = entriesOf(page, dirPath: job.dirPath, at: started, listPrefix: job.dirPath, after: token == nil ? startAfter : previous)
                prime(dirPath: job.dirPath, entries, at: started)
                let last = page.lastListed
                previous = last
                token = page.isTruncated ? page.nextContinuationToken : nil
                // Past the last page, nothing sorts after: every name has been passed.
                var stop = false
                job.cond.broadcast {
                    job.append(entries)
                    job.lastKey = token == nil ? ListingJob.pastEverything : last
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
        let count = job.cond.locked { () -> Int in
            job.indexByName = [:] // only needed while pages arrive
            return job.entries.count
        }
        state.withLock { s in
            markComplete(&s, dirPath: job.dirPath, at: started)
            if job.readByKernel { s.attrs.noteKernelRead(job.dirPath, listedAt: started) }
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
                                 at: at, carry: carry, markRoot: false).carry
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
                      carry: [[UInt8]: [([UInt8], CachedEntry)]] = [:], markRoot: Bool = true)
        -> (direct: [([UInt8], CachedEntry)], carry: [[UInt8]: [([UInt8], CachedEntry)]]) {
        var entries: [[UInt8]: [([UInt8], CachedEntry)]] = [root: []]
        var index: [[UInt8]: [[UInt8]: Int]] = [root: [:]]
        var order: [[UInt8]] = [root]
        for (dir, list) in carry where dir != root {
            entries[dir] = list
            index[dir] = Dictionary(list.enumerated().map { ($0.element.0, $0.offset) }, uniquingKeysWith: { a, _ in a })
            order.append(dir)
        }
        func add(_ dir: [UInt8], _ name: [UInt8], _ e: CachedEntry) {
            if let i = index[dir]?[name] {
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
        let hidden = unlinkedKeys()
        for o in objects {
            guard o.key.count > root.count, o.key.starts(with: root) else { continue } // root's own marker
            if !hidden.isEmpty && hidden.contains(o.key) { continue }
            var parent = root
            var rest = o.key[root.count...]
            while true {
                if let slash = rest.firstIndex(of: Names.slash) {
                    let comp = Array(rest[rest.startIndex..<slash])
                    if let why = Names.invalidReason(comp) { skip(o.key, why); break }
                    let dir = parent + comp + [Names.slash]
                    add(parent, comp, dirEntry)
                    if entries[dir] == nil { entries[dir] = []; index[dir] = [:]; order.append(dir) }
                    parent = dir
                    rest = rest[(slash + 1)...]
                    if rest.isEmpty { break } // a directory marker
                } else {
                    let comp = Array(rest)
                    if MetadataIndex.isIndex(name: comp) { indexes[parent] = o.etag; break }
                    if let why = Names.invalidReason(comp) { skip(o.key, why); break }
                    add(parent, comp, CachedEntry(kind: .file, size: o.size, mtime: o.lastModified, etag: o.etag, at: t))
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
            for dir in order {
                storeEntries(&s, dirPath: dir, entries[dir]!, at: t, logShadowed: false)
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
        return (entries[root]!, open)
    }

    public struct DirEntry {
        public var name: [UInt8]
        public var kind: EntryKind
        /// Offset of the entry after this one (what the kernel passes back to continue).
        public var nextOffset: Int64
        /// For readdirplus: attributes and one lookup reference (nil for "." and "..").
        public var attributes: Attributes?
        public var isDotEntry: Bool
        /// A symlink (its directory's index says so): readdir's d_type.
        public var isSymlink = false
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
            var symlink = false
            if plus && options.metadata == .head && needsHeaders(dir: dirPath, name: name, e) {
                // Its type is not known before its headers are read: no inode yet (the kernel looks
                // it up when a program stats it, and that lookup reads them).
            } else if plus {
                attr = state.withLock { s in attributes(referenceNode(&s, parent: dirIno, parentPath: dirPath, name: name, kind: e.kind), e) }
                symlink = attr?.isSymlink ?? false
            } else if e.kind == .file && options.metadata != .none {
                symlink = name.withUnsafeBytes { meta.record(dir: dirPath, name: $0, etag: e.etag, isDirectory: false)?.isSymlink ?? false }
            }
            let entry = DirEntry(name: name, kind: e.kind, nextOffset: Int64(idx + 1), attributes: attr, isDotEntry: false, isSymlink: symlink)
            if !add(entry) {
                if let a = attr { forget(ino: a.ino, count: 1) }
                return nil
            }
            idx += 1
        }
        return nil
    }

    public func releasedir(handle: UInt64) {
        _ = state.withLock { $0.dirHandles.removeValue(forKey: handle) }
    }

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
        return .success(state.withLock { s in
            let h = s.nextHandle
            s.nextHandle += 1
            s.fileHandles[h] = reader
            return h
        })
    }

    /// Reads into buffers handed to `reply` (valid only during the call): no copy of the data in
    /// between for the streaming path. Returns the error instead when there is one.
    public func read(handle: UInt64, offset: Int64, size: Int, interrupted: (() -> Bool)? = nil, reply: ([UnsafeRawBufferPointer]) -> Void) -> FSError? {
        if let w = state.withLock({ $0.writers[handle] }) {
            switch w.read(offset: offset, length: size) {
            case .success(let d): d.withUnsafeBytes { reply([$0]) }; return nil
            case .failure(let e): return e
            }
        }
        guard let r = state.withLock({ $0.fileHandles[handle] }) else { return FSError(EBADF) }
        let e = r.read(offset: offset, length: size, interrupted: interrupted, reply: reply)
        if let e, e.errno == ESTALE {
            // The object changed since it was listed: forget what we knew so the next open sees it anew.
            state.withLock { s in s.attrs[r.key] = nil }
        }
        // Bytes served that turned out wrong (a checksum checked at the end): the kernel must not
        // keep them (keep_cache) for the next open.
        if e != nil && r.servedBadBytes { invalidator?(.inode(r.ino)) }
        return e
    }

    /// The kernel interrupted a read of `handle`: reads waiting for its stream answer EINTR.
    public func interruptReads(handle: UInt64) {
        state.withLock { $0.fileHandles[handle] }?.interrupts.interrupt()
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
        if let w = state.withLock({ $0.writers[handle] }) {
            if let e = flush(handle: handle, final: true) {
                Log.error("release of \(Names.display(w.key)): upload failed (\(e)); nobody is left to tell")
            }
            state.withLock { _ = $0.writers.removeValue(forKey: handle) }
            w.close()
            return
        }
        guard let r = state.withLock({ $0.fileHandles.removeValue(forKey: handle) }) else { return }
        let (dir, name) = AttrCache.split(r.key)
        walkPrefetch.closed(dir: dir, name: name, size: r.size, readTo: r.readTo)
        r.close()
        // The last reader of a file unlinked while open: now its object goes.
        let last = state.withLock { s -> Bool in
            guard s.deferredDeletes.contains(r.key), !s.fileHandles.values.contains(where: { $0.key == r.key }) else { return false }
            s.deferredDeletes.remove(r.key)
            return true
        }
        if last {
            do { try store.delete(r.key) } catch { Log.error("deleting \(Names.display(r.key)) after its last close: \(error)") }
        }
    }

    public func statfs() -> StatfsInfo { StatfsInfo() }

    // MARK: - statistics

    public var counters: CacheCounters { state.withLock { $0.counters } }

    public var inodeCount: Int { state.withLock { $0.nodes.count } }

    /// Inodes, cached attributes, negative entries, complete directories: for the statistics.
    func entryCounts(_ s: State) -> (Int, Int, Int, Int) {
        (s.nodes.count, s.attrs.count, s.negatives.count, s.attrs.completeCount)
    }

    /// The same statistics in the Prometheus text format (for --metrics-address).
    public func prometheusText() -> String {
        let c = counters
        let (nodes, attrs, negs, dirs) = state.withLock { entryCounts($0) }
        var out = "# HELP s3mount_requests_total S3 requests sent, by operation and outcome.\n# TYPE s3mount_requests_total counter\n"
        let snap = store.requestStats?.snapshot()
        for (op, outcomes) in (snap?.requests ?? [:]).sorted(by: { $0.key < $1.key }) {
            for (o, n) in outcomes.sorted(by: { $0.key < $1.key }) {
                out += "s3mount_requests_total{operation=\"\(op)\",outcome=\"\(o)\"} \(n)\n"
            }
        }
        func counter(_ name: String, _ help: String, _ v: Int64) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) counter\n\(name) \(v)\n"
        }
        counter("s3mount_not_found_total", "S3 requests answered 404.", Int64(snap?.notFound ?? 0))
        counter("s3mount_retries_total", "S3 requests retried.", Int64(snap?.retries ?? 0))
        counter("s3mount_bytes_downloaded_total", "Bytes received from S3.", snap?.bytesDown ?? 0)
        counter("s3mount_bytes_uploaded_total", "Bytes sent to S3.", snap?.bytesUp ?? 0)
        counter("s3mount_requests_avoided_total", "Lookups, stats and listings answered from the caches.", Int64(c.attrHits + c.negativeHits + c.listingHits))
        out += "# HELP s3mount_cache_hits_total Answers from a cache.\n# TYPE s3mount_cache_hits_total counter\n"
        out += "s3mount_cache_hits_total{cache=\"attributes\"} \(c.attrHits)\ns3mount_cache_hits_total{cache=\"negative\"} \(c.negativeHits)\ns3mount_cache_hits_total{cache=\"listings\"} \(c.listingHits)\n"
        out += "# HELP s3mount_cache_misses_total Answers that needed S3.\n# TYPE s3mount_cache_misses_total counter\n"
        out += "s3mount_cache_misses_total{cache=\"attributes\"} \(c.attrMisses)\ns3mount_cache_misses_total{cache=\"listings\"} \(c.listingMisses)\n"
        out += "# HELP s3mount_cached_entries Entries held in memory.\n# TYPE s3mount_cached_entries gauge\n"
        out += "s3mount_cached_entries{kind=\"inodes\"} \(nodes)\ns3mount_cached_entries{kind=\"attributes\"} \(attrs)\ns3mount_cached_entries{kind=\"negative\"} \(negs)\ns3mount_cached_entries{kind=\"complete_directories\"} \(dirs)\n"
        let m = meta.snapshot
        out += "# HELP s3mount_metadata_requests_total S3 requests made for modes, owners, mtimes and symlinks, by kind.\n# TYPE s3mount_metadata_requests_total counter\n"
        for (k, v) in [("index_get", m.indexGets), ("index_put", m.indexPuts), ("index_delete", m.indexDeletes), ("index_probe", m.probes),
                       ("metadata_copy", m.metadataCopies), ("head", m.heads)] {
            out += "s3mount_metadata_requests_total{kind=\"\(k)\"} \(v)\n"
        }
        let r = reads.counters.withLock { $0 }
        counter("s3mount_read_parts_total", "Ranged parts fetched for parallel readers.", Int64(r.partsFetched))
        out += "# HELP s3mount_read_memory_bytes Bytes held in read buffers of parallel readers.\n# TYPE s3mount_read_memory_bytes gauge\ns3mount_read_memory_bytes \(reads.memory.inUse)\n"
        if let dc = reads.cache {
            let k = dc.counters
            out += "s3mount_cache_hits_total{cache=\"data\"} \(k.hits)\ns3mount_cache_misses_total{cache=\"data\"} \(k.misses)\n"
            counter("s3mount_data_cache_bytes_served_total", "Bytes read from the local data cache.", k.bytesFromDisk)
            out += "# HELP s3mount_data_cache_bytes Bytes held in the local data cache.\n# TYPE s3mount_data_cache_bytes gauge\ns3mount_data_cache_bytes \(dc.bytesCached)\n"
        }
        out += "# HELP s3mount_heap_bytes Heap memory in use by the daemon (malloc).\n# TYPE s3mount_heap_bytes gauge\ns3mount_heap_bytes \(s3m_heap_in_use())\n"
        return out
    }

    /// One line for the log (SIGUSR1): the headline figures.
    public func statsSummary() -> String {
        let c = counters
        let snap = store.requestStats?.snapshot()
        let ops = (snap?.requests ?? [:]).sorted(by: { $0.key < $1.key }).map { "\($0.key)=\($0.value.values.reduce(0, +))" }.joined(separator: " ")
        let avoided = c.attrHits + c.negativeHits + c.listingHits
        let lookups = c.attrHits + c.attrMisses + c.negativeHits
        let rate = lookups == 0 ? "n/a" : "\(Int(Double(c.attrHits + c.negativeHits) / Double(lookups) * 100))%"
        return "stats: requests \(snap?.total ?? 0) (\(ops)), 404s \(snap?.notFound ?? 0), retries \(snap?.retries ?? 0), requests avoided \(avoided), lookup cache hit rate \(rate), listings cached \(c.listingHits)/\(c.listingHits + c.listingMisses), down \(snap?.bytesDown ?? 0) B, up \(snap?.bytesUp ?? 0) B"
    }

    /// Requests made for modes, owners, mtimes and symlinks (counted apart from the browsing ones;
    /// they are also in "requests" under their S3 operation).
    func metadataJSON() -> String {
        let m = meta.snapshot
        return "{\"mode\": \"\(options.metadata.rawValue)\", \"index_gets\": \(m.indexGets), \"index_puts\": \(m.indexPuts), \"index_deletes\": \(m.indexDeletes), "
            + "\"index_probes\": \(m.probes), \"index_conflicts\": \(m.conflicts), \"index_write_failures\": \(m.writeFailures), "
            + "\"metadata_copies\": \(m.metadataCopies), \"head_requests\": \(m.heads), "
            + "\"requests_total\": \(m.indexGets + m.indexPuts + m.indexDeletes + m.probes + m.metadataCopies + m.heads)}"
    }

    /// Readers, parts and the data cache, for the statistics.
    func readsJSON() -> String {
        let r = reads.counters.withLock { $0 }
        let pool = reads.pool.load
        var out = "{\"stream_readers\": \(r.streamReaders), \"parallel_readers\": \(r.parallelReaders), \"parts\": \(r.partsFetched), "
            + "\"part_bytes\": \(r.partBytes), \"part_retries\": \(r.partRetries), \"read_memory_bytes\": \(reads.memory.inUse), "
            + "\"read_threads\": \(pool.threads), \"walk_prefetched\": \(walkPrefetch.prefetched), \"walk_used\": \(walkPrefetch.used), \"walk_unused\": \(walkPrefetch.unused), \"recent_prefix_hits\": \(reads.recent.hits)"
        if let dc = reads.cache {
            let k = dc.counters
            out += ", \"data_cache\": {\"hits\": \(k.hits), \"misses\": \(k.misses), \"bytes_served\": \(k.bytesFromDisk), \"bytes_written\": \(k.bytesWritten), "
                + "\"bytes_cached\": \(dc.bytesCached), \"evictions\": \(k.evictions), \"write_errors\": \(k.writeErrors)}"
        }
        return out + "}"
    }

    /// The statistics `s3mount stats` prints, as JSON.
    public func statsJSON() -> String {
        let c = counters
        let (nodes, attrs, negs, dirs) = state.withLock { entryCounts($0) }
        var ops: [String] = []
        var total = 0, notFound = 0, retries = 0
        var down: Int64 = 0, up: Int64 = 0
        if let snap = store.requestStats?.snapshot() {
            for (op, outcomes) in snap.requests.sorted(by: { $0.key < $1.key }) {
                let n = outcomes.values.reduce(0, +)
                let detail = outcomes.sorted(by: { $0.key < $1.key }).map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ")
                ops.append("    \"\(op)\": {\"total\": \(n), \(detail)}")
            }
            total = snap.total
            notFound = snap.notFound
            retries = snap.retries
            down = snap.bytesDown
            up = snap.bytesUp
        }
        func hitRate(_ h: Int, _ m: Int) -> String { h + m == 0 ? "null" : String(Double(Int(Double(h) / Double(h + m) * 10000)) / 10000) }
        return """
        {
          "requests": {
        \(ops.joined(separator: ",\n"))
          },
          "requests_total": \(total),
          "not_found_404": \(notFound),
          "retries": \(retries),
          "bytes_downloaded": \(down),
          "bytes_uploaded": \(up),
          "cache": {
            "attributes": {"hits": \(c.attrHits), "misses": \(c.attrMisses), "hit_rate": \(hitRate(c.attrHits, c.attrMisses))},
            "negative": {"hits": \(c.negativeHits)},
            "listings": {"hits": \(c.listingHits), "misses": \(c.listingMisses), "hit_rate": \(hitRate(c.listingHits, c.listingMisses))},
            "requests_avoided": \(c.attrHits + c.negativeHits + c.listingHits)
          },
          "entries": {"inodes": \(nodes), "attributes": \(attrs), "negative": \(negs), "complete_directories": \(dirs)},
          "metadata": \(metadataJSON()),
          "reads": \(readsJSON()),
          "bad_answers": {"short_reads": \(FileReader.shortReads.withLock { $0 }), "verification_failures": \(FileReader.verificationFailures.withLock { $0 })},
          "heap_bytes": \(s3m_heap_in_use()),
          "skipped_keys": \(c.skippedNames)
        }
        """
    }
}

/// A lookup request on the wire that others for the same name wait on.
final class Flight: @unchecked Sendable {
    let cond = Condition()
    var done = false
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
