import Glibc
import S3
import Synchronization

/// How long listings, attributes and negative entries are trusted. With notifications on it may
/// be long while the queue is healthy, and falls back to the short one while it is not.
final class MetadataTTL: Sendable {
    let configured: Double
    private let bits: Atomic<UInt64>

    init(_ seconds: Double) {
        configured = seconds
        bits = Atomic(seconds.bitPattern)
    }

    var seconds: Double { Double(bitPattern: bits.load(ordering: .relaxed)) }
    func set(_ s: Double) { bits.store(s.bitPattern, ordering: .relaxed) }
}

/// Changes this mount made itself, until their events come back from the queue: an event that
/// matches one is the mount's own write, and changes nothing (it may arrive after a later change
/// through the mount, which it must not undo). Entries older than `keep` seconds are dropped.
/// They are also the mount's probes of its source: once a kind of change has come back, one of
/// that kind that does not within `overdue` seconds was lost on the way (`takeOverdue`).
final class OwnChanges: Sendable {
    enum Change: Equatable { case created(String), removed }
    private let expected = Locked<[[UInt8]: [(change: Change, at: Double)]]>([:])
    /// Whether a creation, a removal has come back since the mount started.
    private let cameBack = Locked<(created: Bool, removed: Bool)>((false, false))
    let keep: Double = 600

    /// Forgets the changes of a kind that came back before, made more than `after` seconds ago
    /// and not come back since; returns how many.
    func takeOverdue(after: Double, at t: Double) -> Int {
        let back = cameBack.withLock { $0 }
        guard back.created || back.removed else { return 0 }
        return expected.withLock { m -> Int in
            var lost = 0
            for (key, list) in m {
                let kept = list.filter { c in
                    let late = t - c.at > after
                    let probe: Bool
                    switch c.change { case .created: probe = back.created; case .removed: probe = back.removed }
                    if late && probe { lost += 1; return false }
                    return true
                }
                if kept.count != list.count { m[key] = kept.isEmpty ? nil : kept }
            }
            return lost
        }
    }

    func note(_ key: [UInt8], _ c: Change) {
        let t = monotonicSeconds()
        expected.withLock { m in
            var list = (m[key] ?? []).filter { t - $0.at < keep }
            list.append((c, t))
            if list.count > 16 { list.removeFirst(list.count - 16) }
            m[key] = list
            if m.count > 100_000 { m = m.filter { $0.value.contains { t - $0.at < keep } } }
        }
    }

    /// Whether `event` is one of these changes (it is then forgotten).
    func consume(_ event: ObjectEvent) -> Bool {
        let t = monotonicSeconds()
        let consumed = expected.withLock { m -> Bool in
            guard var list = m[event.key] else { return false }
            list.removeAll { t - $0.at >= keep }
            let i = list.firstIndex { c in
                switch (c.change, event.change) {
                case (.removed, .removed): return true
                case (.created(let mine), .created(_, let theirs)):
                    return mine.isEmpty || MetadataIndex.sameETag(mine, theirs)
                default: return false
                }
            }
            if let i { list.remove(at: i) }
            m[event.key] = list.isEmpty ? nil : list
            return i != nil
        }
        if consumed {
            cameBack.withLock { b in if event.change == .removed { b.removed = true } else { b.created = true } }
        }
        return consumed
    }
}

/// The store as the filesystem uses it, noting each change it makes (see `OwnChanges`).
final class OwnChangeStore: ObjectStore, @unchecked Sendable {
    let inner: ObjectStore
    let own: OwnChanges
    init(_ inner: ObjectStore, own: OwnChanges) {
        self.inner = inner
        self.own = own
    }

