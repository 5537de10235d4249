import Glibc
import S3

/// The metadata part: per directory, the POSIX metadata of the names that differ from the mount's
/// defaults, kept in S3 as one small object `DIR/.s3mount-meta` beside the entries (hidden from
/// listings) and in memory here. A listing shows the index's ETag like any key, so one GET beside
/// the listing gives modes, owners, mtimes and symlinks for the whole directory: no HeadObject
/// per entry. Each object also carries its own headers, so the index can be rebuilt from them.
///
/// Changes are applied here at once and written back debounced (one PUT per directory per burst,
/// at most `debounce` seconds late, and on fsync and unmount), conditionally (If-Match on the
/// version read, If-None-Match for a new index) so that two mounts do not lose each other's
/// updates: on 412 the index is read again and the local changes are applied on top.
///
/// Lock order: the filesystem's lock may be held while calling `record`; this part never calls
/// back into the filesystem while holding its own lock, and never holds it across a request.
final class MetadataIndex: @unchecked Sendable {
    static let objectName: [UInt8] = Names.indexName

    let store: ObjectStore
    let ttl: MetadataTTL
    let debounce: Double
    /// Reads and writes the index (false: `--metadata none`).
    let enabled: Bool

    struct Dir {
        /// The index object S3 has, as last learned (listing, probe, load or write): nil = none.
        var remoteETag: String?
        /// When `remoteETag` was learned; nil = never (unknown whether an index exists).
        var learnedAt: Double?
        /// The version `records` were read from or last written as; nil = none.
        var loadedETag: String?
        var loaded = false
        var records: [[UInt8]: MetaRecord] = [:]
        /// Local changes not yet written back (nil: the name's record was removed).
        var pending: [[UInt8]: MetaRecord?] = [:]
        var dirtySince: Double? = nil
        /// A load or write of this directory's index is on the wire.
        var busy = false
        /// Writing failed: not before this time again.
        var retryAt: Double = 0
        /// `--metadata head`: what objects' own headers said (kept in memory, never written).
        var heads: [[UInt8]: MetaRecord] = [:]
        /// Records shown here but not to be written yet (`update(persist: false)`).
        var localOnly = Set<[UInt8]>()
        /// The index S3 holds is one this program cannot read (another format, or past the cap):
        /// it is left alone, never overwritten, until it changes; metadata changes here are EROFS.
        var foreign = false

        /// Directories whose record holds nothing but the times an entry's change gave them (`touch`).
        var timesOnly = Set<[UInt8]>()

        /// What the index object holds when written. A file not uploaded yet has no ETag: its
        /// upload writes its entry. A directory's record that holds nothing but the times an
        /// entry's change gave it stays in memory.
        var recordsToWrite: [[UInt8]: MetaRecord] {
            records.filter { ($0.value.etag.isEmpty == false || $0.value.meta.isDirectory) && !timesOnly.contains($0.key) }
        }
    }

    /// The largest index read (about 200,000 names): a larger object is no index this program wrote.
    static let maxIndexBytes = 64 << 20

    struct Counters {
        var indexGets = 0, indexPuts = 0, indexDeletes = 0, probes = 0, conflicts = 0, writeFailures = 0
        var metadataCopies = 0, heads = 0
    }

    let dirs = Locked<[[UInt8]: Dir]>([:])
    let counters = Locked(Counters())
    /// Wakes the writer thread and waiters on `busy`.
    let cond = Condition()
    private var writerStarted = false
    /// A store that refused conditional writes (501 NotImplemented): sent plain PUTs since.
    private let unconditional = Locked(false)

    init(store: ObjectStore, ttl: MetadataTTL, debounce: Double = 1.0, enabled: Bool) {
        self.store = store
        self.ttl = ttl
        self.debounce = debounce
        self.enabled = enabled
    }

    static func key(dir: [UInt8]) -> [UInt8] { dir + objectName }

    static func isIndex(name: [UInt8]) -> Bool { name == objectName }

