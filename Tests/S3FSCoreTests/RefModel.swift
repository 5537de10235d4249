import Glibc
@testable import S3FSCore

// The reference model for ReferenceModelTests: what a user of the mount should see. No Filesystem
// in here.
//
// The model is a map of S3 keys (relative to the mount root; a directory marker ends in "/") to
// bytes — what S3 must hold once every open file is closed — plus the open handles. The tree a user
// sees is derived from it the way docs/SEMANTICS.md says: a name is a directory when some key
// starts with "name/" (a marker or anything below), a file when its key exists and no directory
// shadows it; a file open for writing through the mount is visible at its path (with the size of
// what was written) even before its first upload.

enum RefKind: Equatable { case file, dir }

/// A handle open in the model.
struct RefHandle {
    var path: String
    var writer: Bool
    /// Handles opened on one file share its inode (and what fstat says), whatever its name becomes.
    var inode = 0
    /// Writer: what the file holds through this handle. Reader: what it held at open.
    var data: [UInt8]
    /// Writer: changed since its last upload (a new or O_TRUNC file counts as changed).
    var dirty = false
    /// Its name was removed (unlink, or a rename onto it) while open: it keeps working, and a
    /// writer's data is never uploaded.
    var detached = false
    /// Writer opened O_RDWR: its object is downloaded at the first read, write or truncate (`data`
    /// holds what it was at open). If another client changed or removed it meanwhile, that access
    /// fails (the download asks for the version opened: If-Match), and the next one tries again.
    var lazy = false
    /// Reader: its object changed (or moved) since open: a read may fail (ESTALE, ENOENT, EIO) or
    /// still answer what it held.
    var stale = false
    /// Reader detached by an unlink: its object stays in S3 until the last such reader closes.
    var deferred = false
}

/// Paths are "a/b/c" (root is ""); keys likewise, a marker is "a/b/".
struct RefModel {
    var objects: [String: [UInt8]] = [:]
    var handles: [Int: RefHandle] = [:]
    /// The inode of each file name that handles were opened on (made when first opened).
    var inodes: [String: Int] = [:]
    private var nextInode = 1

    static func parent(_ p: String) -> String {
        guard let i = p.lastIndex(of: "/") else { return "" }
        return String(p[..<i])
    }
    static func join(_ dir: String, _ name: String) -> String { dir.isEmpty ? name : dir + "/" + name }
    /// "a/b/c" -> ["a", "a/b"] (proper ancestors, root excluded).
    static func ancestors(_ p: String) -> [String] {
        var out: [String] = []
        var cur = parent(p)
        while !cur.isEmpty { out.insert(cur, at: 0); cur = parent(cur) }
        return out
    }
    static func isInside(_ p: String, _ dir: String) -> Bool { p.hasPrefix(dir + "/") }

    mutating func setObject(_ key: String, _ data: [UInt8]?) { objects[key] = data }

    mutating func inode(of p: String, new: Bool = false) -> Int {
        if !new, let i = inodes[p] { return i }
        inodes[p] = nextInode
        nextInode += 1
        return nextInode - 1
    }

    /// Paths of writers attached to a name: visible whether or not S3 has them yet.
    var attachedWriterPaths: [String] { handles.values.filter { $0.writer && !$0.detached }.map { $0.path } }

    func writer(at p: String) -> (Int, RefHandle)? {
        handles.first { $0.value.writer && !$0.value.detached && $0.value.path == p }.map { ($0.key, $0.value) }
    }

    /// Every key a user can see something of: S3's, and files being written.
    var visibleKeys: Set<String> { Set(objects.keys).union(attachedWriterPaths) }

    /// Files unlinked while open for reading: their objects stay in S3 until the last such reader
    /// closes. Not listed, but their directories are there meanwhile (S3 has keys under them).
    var waitingKeys: Set<String> { Set(handles.values.filter { $0.deferred }.map { $0.path }).subtracting(visibleKeys) }

    /// Keys that make directories: the visible ones and the waiting ones.
    var directoryKeys: Set<String> { visibleKeys.union(waitingKeys) }