    func list(prefix: [UInt8], delimiter: String?, continuationToken: String?, startAfter: [UInt8]?, maxKeys: Int?) throws -> ListPage {
        try inner.list(prefix: prefix, delimiter: delimiter, continuationToken: continuationToken, startAfter: startAfter, maxKeys: maxKeys)
    }
    func get(_ key: [UInt8], range: Range<Int64>?, from: Int64?, ifMatch: String?, sink: @escaping BodySink) throws -> ObjectInfo {
        try inner.get(key, range: range, from: from, ifMatch: ifMatch, sink: sink)
    }
    func put(_ key: [UInt8], body: HTTPBody, metadata: [(String, String)]) throws -> String {
        let etag = try inner.put(key, body: body, metadata: metadata)
        own.note(key, .created(etag))
        return etag
    }
    func put(_ key: [UInt8], body: HTTPBody, condition: WriteCondition) throws -> String {
        let etag = try inner.put(key, body: body, condition: condition)
        own.note(key, .created(etag))
        return etag
    }
    func createMultipart(_ key: [UInt8], metadata: [(String, String)]) throws -> MultipartUpload {
        try inner.createMultipart(key, metadata: metadata)
    }
    func uploadPart(_ key: [UInt8], upload: MultipartUpload, partNumber: Int, body: HTTPBody) throws -> CompletedPart {
        try inner.uploadPart(key, upload: upload, partNumber: partNumber, body: body)
    }
    func completeMultipart(_ key: [UInt8], uploadId: String, parts: [CompletedPart]) throws -> String {
        let etag = try inner.completeMultipart(key, uploadId: uploadId, parts: parts)
        own.note(key, .created(etag))
        return etag
    }
    func abortMultipart(_ key: [UInt8], uploadId: String) throws { try inner.abortMultipart(key, uploadId: uploadId) }
    func copy(from: [UInt8], to: [UInt8], size: Int64, metadata: [(String, String)]?, sourceETag: String?, storageClass: String?) throws -> String {
        let etag = try inner.copy(from: from, to: to, size: size, metadata: metadata, sourceETag: sourceETag, storageClass: storageClass)
        own.note(to, .created(etag))
        return etag
    }
    func head(_ key: [UInt8]) throws -> ObjectInfo { try inner.head(key) }
    func restore(_ key: [UInt8], days: Int, tier: String) throws -> RestoreStarted { try inner.restore(key, days: days, tier: tier) }
    var requestStats: RequestStats? { inner.requestStats }
    func delete(_ key: [UInt8]) throws {
        try inner.delete(key)
        own.note(key, .removed)
    }
    func deleteMany(_ keys: [[UInt8]]) throws -> [[UInt8]] {
        let failed = try inner.deleteMany(keys)
        let refused = Set(failed)
        for k in keys where !refused.contains(k) { own.note(k, .removed) }
        return failed
    }
    func deleteManyReporting(_ keys: [[UInt8]]) throws -> [(key: [UInt8], code: String)] {
        let failed = try inner.deleteManyReporting(keys)
        let refused = Set(failed.map { $0.key })
        for k in keys where !refused.contains(k) { own.note(k, .removed) }
        return failed
    }
}

/// Per key, the newest event applied: an older one arriving later (SQS delivers out of order) is
/// dropped. Ordered by S3's `sequencer` where both have one, else by `eventTime`.
struct EventOrder {
    private var last: [[UInt8]: (sequencer: String?, time: Double, at: Double)] = [:]

    /// Whether `e` is newer than what was applied for its key (and records it if so).
    mutating func admit(_ e: ObjectEvent, now t: Double) -> Bool {
        if let prev = last[e.key] {
            if let a = e.sequencer, let b = prev.sequencer {
                if !ObjectEvent.sequencer(a, isAfter: b) { return false }
            } else if e.time < prev.time {
                return false
            }
        }
        last[e.key] = (e.sequencer, e.time, t)
        if last.count > 200_000 { last = last.filter { t - $0.value.at < 3600 } }
        return true
    }
}

/// What applying one event did (for the statistics).
public enum EventOutcome: String, Sendable {
    /// The caches changed.
    case applied
    /// Older than what the mount knows of the key (a late or duplicated delivery).
    case stale
    /// The mount's own change coming back.
    case own
    /// Nothing the mount shows: another bucket, outside the prefix, a name it cannot show, or a
    /// directory it has not listed.
    case ignored
}

/// What applying an event leaves to do once the metadata lock is released.
struct EventEffects {
    var invalidations: [Invalidation] = []
    /// Directories that appeared by an event: they have no metadata index.
    var newDirectories: [[UInt8]] = []
}

extension Filesystem {
    /// Applies one S3 event (see `applyEvents`).
    public func applyEvent(_ e: ObjectEvent, bucket: String) -> EventOutcome {
        applyEvents([e], bucket: bucket)[0]
    }