    /// Whether a listing page that holds the keys under `prefix` after `after` (nil: from the
    /// first) up to `last` (to the end when `complete`) would have shown the index key `key`: if
    /// it did not, the directory has no index.
    static func covered(_ key: [UInt8], prefix: [UInt8], after: [UInt8]?, last: [UInt8], complete: Bool) -> Bool {
        key.starts(with: prefix) && (after.map { $0.lexicographicallyPrecedes(key) } ?? true)
            && (complete || !last.lexicographicallyPrecedes(key))
    }

    func fresh(_ at: Double?, _ now: Double) -> Bool { at.map { now - $0 < ttl.seconds } ?? false }

    // MARK: - reading

    /// The metadata of `name` in `dir`, when the index has a record that still applies: same
    /// ETag as the object listed (a directory's record always applies).
    func record(dir: [UInt8], name: UnsafeRawBufferPointer, etag: String, isDirectory: Bool) -> PosixMeta? {
        dirs.withLock { d -> PosixMeta? in
            guard let e = d[dir], !e.records.isEmpty || !e.heads.isEmpty else { return nil }
            let n = Array(name)
            for r in [e.records[n], e.heads[n]] {
                guard let r, isDirectory == r.meta.isDirectory else { continue }
                if !isDirectory && !Self.sameETag(r.etag, etag) { continue }
                return r.meta
            }
            return nil
        }
    }

    /// `--metadata head`: what an object's own headers said.
    func learn(dir: [UInt8], name: [UInt8], _ r: MetaRecord) {
        dirs.withLock { d in d[dir, default: Dir()].heads[name] = r }
    }

    /// A record whatever its ETag (for carrying metadata across a rename or an overwrite).
    func anyRecord(dir: [UInt8], name: [UInt8]) -> MetaRecord? { dirs.withLock { $0[dir]?.records[name] } }

    static func sameETag(_ a: String, _ b: String) -> Bool {
        func bare(_ s: String) -> Substring {
            var t = Substring(s)
            if t.hasPrefix("W/") { t = t.dropFirst(2) }
            if t.first == "\"" { t = t.dropFirst() }
            if t.last == "\"" { t = t.dropLast() }
            return t
        }
        return bare(a) == bare(b)
    }

    /// What a listing page showed of `dir`'s index: its ETag, or that it has none (`etag` nil,
    /// only when the page passed where the index would sort).
    func noteListed(dir: [UInt8], etag: String?, at t: Double) {
        guard enabled else { return }
        dirs.withLock { d in
            var e = d[dir] ?? Dir()
            e.remoteETag = etag
            e.learnedAt = t
            if e.loaded && !Self.sameETag(e.loadedETag ?? "", etag ?? "") {
                // Written by another mount (or removed): read again at the next use.
                e.loaded = false
            }
            if etag == nil && e.pending.isEmpty && e.loadedETag != nil {
                e.records = [:]
                e.loadedETag = nil
            }
            d[dir] = e
        }
    }

    /// The index's ETag as the last listing of `dir` showed it: nil when none was seen, .some(nil)
    /// when the listing showed it has none.
    func listedETag(_ dir: [UInt8]) -> String?? {
        dirs.withLock { d in d[dir].map { $0.remoteETag } }
    }

    enum Need { case nothing, load, probe }

    func need(_ dir: [UInt8], at t: Double, probe: Bool) -> Need {
        guard enabled else { return .nothing }
        return dirs.withLock { d -> Need in
            guard let e = d[dir], fresh(e.learnedAt, t) else { return probe ? .probe : .nothing }
            if e.remoteETag == nil { return .nothing }
            if e.loaded && Self.sameETag(e.loadedETag ?? "", e.remoteETag!) { return .nothing }
            return .load
        }
    }