    func kind(_ p: String, in keys: Set<String>? = nil) -> RefKind? {
        if p.isEmpty { return .dir }
        if (keys ?? directoryKeys).contains(where: { $0.hasPrefix(p + "/") }) { return .dir }
        if (keys.map { $0.subtracting(waitingKeys) } ?? visibleKeys).contains(p) { return .file }
        return nil
    }

    /// Every directory a user sees (root excluded).
    var directories: Set<String> {
        var out = Set<String>()
        for k in directoryKeys {
            var p = RefModel.parent(k.hasSuffix("/") ? k + "x" : k)
            while !p.isEmpty { out.insert(p); p = RefModel.parent(p) }
        }
        return out
    }

    /// What the kernel's path walk ends with: the kind, or ENOENT / ENOTDIR on the way.
    func walk(_ p: String) -> Result<RefKind?, FSError> {
        let keys = directoryKeys
        for a in Self.ancestors(p) {
            switch kind(a, in: keys) {
            case nil: return .failure(FSError(ENOENT))
            case .file?: return .failure(FSError(ENOTDIR))
            case .dir?: continue
            }
        }
        return .success(kind(p, in: keys))
    }

    /// Names in a directory, with kinds.
    func children(_ dir: String) -> [String: RefKind] {
        let waiting = waitingKeys
        let prefix = dir.isEmpty ? "" : dir + "/"
        var out: [String: RefKind] = [:]
        for k in visibleKeys.union(waiting) where k.hasPrefix(prefix) && k.count > prefix.count {
            let rest = k.dropFirst(prefix.count)
            if let slash = rest.firstIndex(of: "/") {
                let name = String(rest[..<slash])
                if !name.isEmpty { out[name] = .dir }
            } else if out[String(rest)] == nil && !waiting.contains(k) {
                out[String(rest)] = .file
            }
        }
        return out
    }

    /// Size a user sees of a visible file: what its writer holds, else its object's.
    func size(_ p: String) -> Int {
        if let (_, w) = writer(at: p) { return w.data.count }
        return objects[p]?.count ?? 0
    }

    /// Files that hold a directory's keys: everything that starts with "dir/".
    func keys(under dir: String) -> [String] { objects.keys.filter { Self.isInside($0, dir) || $0 == dir + "/" }.sorted() }

    // MARK: - changes (each returns nil or the errno a user gets)

    /// Readers of `key` (unlinked ones too: their object stays in S3 until they close, unless it is
    /// replaced) may now fail.
    mutating func markReadersStale(_ key: String) {
        for (id, h) in handles where !h.writer && h.path == key { handles[id]!.stale = true }
    }

    /// A new file takes `key` over through the mount (create, upload, rename onto it): readers of
    /// its old object may now fail, and no longer keep it (an unlink's deferred delete is off).
    mutating func takeOver(_ key: String) {
        markReadersStale(key)
        for (id, h) in handles where !h.writer && h.path == key { handles[id]!.deferred = false }
    }

    /// What another client did to a key, as the model sees it.
    mutating func outOfBand(_ key: String, _ data: [UInt8]?) {
        setObject(key, data)
        markReadersStale(key)
    }

    /// Uploads a writer's data if it changed (flush, fsync, release).
    mutating func upload(_ id: Int) {
        guard var h = handles[id], h.writer, h.dirty, !h.detached else { return }
        h.dirty = false
        handles[id] = h
        setObject(h.path, h.data)
        takeOver(h.path)
    }

    /// A writer's access to the data: first, the download of an O_RDWR open, which fails while
    /// the object is not what it was at open (an empty one needs no download).
    mutating func touchData(_ id: Int) -> Int32? {
        guard let h = handles[id] else { return EBADF }
        if h.lazy {
            if !h.data.isEmpty && objects[h.path] != h.data { return ESTALE }
            handles[id]!.lazy = false
        }
        return nil
    }

    /// The name goes; open handles on it keep working (writers are never uploaded).
    mutating func detachHandles(at p: String) {
        for (id, h) in handles where !h.detached && h.path == p { handles[id]!.detached = true }
    }
}