    /// Applies a batch of S3 events, in order, to the caches: the attribute entry of each key, its
    /// directory's listing (kept complete, the name added or removed), the directories it implies,
    /// the negative cache and the data cached for an older version; then tells the kernel to drop
    /// what it holds of them. The whole batch takes the metadata lock once. No request is made.
    /// `listedAt`: for events made from a listing (`revalidateListings`), the monotonic moment it
    /// began: an entry learned since is newer than the listing.
    public func applyEvents(_ events: [ObjectEvent], bucket: String, listedAt: Double? = nil) -> [EventOutcome] {
        var outcomes = [EventOutcome](repeating: .ignored, count: events.count)
        var placed: [(index: Int, event: PlacedEvent)] = []
        var ownRemovals: [[UInt8]] = []
        let t = now()
        for (i, e) in events.enumerated() {
            switch place(e, bucket: bucket, at: t) {
            case .decided(let outcome):
                outcomes[i] = outcome
                if outcome == .own && e.change == .removed { ownRemovals.append(e.key) }
            case .index(let dir):
                outcomes[i] = applyIndexEvent(e, dir: dir)
            case .placed(let p):
                placed.append((i, p))
            }
        }
        guard !placed.isEmpty || !ownRemovals.isEmpty else { return outcomes }
        var fx = EventEffects()
        var dropData: [[UInt8]] = []
        state.withLock { s in
            // The mount's own deletes: what it showed is right, but the directories the key implied
            // may be gone with it, as a listing would show.
            for key in ownRemovals {
                _ = removeIfGone(&s, dir: key.last == Names.slash ? key : AttrCache.split(key).0, &fx)
            }
            for (i, p) in placed {
                var drop = false
                outcomes[i] = decide(&s, p, at: t, listedAt: listedAt, &fx, dropData: &drop)
                if drop { dropData.append(p.event.key) }
            }
        }
        for key in dropData { reads.cache?.drop(key: key) }
        // Outside the metadata lock: the index has a lock of its own, taken before it elsewhere.
        for d in fx.newDirectories { meta.noteListed(dir: d, etag: nil, at: t) }
        for i in fx.invalidations { invalidator?(i) }
        return outcomes
    }

    /// An event this mount shows, placed in its directory, before the metadata lock.
    struct PlacedEvent {
        var event: ObjectEvent
        /// The key is a directory marker ("dir/").
        var isMarker: Bool
        var dir: [UInt8]
        var name: [UInt8]
        /// The names of the directories between the root and `dir`.
        var components: [[UInt8]]
    }

    enum Placement {
        case decided(EventOutcome)
        /// Another mount rewrote a directory's metadata index.
        case index(dir: [UInt8])
        case placed(PlacedEvent)
    }

    /// What can be told of an event without the metadata lock: another bucket's, outside the
    /// prefix, the mount's own change, older than one applied, a name the mount cannot show.
    func place(_ e: ObjectEvent, bucket: String, at t: Double) -> Placement {
        // A record that does not name this bucket is another bucket's, whoever sent it.
        guard e.bucket == bucket else { return .decided(.ignored) }
        let root = rootPath
        guard e.key.count > root.count, e.key.starts(with: root) else { return .decided(.ignored) }
        if ownChanges?.consume(e) == true { return .decided(.own) }
        guard eventOrder.withLock({ $0.admit(e, now: t) }) else { return .decided(.stale) }

        let isMarker = e.key.last == Names.slash
        let entryKey = isMarker ? Array(e.key.dropLast()) : e.key
        let (dir, name) = AttrCache.split(entryKey)
        // Every directory between the root and the name must be one the mount can show.
        var components: [[UInt8]] = []
        var d = root
        for i in root.count..<dir.count where dir[i] == Names.slash {
            let comp = Array(dir[d.count..<i])
            if Names.directoryReason(comp) != nil { return .decided(.ignored) }
            components.append(comp)
            d = Array(dir[...i])
        }
        if name.isEmpty || Names.invalidReason(name) != nil { return .decided(.ignored) }
        if !isMarker && MetadataIndex.isIndex(name: name) { return .index(dir: dir) }
        return .placed(PlacedEvent(event: e, isMarker: isMarker, dir: dir, name: name, components: components))
    }