    /// Makes sure the records of `dir` are those of the index S3 has: reads it when a listing
    /// showed a version not read yet; with `probe`, first asks S3 whether there is one when no
    /// listing said so within the TTL (one ListObjectsV2 for exactly that key: never a 404).
    func ensureLoaded(_ dir: [UInt8], probe: Bool) {
        let t = monotonicSeconds()
        var step = need(dir, at: t, probe: probe)
        if step == .nothing { return }
        // One load or probe per directory at a time; the others wait for it.
        claim(dir)
        defer { unclaim(dir) }
        step = need(dir, at: t, probe: probe) // someone else may have done it meanwhile
        if step == .probe {
            counters.withLock { $0.probes += 1 }
            let key = Self.key(dir: dir)
            do {
                let page = try store.list(prefix: key, delimiter: nil, continuationToken: nil, startAfter: nil, maxKeys: 1)
                let etag = page.objects.first(where: { $0.key == key })?.etag
                noteListed(dir: dir, etag: etag, at: t)
            } catch {
                Log.warning("metadata index of \"\(Names.display(dir))\": \(error)")
                return
            }
            step = need(dir, at: t, probe: false)
        }
        if step == .load { _ = load(dir) }
    }

    /// Reads the index object; the records become what it says with the local changes on top.
    @discardableResult
    func load(_ dir: [UInt8]) -> Bool {
        counters.withLock { $0.indexGets += 1 }
        var bytes: [UInt8] = []
        var tooLarge = false
        let info: ObjectInfo
        do {
            // A body broken off midway is read again (the client retries only before the first
            // byte): a stat must not show the defaults for a blip of the network.
            var attempt = 0
            while true {
                bytes = []
                do {
                    info = try store.get(Self.key(dir: dir), range: nil, from: nil, ifMatch: nil) { buf in
                        bytes.append(contentsOf: buf)
                        tooLarge = bytes.count > Self.maxIndexBytes
                        return !tooLarge
                    }
                    break
                } catch let e as S3Error where e.isRetryable && attempt < 2 && !tooLarge {
                    attempt += 1
                    Log.debug("reading the metadata index of \"\(Names.display(dir))\": \(e); reading it again")
                }
            }
        } catch let e as S3Error where e.kind == .noSuchKey || e.kind == .notFound {
            noteListed(dir: dir, etag: nil, at: monotonicSeconds())
            return true
        } catch where tooLarge {
            // Noted as read (the version the listing showed), so that a stat does not download
            // it again: only a new version is read.
            markForeign(dir, etag: dirs.withLock { $0[dir]?.remoteETag }, why: "is larger than \(Self.maxIndexBytes >> 20) MiB")
            return true
        } catch {
            Log.warning("reading the metadata index of \"\(Names.display(dir))\": \(error)")
            return false
        }
        if tooLarge {
            markForeign(dir, etag: info.etag, why: "is larger than \(Self.maxIndexBytes >> 20) MiB")
            return true
        }
        guard let decoded = MetaIndexCodec.decode(bytes) else {
            markForeign(dir, etag: info.etag, why: "is not in a format this version of s3mount reads")
            return true
        }
        dirs.withLock { d in
            var e = d[dir] ?? Dir()
            e.foreign = false
            var records = decoded
            for (name, r) in e.pending { records[name] = r }
            for name in e.localOnly { records[name] = e.records[name] }
            e.records = records
            e.loadedETag = info.etag
            e.remoteETag = info.etag
            e.learnedAt = monotonicSeconds()
            e.loaded = true
            d[dir] = e
        }
        return true
    }

    /// An index this program cannot read: its entries are not shown, and it is never written
    /// over (another writer's metadata, perhaps a newer s3mount's, would be lost); changes of
    /// metadata in the directory are refused until it changes into one that reads.
    private func markForeign(_ dir: [UInt8], etag: String?, why: String) {
        Log.shared.once(.warning, key: "badindex:" + Names.display(dir),
                        "\"\(Names.display(Self.key(dir: dir)))\" \(why): left as it is; modes, owners and times in \"\(Names.display(dir))\" show the defaults and cannot be changed (EROFS)")
        dirs.withLock { d in
            var e = d[dir] ?? Dir()
            e.foreign = true
            e.records = [:]
            e.pending = [:]
            e.dirtySince = nil
            e.localOnly = []
            e.loadedETag = etag
            e.remoteETag = etag
            e.learnedAt = monotonicSeconds()
            e.loaded = true
            d[dir] = e
        }
    }