extension RefModel {
    func stat(_ p: String) -> RefOutcome {
        switch walk(p) {
        case .failure(let e): return .err(e.errno)
        case .success(nil): return .err(ENOENT)
        case .success(.dir?): return .stat("dir")
        case .success(.file?): return .stat("file \(size(p))")
        }
    }

    func listing(_ p: String) -> RefOutcome {
        switch walk(p) {
        case .failure(let e): return .err(e.errno)
        case .success(nil): return .err(ENOENT)
        case .success(.file?): return .err(ENOTDIR)
        case .success(.dir?):
            return .entries(children(p).map { $0.value == .dir ? $0.key + "/" : "\($0.key) \(size(RefModel.join(p, $0.key)))" }.sorted())
        }
    }

    static func slice(_ d: [UInt8], _ offset: Int, _ len: Int) -> [UInt8] {
        offset >= d.count ? [] : Array(d[offset..<min(d.count, offset + len)])
    }

    static func resized(_ d: [UInt8], _ size: Int) -> [UInt8] {
        size <= d.count ? Array(d[0..<size]) : d + [UInt8](repeating: 0, count: size - d.count)
    }

    /// What fstat of a handle says (nil: not specified). A reader shares its inode with a writer
    /// of the same name, whose size it then shows; once its object changed, its size is not
    /// specified, nor when another reader of the inode opened another version of the object
    /// (another client replaced it: the name, so the inode, stayed; fstat asks by inode).
    func fstat(_ id: Int) -> Int? {
        guard let h = handles[id] else { return nil }
        if h.writer { return h.data.count }
        if h.stale { return nil }
        if let w = handles.values.first(where: { $0.writer && $0.inode == h.inode }) { return w.data.count }
        if handles.values.contains(where: { !$0.writer && $0.inode == h.inode && ($0.stale || $0.data != h.data) }) { return nil }
        return h.data.count
    }

    /// Whether a key waiting for its last reader lies under directory `dir`.
    func holdsWaiting(_ dir: String) -> Bool { waitingKeys.contains { RefModel.isInside($0, dir) } }

