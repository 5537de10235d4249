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
        /// Keys unlinked while readers had them open: deleted at the last reader's close.
        var deferredDeletes = Set<[UInt8]>()
        /// Directory markers ("dir/" objects) seen, and when: a directory listed completely that
        /// becomes empty by events stays only if it has one (see `applyEvent`).
        var markers: [[UInt8]: Double] = [:]
        /// Files hidden by a directory of the same name (a key that is both a file and a prefix):
        /// the file shows again when the directory goes (rmdir, rename, its last key deleted).
        var shadowed: [[UInt8]: CachedEntry] = [:]
        var counters = CacheCounters()
    }

    let state = Locked(State())
    /// Open files and directories (Handles.swift); taken after `state` when both are needed.
    let handles = HandleTable()
    lazy var headPrefetch = HeadPrefetch(fs: self)
    /// The read part: parts pool, read memory, data cache (Read/).
    let reads: ReadShared
    lazy var walkPrefetch = WalkPrefetch(fs: self, window: options.walkReadAhead, maxSize: options.walkReadAheadMaxSize)

    /// Multipart uploads in progress, recorded so a later mount can abort what this one leaves.
    let journal: UploadJournal?
    /// `--write-back`: closed files whose upload is owed, their journal and bounds (WriteBack.swift).
    let writeBack: WriteBack?
    /// With notifications: how long caches are trusted now (long while the queue is healthy), the
    /// changes this mount made (their events change nothing), and the newest event per key.
    let ttl: MetadataTTL
    let ownChanges: OwnChanges?
    let eventOrder = Locked(EventOrder())
    /// The notification listener, for the statistics.
    let listener = Locked<NotificationListener?>(nil)
    /// Unlinks of a burst (`rm -r`), answered at once and deleted in batches (Write/DeleteQueue.swift).
    let deletes: DeleteQueue

    public init(store: ObjectStore, options: FSOptions, cache: DataCache? = nil, journal: UploadJournal? = nil, writeBackJournal: WriteBackJournal? = nil) {
        let own = options.notifications ? OwnChanges() : nil
        let store: ObjectStore = own.map { OwnChangeStore(store, own: $0) } ?? store
        self.ownChanges = own
        self.store = store
        self.journal = journal
        self.writeBack = options.writeBack ? writeBackJournal.map { WriteBack(journal: $0, maxFiles: options.writeBackMaxFiles, maxBytes: options.writeBackMaxBytes) } : nil
        self.options = options
        self.ttl = MetadataTTL(options.metadataTTL)
        self.reads = ReadShared(store: store, options: options, cache: cache)
        self.mountTime = Double(time(nil))
        self.meta = MetadataIndex(store: store, ttl: ttl, debounce: options.metadataDebounce, enabled: options.metadata != .none)
        self.deletes = DeleteQueue(send: { keys in try store.deleteManyReporting(keys) })
        // The index's writer thread may outlive a filesystem (unit tests make many): weak, and a
        // copy for a filesystem that is gone is dropped.
        meta.copier = { [weak self] c in self?.sendHeaderCopy(c) ?? true }
        deletes.refused = { [weak self] refused in self?.batchedDeletesRefused(refused) }
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
            s3m_set_thread_name("s3m-sweep")
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
    @inline(__always) func fresh(_ at: Double, _ now: Double) -> Bool { now - at < ttl.seconds }

    /// Notifications: while the queue answers, caches are trusted for `--metadata-ttl`; while it
    /// does not, for at most `degradedTTL` (what a mount without notifications does).
    public func setNotificationsHealthy(_ healthy: Bool) {
        ttl.set(healthy ? ttl.configured : min(ttl.configured, options.degradedTTL))
    }

    /// The TTL in force now.
    public var currentMetadataTTL: Double { ttl.seconds }

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
            a.ctime = m.ctime
            a.atime = m.atime
            if kind == .file && m.fileType != UInt32(S_IFDIR) {
                a.fileType = m.fileType
                a.rdev = m.rdev
            }
        } else if options.metadata == .head && kind == .file && ino != Self.rootIno {
            a.provisional = true
        }
        // What the admin pinned, whatever a bucket writer stored (the root's record too).
        a.mode &= ~options.umask & 0o7777
        if options.forceOwner {
            a.uid = options.uid
            a.gid = options.gid
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
    func openForWriting(_ s: State, _ key: [UInt8]) -> Bool { writing(s, key) != nil }

    /// The writer of a file open for writing under `key` (not unlinked since). `s`: the metadata
    /// lock is held (the handle table is taken after it).
    func writing(_ s: State, _ key: [UInt8]) -> FileWriter? {
        handles.writer { $0.key == key && !$0.state.withLock { $0.unlinked } }
    }

    /// What a file being written is: its entry (one made up when S3 has none yet) with its writer's size.
    func writingEntry(_ e: CachedEntry?, _ w: FileWriter, at t: Double) -> CachedEntry {
        var e = e ?? CachedEntry(kind: .file, size: 0, mtime: Double(time(nil)), etag: "", at: t)
        e.size = w.size
        return e
    }

    /// Whether a file is being written somewhere under directory prefix `dir` (it is not empty).
    /// With write-back, a directory's own marker may be among them (`countingMarker` false: it
    /// is no entry, for rmdir's emptiness).
    func writingUnder(_ s: State, _ dir: [UInt8], countingMarker: Bool = true) -> Bool {
        handles.writer { $0.key.starts(with: dir) && (countingMarker || $0.key != dir) && !$0.state.withLock { $0.unlinked } } != nil
    }

    /// The files being written in directory `dir`, and its subdirectories that hold one: a listing
    /// shows them whether S3 has them yet or not.
    func writingEntries(_ s: State, in dir: [UInt8]) -> [([UInt8], CachedEntry)] {
        let writers = handles.writers
        if writers.isEmpty { return [] }
        var out: [[UInt8]: CachedEntry] = [:]
        for w in writers {
            let key = w.key
            guard key.count > dir.count, key.starts(with: dir), !w.state.withLock({ $0.unlinked }) else { continue }
            let rest = key[dir.count...]
            if let slash = rest.firstIndex(of: Names.slash) {
                let name = Array(rest[..<slash])
                out[name] = s.attrs[dir: dir, name: name].flatMap { $0.kind == .directory ? $0 : nil }
                    ?? CachedEntry(kind: .directory, size: 0, mtime: 0, etag: "", at: now())
            } else if s.attrs[key]?.kind != .directory && out[Array(rest)]?.kind != .directory {
                out[Array(rest)] = writingEntry(s.attrs[key], w, at: now())
            }
        }
        return out.map { ($0.key, $0.value) }
    }

    /// Objects unlinked through the mount that stay in S3 until their last reader closes, or until
    /// their batch is deleted: listings (begun at `started`) must not bring their names back.
    func unlinkedKeys(listingStartedAt started: Double) -> Set<[UInt8]> {
        let deferred = state.withLock { $0.deferredDeletes }
        let batched = deletes.hiddenKeys(listingStartedAt: started)
        return batched.isEmpty ? deferred : deferred.union(batched)
    }

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

    // MARK: - statistics

    public var counters: CacheCounters { state.withLock { $0.counters } }

    public var inodeCount: Int { state.withLock { $0.nodes.count } }

    /// Inodes, cached attributes, negative entries, complete directories: for the statistics.
    func entryCounts(_ s: State) -> (Int, Int, Int, Int) {
        (s.nodes.count, s.attrs.count, s.negatives.count, s.attrs.completeCount)
    }
}

/// A lookup request on the wire that others for the same name wait on.
final class Flight: @unchecked Sendable {
    let cond = Condition()
    var done = false
}