    /// Whether `dir`'s index is one this program leaves alone (see `markForeign`).
    func isForeign(_ dir: [UInt8]) -> Bool { dirs.withLock { $0[dir]?.foreign ?? false } }

    // MARK: - changing

    /// Sets (or with nil removes) the record of `name`; written back within `debounce` seconds.
    /// Setting what is already there (removing a record that does not exist) does nothing.
    /// `persist: false` only shows it here (a file not uploaded yet: its upload records it).
    func update(dir: [UInt8], name: [UInt8], _ r: MetaRecord?, persist: Bool = true) {
        guard enabled else { return }
        let changed = dirs.withLock { d -> Bool in
            var e = d[dir] ?? Dir()
            if e.foreign { return false }
            if e.records[name] == r && (!persist || !e.localOnly.contains(name)) { return false }
            e.records[name] = r
            e.timesOnly.remove(name)
            if !persist {
                e.localOnly.insert(name)
                d[dir] = e
                return false
            }
            e.localOnly.remove(name)
            e.pending[name] = .some(r)
            if e.dirtySince == nil { e.dirtySince = monotonicSeconds() }
            d[dir] = e
            return true
        }
        if changed { startWriter() }
    }

    /// A directory's new times after an entry in it changed: shown at once and never written on
    /// their own (a burst of creates costs no request for them). A directory with a record of
    /// its own (mode, owner, times set, xattrs) has them written with that record at the index's
    /// next write; one without keeps them in memory only, so that no index is made for them.
    func touch(dir: [UInt8], name: [UInt8], _ r: MetaRecord) {
        guard enabled else { return }
        dirs.withLock { d in
            var e = d[dir] ?? Dir()
            if e.foreign { return }
            if e.records[name] == nil || e.timesOnly.contains(name) { e.timesOnly.insert(name) }
            e.records[name] = r
            e.localOnly.insert(name)
            d[dir] = e
        }
    }

    /// A name went from `dir` (an unlink, a rename away): its record goes from the index S3 holds
    /// (read first when it may hold one not read yet, e.g. after its directory was renamed), and
    /// an index left with no record is deleted now, not a moment later, so that it does not keep
    /// in S3 a directory that only its entries implied.
    func remove(dir: [UInt8], name: [UInt8]) {
        guard enabled else { return }
        if !dirs.withLock({ $0[dir]?.loaded ?? false }) && mayExist(dir) { readNow(dir) }
        update(dir: dir, name: name, nil)
        deleteIfEmpty(dir)
    }

    /// Waits until no load, probe or write of `dir` is under way, then marks one (this caller's).
    private func claim(_ dir: [UInt8]) {
        cond.wait(until: {
            dirs.withLock { d in
                if d[dir]?.busy == true { return false }
                d[dir, default: Dir()].busy = true
                return true
            }
        })
    }

    private func unclaim(_ dir: [UInt8]) { cond.broadcast { dirs.withLock { d in d[dir]?.busy = false } } }

    /// Reads what S3 holds of `dir`'s index, whatever the TTL: a listing of exactly its key (never
    /// a 404), then the index when there is one.
    private func readNow(_ dir: [UInt8]) {
        claim(dir)
        defer { unclaim(dir) }
        let t = monotonicSeconds(), key = Self.key(dir: dir)
        guard let page = try? store.list(prefix: key, delimiter: nil, continuationToken: nil, startAfter: nil, maxKeys: 1) else { return }
        counters.withLock { $0.probes += 1 }
        let etag = page.objects.first(where: { $0.key == key })?.etag
        noteListed(dir: dir, etag: etag, at: t)
        if etag != nil { _ = load(dir) }
    }

    private func deleteIfEmpty(_ dir: [UInt8]) {
        let due = dirs.withLock { d -> Bool in
            guard let e = d[dir], e.dirtySince != nil else { return false }
            return e.recordsToWrite.isEmpty
        }
        if due && mayExist(dir) { write(dir) }
    }

    /// A directory removed or renamed away: its state goes (after any load or write in flight).
    func discard(where matches: @escaping ([UInt8]) -> Bool) {
        cond.wait(until: { dirs.withLock { d in !d.contains { matches($0.key) && $0.value.busy } } })
        dirs.withLock { d in for k in Array(d.keys) where matches(k) { d[k] = nil } }
    }