    /// Applies `op` to the model and says what the mount must answer (`.skip`: the model does not
    /// cover it, and is unchanged).
    mutating func apply(_ op: RefOp) -> RefExpect {
        if let h = op.handle {
            guard let hd = handles[h] else { return .skip }
            if !hd.writer, case .write = op { return .skip }
            if !hd.writer, case .truncate = op { return .skip }
        }
        switch op {
        case .mkdir(let p):
            switch walk(p) {
            case .failure(let e): return .exactly(.err(e.errno))
            case .success(_?): return .exactly(.err(EEXIST))
            case .success(nil):
                setObject(p + "/", [])
                return .exactly(.ok)
            }
        case .rmdir(let p):
            switch walk(p) {
            case .failure(let e): return .exactly(.err(e.errno))
            case .success(nil): return .exactly(.err(ENOENT))
            case .success(.file?): return .exactly(.err(ENOTDIR))
            case .success(.dir?):
                // Not covered: a directory holding a file unlinked while open for reading (its
                // object is still under the prefix: an rmdir that knows the directory empty from a
                // listing succeeds, one that asks S3 says ENOTEMPTY).
                if holdsWaiting(p) { return .skip }
                if !children(p).isEmpty { return .exactly(.err(ENOTEMPTY)) }
                setObject(p + "/", nil)
                return .exactly(.ok)
            }
        case .create(let p, let h), .openWrite(let p, let h, _):
            if handles[h] != nil || writer(at: p) != nil { return .skip }
            var trunc = true
            if case .openWrite(_, _, let t) = op { trunc = t }
            switch walk(p) {
            case .failure(let e): return .exactly(.err(e.errno))
            case .success(.dir?): return .exactly(.err(EISDIR))
            case .success(nil):
                if case .openWrite = op { return .exactly(.err(ENOENT)) }
                handles[h] = RefHandle(path: p, writer: true, inode: inode(of: p, new: true), data: [], dirty: true)
                takeOver(p)
            case .success(.file?):
                if trunc {
                    handles[h] = RefHandle(path: p, writer: true, inode: inode(of: p), data: [], dirty: true)
                } else {
                    handles[h] = RefHandle(path: p, writer: true, inode: inode(of: p), data: objects[p] ?? [], lazy: true)
                }
            }
            return .exactly(.ok)
        case .openRead(let p, let h):
            if handles[h] != nil || writer(at: p) != nil { return .skip }
            switch walk(p) {
            case .failure(let e): return .exactly(.err(e.errno))
            case .success(nil): return .exactly(.err(ENOENT))
            case .success(.dir?): return .exactly(.err(EISDIR))
            case .success(.file?):
                handles[h] = RefHandle(path: p, writer: false, inode: inode(of: p), data: objects[p] ?? [])
                return .exactly(.ok)
            }
        case .write(let h, let offset, let len, let fill):
            if let e = touchData(h) { return e == ESTALE ? .someError : .exactly(.err(e)) }
            var d = handles[h]!.data
            if d.count < offset + len { d += [UInt8](repeating: 0, count: offset + len - d.count) }
            d.replaceSubrange(offset..<(offset + len), with: refBytes(len, fill: fill))
            handles[h]!.data = d
            handles[h]!.dirty = true
            return .exactly(.count(len))
        case .read(let h, let offset, let len):
            let hd = handles[h]!
            if hd.writer {
                if let e = touchData(h) { return e == ESTALE ? .someError : .exactly(.err(e)) }
                return .exactly(.data(Self.slice(hd.data, offset, len)))
            }
            return hd.stale ? .dataOrError(Self.slice(hd.data, offset, len)) : .exactly(.data(Self.slice(hd.data, offset, len)))
        case .truncate(let h, let size):
            if let e = touchData(h) { return e == ESTALE ? .someError : .exactly(.err(e)) }
            handles[h]!.data = Self.resized(handles[h]!.data, size)
            handles[h]!.dirty = true
            return .exactly(.ok)
        case .truncatePath(let p, let size):
            switch walk(p) {
            case .failure(let e): return .exactly(.err(e.errno))
            case .success(nil): return .exactly(.err(ENOENT))
            case .success(.dir?): return .exactly(.err(EISDIR))
            case .success(.file?):
                if let (id, _) = writer(at: p) {
                    if let e = touchData(id) { return e == ESTALE ? .someError : .exactly(.err(e)) }
                    handles[id]!.data = Self.resized(handles[id]!.data, size)
                    handles[id]!.dirty = true
                } else {
                    setObject(p, Self.resized(objects[p] ?? [], size))
                    takeOver(p)
                }
                return .exactly(.ok)
            }
        case .flush(let h, _):
            upload(h)
            return .exactly(.ok)
        case .release(let h):
            upload(h)
            handles[h] = nil
            return .exactly(.ok)
        case .getattr(let h):
            return fstat(h).map { .exactly(.count($0)) } ?? .anything
        case .rename(let src, let dst, let noReplace):
            return rename(src, dst, noReplace: noReplace)
        case .unlink(let p):
            switch walk(p) {
            case .failure(let e): return .exactly(.err(e.errno))
            case .success(nil): return .exactly(.err(ENOENT))
            case .success(.dir?): return .exactly(.err(EISDIR))
            case .success(.file?):
                // A writer still to download its object does it first: that fails if another client
                // changed it since the open (and nothing is removed).
                if let (id, _) = writer(at: p), touchData(id) != nil { return .someError }
                // Readers keep reading what they opened (the object stays until they close).
                setObject(p, nil)
                // (Any reader of that key: also one of a file that a rename replaced, whose object
                // stays until that rename's file is uploaded.)
                for (id, h) in handles where !h.writer && h.path == p { handles[id]!.deferred = true }
                detachHandles(at: p)
                inodes[p] = nil
                return .exactly(.ok)
            }
        case .readdir(let p):
            return .exactly(listing(p))
        case .lookup(let p):
            return .exactly(stat(p))
        case .cat(let p):
            if writer(at: p) != nil { return .skip }
            switch walk(p) {
            case .failure(let e): return .exactly(.err(e.errno))
            case .success(nil): return .exactly(.err(ENOENT))
            case .success(.dir?): return .exactly(.err(EISDIR))
            case .success(.file?): return .exactly(.data(objects[p] ?? []))
            }
        case .oobPut(let key, let len, let fill):
            if !RefGenerator.allowedOutOfBand(self, key, delete: false) { return .skip }
            outOfBand(key, refBytes(len, fill: fill))
            return .exactly(.ok)
        case .oobDelete(let key):
            if objects[key] == nil || !RefGenerator.allowedOutOfBand(self, key, delete: true) { return .skip }
            outOfBand(key, nil)
            return .exactly(.ok)
        }
    }