    /// Applies one placed event to the caches under the metadata lock; says whether the data
    /// cached for its key is now of an older version.
    func decide(_ s: inout State, _ p: PlacedEvent, at t: Double, listedAt: Double?, _ fx: inout EventEffects, dropData: inout Bool) -> EventOutcome {
        let e = p.event, isMarker = p.isMarker, dir = p.dir, name = p.name
        let entryKey = isMarker ? Array(e.key.dropLast()) : e.key
        // (A file being written through this mount shows what its writer says until it is
        // closed, whatever the caches hold: the event goes to the caches all the same, for
        // after the close.)
        let existing = s.attrs[dir: dir, name: name]
        // Learned (listed, or changed through the mount) well after the event happened: what the
        // mount knows already reflects it, or a later change (S3 lists what it has at once).
        if !isMarker, let x = existing {
            if let l = listedAt { if x.at > l { return .stale } } else if wallTime(ofMonotonic: x.at) > e.time + Self.eventClockSlack { return .stale }
        }
        var changed = false
        switch e.change {
        case .created(let size, let etag):
            changed = addAncestors(&s, components: p.components, dir: dir, &fx)
            if isMarker {
                s.markers[e.key] = t
                if existing?.kind != .directory && s.attrs.hasTable(dir) {
                    setEntry(&s, dir: dir, name: name, CachedEntry(kind: .directory, size: 0, mtime: e.time, etag: "", at: t))
                    markNew(&s, parent: dir, dir: e.key, &fx)
                    changed = true
                }
            } else if existing?.kind == .directory {
                // A key that is also a prefix: the directory is what the mount shows, the file
                // once the directory goes.
                s.shadowed[entryKey] = CachedEntry(kind: .file, size: size, mtime: e.time, etag: etag, at: t)
            } else if let x = existing, MetadataIndex.sameETag(x.etag, etag), x.size == size {
                // Already known (a listing after the change saw it).
            } else if s.attrs.hasTable(dir) {
                setEntry(&s, dir: dir, name: name, CachedEntry(kind: .file, size: size, mtime: e.time, etag: etag, at: t))
                dropData = existing != nil
                changed = true
            } else if nodeIno(s, ofDir: dir) != nil {
                // Not listed here; the kernel may still hold a negative entry for the name.
                changed = true
            }
            if s.negatives.removeValue(forKey: entryKey) != nil { changed = true }
        case .removed:
            if isMarker {
                s.markers[e.key] = nil
                changed = removeIfGone(&s, dir: e.key, &fx) || changed
            } else if existing?.kind == .directory {
                s.shadowed[entryKey] = nil
            } else if let x = existing, x.kind == .file {
                setEntry(&s, dir: dir, name: name, nil)
                // A file open for writing here keeps its inode (its writer uploads it at close).
                if writing(s, e.key) == nil { s.nodes.detach(parent: nodeIno(s, ofDir: dir) ?? 0, name: name, kind: .file) }
                dropData = true
                changed = true
                _ = removeIfGone(&s, dir: dir, &fx)
            } else if existing == nil, writing(s, e.key) == nil, let d = nodeIno(s, ofDir: dir), s.nodes.find(parent: d, name: name, kind: .file) != nil {
                // Not in the caches any more, but the kernel still holds the name.
                s.nodes.detach(parent: d, name: name, kind: .file)
                changed = true
            }
        }
        guard changed else { return .ignored }
        if let dirIno = nodeIno(s, ofDir: dir) {
            fx.invalidations.append(.entry(parent: dirIno, name: name))
            fx.invalidations.append(.inode(dirIno))
            if let n = s.nodes.find(parent: dirIno, name: name, kind: isMarker ? .directory : .file) { fx.invalidations.append(.inode(n.ino)) }
        }
        return .applied
    }

    /// After a key went: its directory, if empty and implied, goes too (see `removeIfGone`).
    func settleDirectories(above key: [UInt8]) {
        let dir = key.last == Names.slash ? key : AttrCache.split(key).0
        var fx = EventEffects()
        state.withLock { s in _ = removeIfGone(&s, dir: dir, &fx) }
        for i in fx.invalidations { invalidator?(i) }
    }

    /// Another mount rewrote (or removed) a directory's metadata index: it is read again at the
    /// next use, and the kernel drops the attributes of the names it covers.
    func applyIndexEvent(_ e: ObjectEvent, dir: [UInt8]) -> EventOutcome {
        let etag: String?
        switch e.change {
        case .created(_, let tag): etag = tag
        case .removed: etag = nil
        }
        meta.noteListed(dir: dir, etag: etag, at: now())
        let inodes: [UInt64] = state.withLock { s in
            guard let dirIno = nodeIno(s, ofDir: dir) else { return [] }
            var out = [dirIno]
            for (name, entry) in s.attrs.completeEntries(dir) ?? [] {
                if let n = s.nodes.find(parent: dirIno, name: name, kind: entry.kind) { out.append(n.ino) }
            }
            return out
        }
        for ino in inodes { invalidator?(.inode(ino)) }
        return .applied
    }

    /// Sets (or removes) a name in a directory's table, as a change through the mount does
    /// (`setName`); the kernel, which did not make this change, holds an old copy of the listing.
    func setEntry(_ s: inout State, dir: [UInt8], name: [UInt8], _ entry: CachedEntry?) {
        setName(&s, dir: dir, name: name, entry)
        s.attrs.forgetKernelRead(dir)
    }