    /// Whether S3 may hold an index for `dir` (unknown counts as may).
    func mayExist(_ dir: [UInt8]) -> Bool {
        dirs.withLock { d in
            guard let e = d[dir], e.learnedAt != nil else { return true }
            return e.remoteETag != nil || e.loadedETag != nil || e.busy
        }
    }

    // MARK: - writing back

    private func startWriter() {
        let start = cond.locked { () -> Bool in
            if writerStarted { return false }
            writerStarted = true
            return true
        }
        if start {
            let t = Thread { [weak self] in self?.writerLoop() }
            t.start()
        } else {
            cond.broadcast()
        }
    }

    private func writerLoop() {
        while true {
            let t = monotonicSeconds()
            let due: [[UInt8]] = dirs.withLock { d in
                d.filter { !$0.value.busy && $0.value.dirtySince.map { t - $0 >= debounce } == true && $0.value.retryAt <= t }.map { $0.key }
            }
            // Objects' headers first: the index then records the ETags the copies left.
            runCopies(where: { t - $0.since >= debounce })
            for dir in due { _ = write(dir) }
            _ = cond.wait(timeout: max(0.05, debounce / 4), until: { false })
        }
    }

    // MARK: - deferred header copies

    /// A chmod, chown or utimens of a stored object not yet sent: its CopyObject onto itself waits
    /// `debounce` seconds, so that the changes a tool makes in a row (rsync: utimens, chmod, then
    /// rename) go out as one request, or ride on the rename's copy.
    struct PendingCopy {
        var dir: [UInt8]
        var name: [UInt8]
        var key: [UInt8]
        var meta: PosixMeta
        var size: Int64
        /// The object's ETag when the change was made: the copy fails (412) if it changed since.
        var etag: String
        var since: Double
    }

    private let copies = Locked<[[UInt8]: PendingCopy]>([:])
    /// Sends one deferred copy; set by the filesystem. Returns false to try again later.
    var copier: ((PendingCopy) -> Bool)?

    func deferCopy(_ c: PendingCopy) {
        copies.withLock { d in
            var c = c
            if let old = d[c.key] { c.since = old.since }
            d[c.key] = c
        }
        startWriter()
    }

    /// Removes and returns the copy pending for `key` (a rename, an overwrite or an unlink takes it over).
    @discardableResult
    func takeCopy(_ key: [UInt8]) -> PendingCopy? { copies.withLock { $0.removeValue(forKey: key) } }

    /// Sends the pending copies `matches` selects (all of them at unmount).
    func runCopies(where matches: (PendingCopy) -> Bool = { _ in true }) {
        let due = copies.withLock { d -> [PendingCopy] in
            let sel = d.values.filter(matches)
            for c in sel { d[c.key] = nil }
            return sel
        }
        for c in due where copier?(c) == false {
            var again = c
            again.since = monotonicSeconds() + 5 - debounce
            copies.withLock { d in if d[c.key] == nil { d[c.key] = again } }
        }
    }

    /// Writes every directory with changes now (unmount; with `matches`, those directories only).
    /// Returns false if one failed.
    @discardableResult
    func flush(where matches: ([UInt8]) -> Bool = { _ in true }) -> Bool {
        runCopies(where: { matches($0.dir) || matches($0.key) })
        let dirty: [[UInt8]] = dirs.withLock { d in d.filter { $0.value.dirtySince != nil && matches($0.key) }.map { $0.key } }
        var ok = true
        for dir in dirty where !write(dir) { ok = false }
        return ok
    }