    /// rename(2) with the kernel's checks first (docs/SEMANTICS.md: a copy and a delete per key).
    mutating func rename(_ src: String, _ dst: String, noReplace: Bool) -> RefExpect {
        let s: RefKind, d: RefKind?
        switch walk(src) {
        case .failure(let e): return .exactly(.err(e.errno))
        case .success(nil):
            // The kernel walks both parents before it looks at the source's name.
            if case .failure(let e) = walk(dst) { return .exactly(.err(e.errno)) }
            return .exactly(.err(ENOENT))
        case .success(let k?): s = k
        }
        switch walk(dst) {
        case .failure(let e): return .exactly(.err(e.errno))
        case .success(let k): d = k
        }
        if noReplace && d != nil { return .exactly(.err(EEXIST)) }
        if RefModel.isInside(dst, src) { return .exactly(.err(EINVAL)) }
        if RefModel.isInside(src, dst) { return .exactly(.err(ENOTEMPTY)) }
        if src == dst { return .exactly(.ok) }
        if s == .file && d == .dir { return .exactly(.err(EISDIR)) }
        if s == .dir && d == .file { return .exactly(.err(ENOTDIR)) }
        if s == .dir && d == .dir && !children(dst).isEmpty { return .exactly(.err(ENOTEMPTY)) }
        // Not covered: moving a directory holding a file unlinked while open for reading (its
        // object is copied with the others, so it shows again under the new name).
        if s == .dir && (holdsWaiting(src) || holdsWaiting(dst)) { return .skip }
        if s == .file {
            // The file replaces what was at dst; a file open there keeps working, detached (a writer
            // still to download its object does it first, which fails if another client changed it).
            if let (id, _) = writer(at: dst), touchData(id) != nil { return .someError }
            // Not in S3 yet (created and not closed): its writer carries it, once it holds its data.
            if objects[src] == nil, let (id, _) = writer(at: src), touchData(id) != nil { return .someError }
            detachHandles(at: dst)
            if let data = objects[src] {
                setObject(dst, data)
                setObject(src, nil)
                markReadersStale(src)
                takeOver(dst)
            } else if let (id, _) = writer(at: src) {
                // Not in S3 yet: what dst held stays there until the writer's close replaces it.
                handles[id]!.dirty = true
                takeOver(dst)
            }
            for (id, h) in handles where h.writer && !h.detached && h.path == src { handles[id]!.path = dst }
            inodes[dst] = inodes.removeValue(forKey: src)
        } else {
            for key in keys(under: src) {
                let moved = dst + key.dropFirst(src.count)
                let data = objects[key]
                setObject(moved, data)
                setObject(key, nil)
                markReadersStale(key)
                markReadersStale(moved)
            }
            for (id, h) in handles where h.writer && !h.detached && RefModel.isInside(h.path, src) {
                handles[id]!.path = dst + h.path.dropFirst(src.count)
            }
            for (p, i) in inodes where RefModel.isInside(p, src) {
                inodes[p] = nil
                inodes[dst + p.dropFirst(src.count)] = i
            }
        }
        return .exactly(.ok)
    }
}
