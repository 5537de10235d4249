import CCurlShim
import Glibc
import S3

/// The local data cache (`--cache DIR`): blocks of objects read once, kept on local disk so the
/// next read of them costs no request, across remounts. An object's blocks live in one sparse
/// file named for the object (a hash of mount namespace and key), beside a small map file that
/// says which ETag and size they belong to and which blocks are present. A read names the ETag
/// the listing gave: a different one finds nothing (and drops the old blocks), so an object
/// changed in S3 is never served from here once a listing or open shows its new ETag. The maps are
/// written when a reader closes (after its data reached the disk); blocks cached by a reader open
/// during a crash are simply not known at the next mount. Least recently used objects are evicted
/// to keep the whole within `maxBytes`. A write that fails (a full disk) stops caching that object
/// and is counted: reads go to S3, never to an error.
public final class DataCache: @unchecked Sendable {
    static let blockSize = 1 << 20
    static let mapMagic = "s3mount-cache 1"

    let root: String
    let maxBytes: Int64
    private let namespace: [UInt8]

    struct Entry {
        var etag: String
        var size: Int64
        var present: [Bool]
        /// Ranges written into blocks not yet whole (block index -> ranges within the block).
        var partial: [Int: [Range<Int>]] = [:]
        var bytes: Int64 = 0
        var lastUse: UInt64 = 0
        var fd: Int32 = -1
        var dirty = false
        /// Moves on with every store: a map is written only for the blocks its sync covered.
        var generation: UInt64 = 0
        /// A write failed: nothing more is cached for this object this time.
        var broken = false
    }
    struct Counters {
        var hits = 0
        var misses = 0
        var bytesFromDisk: Int64 = 0
        var bytesWritten: Int64 = 0
        var evictions = 0
        var writeErrors = 0
    }
    private struct State {
        var entries: [String: Entry] = [:]
        var total: Int64 = 0
        var tick: UInt64 = 0
        var counters = Counters()
        var warnedFull = false
    }
    private let state = Locked(State())

    public struct SetupError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Held (flocked) for the life of the mount: one mount at a time uses a cache folder.
    private let lockFD: Locked<Int32>

    /// `namespace`: what tells this mount's objects apart from another bucket's in a shared
    /// directory (endpoint, bucket). The folder must be this user's and written by nobody else
    /// (its files are served as object bytes), and no other running mount may be using it: two
    /// mounts evicting each other's blocks would serve holes as zeros.
    public init(root: String, maxBytes: Int64, namespace: String) throws {
        self.root = root
        self.maxBytes = maxBytes
        self.namespace = Array(namespace.utf8) + [0]
        if let why = PrivateFolder.make(root, what: "cache directory") { throw SetupError(description: why) }
        if let why = PrivateFolder.make(root + "/objects", what: "cache directory") { throw SetupError(description: why) }
        guard let fd = OwnedFile.open(root + "/lock", O_RDWR | O_CREAT) else {
            throw SetupError(description: "cannot lock \(root)/lock: \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(fd)
            throw SetupError(description: "\(root) is in use by another running mount; give each mount a --cache of its own")
        }
        lockFD = Locked(fd)
        load()
        startFlusher()
    }

    /// At unmount: the maps written, the folder free for the next mount.
    public func close() {
        flush()
        lockFD.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    deinit { close() }

    var counters: Counters { state.withLock { $0.counters } }
    var bytesCached: Int64 { state.withLock { $0.total } }

    private func name(_ key: [UInt8]) -> String {
        hexString(Crypto.sha256(namespace + key))
    }
    private func dataPath(_ name: String) -> String { "\(root)/objects/\(name.prefix(2))/\(name)" }
    private func mapPath(_ name: String) -> String { dataPath(name) + ".map" }

    /// (Division first: a size near Int64.max must not overflow on the way.)
    static func blocks(_ size: Int64) -> Int { Int(size / Int64(blockSize) + (size % Int64(blockSize) > 0 ? 1 : 0)) }
    private static func blockRange(_ b: Int, _ size: Int64) -> Range<Int64> {
        Int64(b) * Int64(blockSize)..<min(size, Int64(b + 1) * Int64(blockSize))
    }

    /// The bytes of `range` when every block of it is here for this ETag; nil otherwise.
    func read(key: [UInt8], etag: String, size: Int64, range: Range<Int64>) -> [UInt8]? {
        guard !etag.isEmpty, !range.isEmpty, range.lowerBound >= 0, range.upperBound <= size else { return nil }
        let n = name(key)
        return state.withLock { s -> [UInt8]? in
            guard var e = s.entries[n] else { s.counters.misses += 1; return nil }
            if e.etag != etag || e.size != size {
                remove(&s, n)
                s.counters.misses += 1
                return nil
            }
            let first = Int(range.lowerBound / Int64(Self.blockSize)), last = Int((range.upperBound - 1) / Int64(Self.blockSize))
            guard (first...last).allSatisfy({ e.present[$0] }) else { s.counters.misses += 1; return nil }
            // The writer's descriptor while it is open, else one for this read (few stay open).
            let fd = e.fd >= 0 ? e.fd : OwnedFile.open(dataPath(n), O_RDONLY) ?? -1
            defer { if fd >= 0 && fd != e.fd { Glibc.close(fd) } }
            var out = [UInt8](repeating: 0, count: range.count)
            let got = fd < 0 ? -1 : out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, range.count, off_t(range.lowerBound)) }
            guard got == range.count else {
                Log.warning("data cache: \(Names.display(key)) could not be read back; dropped from the cache")
                s.entries[n] = e
                remove(&s, n)
                s.counters.misses += 1
                return nil
            }
            s.tick += 1
            e.lastUse = s.tick
            s.entries[n] = e
            s.counters.hits += 1
            s.counters.bytesFromDisk += Int64(range.count)
            return out
        }
    }