    /// Writes `dir`'s index if it has changes; true when it is in S3 (or nothing was due).
    @discardableResult
    func write(_ dir: [UInt8]) -> Bool {
        var mine = false
        cond.wait(until: {
            dirs.withLock { d in
                guard let e = d[dir] else { return true }
                if e.busy { return false }
                if e.dirtySince == nil { return true }
                mine = true
                d[dir]!.busy = true
                return true
            }
        })
        guard mine else { return true }
        defer { cond.broadcast { dirs.withLock { d in d[dir]?.busy = false } } }
        // Not known whether S3 has an index, or a newer one: read it first, so what it holds survives.
        if needsReadBeforeWrite(dir) {
            let t = monotonicSeconds()
            if let page = try? store.list(prefix: Self.key(dir: dir), delimiter: nil, continuationToken: nil, startAfter: nil, maxKeys: 1) {
                counters.withLock { $0.probes += 1 }
                noteListed(dir: dir, etag: page.objects.first(where: { $0.key == Self.key(dir: dir) })?.etag, at: t)
            }
            if dirs.withLock({ $0[dir].map { $0.remoteETag != nil && !$0.loaded } ?? false }) { _ = load(dir) }
        }
        for _ in 0..<5 {
            guard let (records, pending, expected) = dirs.withLock({ d -> ([[UInt8]: MetaRecord], [[UInt8]: MetaRecord?], String?)? in
                guard let e = d[dir] else { return nil }
                return (e.recordsToWrite, e.pending, e.loadedETag)
            }) else { return true }
            let key = Self.key(dir: dir)
            do {
                var newETag: String? = nil
                if records.isEmpty {
                    if expected != nil {
                        counters.withLock { $0.indexDeletes += 1 }
                        try store.delete(key)
                    }
                } else {
                    counters.withLock { $0.indexPuts += 1 }
                    newETag = try putIndex(key, MetaIndexCodec.encode(records), expected: expected)
                }
                dirs.withLock { d in
                    guard var e = d[dir] else { return }
                    for (name, r) in pending where e.pending[name] == r { e.pending[name] = nil }
                    e.dirtySince = e.pending.isEmpty ? nil : monotonicSeconds()
                    e.loadedETag = newETag
                    e.remoteETag = newETag
                    e.loaded = true
                    e.learnedAt = monotonicSeconds()
                    e.retryAt = 0
                    d[dir] = e
                }
                return true
            } catch let e as S3Error where e.kind == .preconditionFailed {
                // Another mount wrote it since we read it: read theirs, put ours on top, again.
                counters.withLock { $0.conflicts += 1 }
                if !load(dir) { break }
            } catch {
                counters.withLock { $0.writeFailures += 1 }
                Log.warning("writing the metadata index of \"\(Names.display(dir))\": \(error) (retried in 5 s)")
                dirs.withLock { d in d[dir]?.retryAt = monotonicSeconds() + 5 }
                return false
            }
        }
        dirs.withLock { d in d[dir]?.retryAt = monotonicSeconds() + 5 }
        return false
    }

    private func needsReadBeforeWrite(_ dir: [UInt8]) -> Bool {
        dirs.withLock { d in
            guard let e = d[dir] else { return false }
            if e.learnedAt == nil { return true }
            return e.remoteETag != nil && !(e.loaded && Self.sameETag(e.loadedETag ?? "", e.remoteETag!))
        }
    }

    private func putIndex(_ key: [UInt8], _ body: [UInt8], expected: String?) throws -> String {
        if unconditional.withLock({ $0 }) { return try store.put(key, body: .bytes(body), metadata: []) }
        do {
            return try store.put(key, body: .bytes(body), condition: expected.map { .etag($0) } ?? .absent)
        } catch let e as S3Error where e.status == 501 || e.code == "NotImplemented" {
            if !unconditional.withLock({ u -> Bool in defer { u = true }; return u }) {
                Log.warning("the store does not support conditional writes; metadata indexes are written unconditionally (two mounts changing one directory at once may lose an update)")
            }
            return try store.put(key, body: .bytes(body), metadata: [])
        }
    }

    /// Forgets directories it knows nothing more of than a listing's answer that has expired.
    func sweep(at t: Double) {
        dirs.withLock { d in
            d = d.filter { _, e in
                e.busy || !e.records.isEmpty || !e.pending.isEmpty || !e.heads.isEmpty || fresh(e.learnedAt, t)
            }
        }
    }

    // MARK: - statistics

    var snapshot: Counters { counters.withLock { $0 } }
}