    /// The directories a new key implies: each listed directory on its path that does not show
    /// the next one yet gains it.
    func addAncestors(_ s: inout State, components: [[UInt8]], dir: [UInt8], _ fx: inout EventEffects) -> Bool {
        var changed = false
        var parent = rootPath
        for comp in components {
            if s.attrs.hasTable(parent), s.attrs[dir: parent, name: comp]?.kind != .directory {
                setEntry(&s, dir: parent, name: comp, CachedEntry(kind: .directory, size: 0, mtime: 0, etag: "", at: now()))
                markNew(&s, parent: parent, dir: parent + comp + [Names.slash], &fx)
                if let p = nodeIno(s, ofDir: parent) { fx.invalidations.append(.entry(parent: p, name: comp)); fx.invalidations.append(.inode(p)) }
                changed = true
            }
            if s.negatives.removeValue(forKey: parent + comp) != nil { changed = true }
            parent = parent + comp + [Names.slash]
        }
        return changed
    }

    /// A directory that a current complete listing of its parent did not show did not exist then:
    /// all it holds came since, and comes as events. It is complete, and empty until they arrive
    /// (so that `ls` and `stat` in it need no request).
    func markNew(_ s: inout State, parent: [UInt8], dir: [UInt8], _ fx: inout EventEffects) {
        guard !s.attrs.hasTable(dir), freshListing(s, parent, at: now()) != nil else { return }
        s.attrs.markEmpty(dir, at: now())
        // Nor has it a metadata index yet (its event would say so).
        fx.newDirectories.append(dir)
    }

    /// After a key under directory `dir` went: a directory listed completely that is now empty and
    /// has no marker is gone from S3 (an implied directory), and so from its parent, and so on up.
    /// One not listed completely that the mount knows no name in any more may or may not be: its
    /// entry goes, and its parent's listing is no longer complete, so that S3 answers for it.
    func removeIfGone(_ s: inout State, dir: [UInt8], _ fx: inout EventEffects) -> Bool {
        var d = dir
        var changed = false
        while d.count > rootPath.count, s.markers[d] == nil {
            let (parent, name) = AttrCache.split(Array(d.dropLast()))
            let shown = s.attrs[dir: parent, name: name]?.kind == .directory
            if !shown && s.attrs.hasTable(parent) && !s.attrs.hasTable(d) {
                // Gone from its parent already (an rmdir through the mount): the parent may go too.
                d = parent
                continue
            }
            guard shown || !s.attrs.hasTable(parent) else { return changed }
            if handles.hasWriters && writingUnder(s, d) { return changed }
            // An object unlinked while a reader has it open stays in S3 until the last close, and
            // keeps its directories (as a listing shows them).
            if !s.deferredDeletes.isEmpty && s.deferredDeletes.contains(where: { $0.starts(with: d) }) { return changed }
            // Still holds names: still there.
            guard s.attrs.isEmpty(d) else { return changed }
            let known = s.attrs.listedAt(d) != nil
            s.attrs.removeTable(d)
            if s.attrs.hasTable(parent) { setEntry(&s, dir: parent, name: name, nil) }
            if !known { s.attrs.forgetListings(where: { $0 == parent }) }
            if let p = nodeIno(s, ofDir: parent) {
                fx.invalidations.append(.entry(parent: p, name: name))
                fx.invalidations.append(.inode(p))
                s.nodes.detach(parent: p, name: name, kind: .directory)
            }
            changed = true
            if !known { return changed }
            d = parent
        }
        return changed
    }

    /// Seconds by which this machine's clock and S3's may differ: an entry learned later than
    /// an event's time plus this is newer than the event.
    static let eventClockSlack: Double = 5

    /// The wall-clock time of a monotonic instant.
    func wallTime(ofMonotonic m: Double) -> Double { Timestamp.now().seconds - (now() - m) }

    /// The inode of directory prefix `dir`, if the kernel holds one for it.
    func nodeIno(_ s: State, ofDir dir: [UInt8]) -> UInt64? {
        var ino = Self.rootIno
        var start = rootPath.count
        guard dir.starts(with: rootPath) else { return nil }
        for i in start..<dir.count where dir[i] == Names.slash {
            guard let n = s.nodes.find(parent: ino, name: Array(dir[start..<i]), kind: .directory) else { return nil }
            ino = n.ino
            start = i + 1
        }
        return ino
    }
}