    /// Forgets what is kept of `key` (bytes that turned out wrong).
    func drop(key: [UInt8]) {
        let n = name(key)
        state.withLock { s in remove(&s, n) }
    }

    /// Whether every block of the object is here for this ETag.
    func contains(key: [UInt8], etag: String, size: Int64) -> Bool {
        let n = name(key)
        return state.withLock { s in
            guard let e = s.entries[n], e.etag == etag, e.size == size else { return false }
            return e.present.allSatisfy { $0 }
        }
    }

    /// Keeps `bytes`, found at `offset` of the object with this ETag; blocks become readable once
    /// all their bytes have been stored.
    func store(key: [UInt8], etag: String, size: Int64, offset: Int64, bytes: [UInt8]) {
        bytes.withUnsafeBytes { store(key: key, etag: etag, size: size, offset: offset, bytes: $0) }
    }

    func store(key: [UInt8], etag: String, size: Int64, offset: Int64, bytes: UnsafeRawBufferPointer) {
        // An object larger than the whole cache is not kept: its block map alone would cost memory
        // in proportion to a size the store (or anyone in between) chose.
        guard !etag.isEmpty, bytes.count > 0, size <= maxBytes, offset >= 0,
              let end = ObjectSize.end(offset: offset, length: bytes.count, limit: size) else { return }
        let n = name(key)
        state.withLock { s in
            if let old = s.entries[n], old.etag != etag || old.size != size { remove(&s, n) }
            var e = s.entries[n] ?? Entry(etag: etag, size: size, present: Array(repeating: false, count: Self.blocks(size)))
            if e.broken { return }
            let first = Int(offset / Int64(Self.blockSize)), last = Int((end - 1) / Int64(Self.blockSize))
            if (first...last).allSatisfy({ e.present[$0] }) { return }
            if e.fd < 0 {
                _ = mkdir("\(root)/objects/\(n.prefix(2))", 0o700)
                e.fd = OwnedFile.open(dataPath(n), O_RDWR | O_CREAT) ?? -1
            }
            var written = e.fd < 0 ? -1 : 0
            while written >= 0 && written < bytes.count {
                let w = pwrite(e.fd, bytes.baseAddress! + written, bytes.count - written, off_t(offset) + off_t(written))
                if w <= 0 { written = -1 } else { written += w }
            }
            if written < 0 {
                let err = errno
                e.broken = true
                s.entries[n] = e
                s.counters.writeErrors += 1
                if !s.warnedFull {
                    s.warnedFull = true
                    Log.warning("data cache: writing to \(root) failed (\(String(cString: strerror(err)))); reading from S3 instead")
                }
                return
            }
            s.counters.bytesWritten += Int64(bytes.count)
            for b in first...last where !e.present[b] {
                let br = Self.blockRange(b, size)
                let lo = Int(max(offset, br.lowerBound) - br.lowerBound), hi = Int(min(end, br.upperBound) - br.lowerBound)
                var ranges = e.partial[b, default: []]
                ranges.append(lo..<hi)
                ranges = Self.merged(ranges)
                if ranges.count == 1 && ranges[0] == 0..<br.count {
                    e.present[b] = true
                    e.partial[b] = nil
                    e.bytes += Int64(br.count)
                    s.total += Int64(br.count)
                } else {
                    e.partial[b] = ranges
                }
            }
            s.tick += 1
            e.lastUse = s.tick
            e.dirty = true
            e.generation += 1
            s.entries[n] = e
            if s.total > maxBytes { evict(&s, keeping: n) }
        }
    }

    static func merged(_ ranges: [Range<Int>]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let l = out.last, r.lowerBound <= l.upperBound {
                out[out.count - 1] = l.lowerBound..<max(l.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }

    /// Writes the maps of objects whose blocks changed, after their data reached the disk (the
    /// syncs run outside the lock), so the next mount finds them. Runs every few seconds and at
    /// unmount.
    public func flush() {
        let work = state.withLock { s -> [(String, UInt64, Int32)] in
            s.entries.compactMap { n, e in
                guard e.dirty, !e.broken, e.fd >= 0 else { return nil }
                return (n, e.generation, dup(e.fd))
            }
        }
        for (_, _, fd) in work where fd >= 0 { fdatasync(fd); Glibc.close(fd) }
        state.withLock { s in
            for (n, generation, fd) in work where fd >= 0 {
                guard var e = s.entries[n], e.generation == generation, !e.broken else { continue }
                var text = Array("\(Self.mapMagic)\n\(e.etag)\n\(e.size)\n".utf8)
                text += e.present.map { $0 ? 0x31 : 0x30 }
                let tmp = mapPath(n) + ".tmp"
                let out = OwnedFile.open(tmp, O_WRONLY | O_CREAT | O_TRUNC) ?? -1
                let ok = out >= 0 && text.withUnsafeBytes { Glibc.write(out, $0.baseAddress, $0.count) } == text.count
                if out >= 0 { Glibc.close(out) }
                if !ok || rename(tmp, mapPath(n)) != 0 {
                    unlink(tmp)
                    s.counters.writeErrors += 1
                    continue
                }
                // Few descriptors stay open: the next use opens the file again.
                Glibc.close(e.fd)
                e.fd = -1
                e.dirty = false
                s.entries[n] = e
            }
        }
    }

    private func startFlusher() {
        Thread { [weak self] in
            s3m_set_thread_name("s3m-cacheflush")
            while true {
                sleep(3)
                guard let self else { return }
                self.flush()
            }
        }.start()
    }

    /// Evicts the least recently used objects (not `keeping`) until the cache is within 90 % of
    /// its bound.
    private func evict(_ s: inout State, keeping: String) {
        let target = maxBytes / 10 * 9
        let order = s.entries.filter { $0.key != keeping }.sorted { $0.value.lastUse < $1.value.lastUse }.map { $0.key }
        for n in order {
            if s.total <= target { break }
            remove(&s, n)
            s.counters.evictions += 1
        }
    }

    private func remove(_ s: inout State, _ n: String) {
        guard let e = s.entries.removeValue(forKey: n) else { return }
        if e.fd >= 0 { Glibc.close(e.fd) }
        unlink(mapPath(n))
        unlink(dataPath(n))
        s.total -= e.bytes
    }

    /// Reads the maps of earlier mounts; maps without data, and data without maps, go.
    private func load() {
        guard let top = opendir(root + "/objects") else { return }
        defer { closedir(top) }
        var loaded: [(String, Entry, Double)] = []
        while let d = readdir(top) {
            let sub = withUnsafeBytes(of: d.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            // Two hex digits ("..", also two characters, is the cache's own folder).
            guard sub.count == 2, sub.allSatisfy(\.isHexDigit), let inner = opendir("\(root)/objects/\(sub)") else { continue }
            while let f = readdir(inner) {
                let file = withUnsafeBytes(of: f.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if file.hasPrefix(".") { continue }
                let path = "\(root)/objects/\(sub)/\(file)"
                if file.hasSuffix(".map.tmp") { unlink(path); continue }
                guard file.hasSuffix(".map") else {
                    if access(path + ".map", F_OK) != 0 { unlink(path) }
                    continue
                }
                let n = String(file.dropLast(4))
                var st = stat()
                guard let e = parseMap(path), lstat(dataPath(n), &st) == 0, st.st_mode & S_IFMT == S_IFREG else { unlink(path); continue }
                loaded.append((n, e, Double(st.st_mtim.tv_sec)))
            }
            closedir(inner)
        }
        state.withLock { s in
            // Recency across mounts: the data files' modification times.
            for (n, var e, _) in loaded.sorted(by: { $0.2 < $1.2 }) {
                s.tick += 1
                e.lastUse = s.tick
                s.entries[n] = e
                s.total += e.bytes
            }
            if s.total > maxBytes { evict(&s, keeping: "") }
        }
    }

    private func parseMap(_ path: String) -> Entry? {
        guard let fd = OwnedFile.open(path, O_RDONLY) else { return nil }
        defer { Glibc.close(fd) }
        // A map of the largest object the cache keeps has maxBytes / 1 MiB flags.
        guard let bytes = readRegularFile(fd, maxBytes: 4096 + Self.blocks(maxBytes)) else { return nil }
        return Self.parseMap(bytes, maxBytes: maxBytes)
    }

    /// A map file's entry, or nil when it is not one this cache wrote for an object it keeps.
    static func parseMap(_ bytes: [UInt8], maxBytes: Int64) -> Entry? {
        let lines = bytes.split(separator: 0x0A, maxSplits: 3, omittingEmptySubsequences: false)
        guard lines.count == 4, String(decoding: lines[0], as: UTF8.self) == Self.mapMagic,
              let size = ObjectSize.listed(String(decoding: lines[2], as: UTF8.self)), size > 0, size <= maxBytes else { return nil }
        let etag = String(decoding: lines[1], as: UTF8.self)
        let flags = Array(lines[3])
        guard flags.count == Self.blocks(size), !etag.isEmpty else { return nil }
        var e = Entry(etag: etag, size: size, present: flags.map { $0 == 0x31 })
        for b in 0..<flags.count where e.present[b] { e.bytes += Int64(Self.blockRange(b, size).count) }
        return e
    }
}

