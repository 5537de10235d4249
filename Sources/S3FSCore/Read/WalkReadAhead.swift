import Glibc
import S3

/// Walks that read ahead: `grep -r`, `tar c`, `rsync` and `cp -r` from the mount, and data
/// loaders, open the files of a directory one after another in listing order, each paying a
/// request's latency. When two files of a directory are opened in that order, the next
/// `window` files (each at most `maxSize` bytes) are fetched whole on the read pool, and the open
/// of each takes its bytes instead of asking S3. Nothing is fetched beyond the window ahead of
/// the walk, so a walk that stops wastes at most the window; files the walk passed without
/// opening are dropped (counted as unused).
///
/// Programs that only sniff (a file manager guessing types, `head -c`, `file` on big files,
/// thumbnailers of small images) read the first bytes of each file and close it. Once a file of
/// the walk larger than `headSize` was closed having been read no further than that, the walk is
/// a sniffing one: its files are fetched ahead as their first `headSize` bytes only (a ranged GET,
/// whatever the file's size), and an open that is not fetched ahead reads only that much first.
/// A file read further goes on with a stream from there; one read whole turns the walk back.
final class WalkPrefetch: @unchecked Sendable {
    static let headSize: Int64 = 64 << 10
    let window: Int
    let maxSize: Int64
    private unowned let fs: Filesystem

    enum Mode { case whole, head }

    /// One file fetched ahead: its bytes once they arrived. Fields are guarded by `cond`.
    final class Fetch: @unchecked Sendable {
        let etag: String
        let position: Int
        /// Bytes asked for from the start: the whole object, or its head.
        let length: Int64
        let cond = Condition()
        var bytes: [UInt8]? = nil
        var done = false
        init(etag: String, position: Int, length: Int64) { self.etag = etag; self.position = position; self.length = length }
    }
    /// Per directory: the furthest position opened, when, and every position opened (never
    /// fetched ahead: a reader has it already).
    private struct Walk { var lastPosition: Int; var at: Double; var opened: Set<Int> = []; var mode = Mode.whole }
    private struct State {
        var walks: [[UInt8]: Walk] = [:]
        /// By key; each belongs to the directory whose walk asked for it.
        var fetches: [[UInt8]: (dir: [UInt8], fetch: Fetch)] = [:]
        var prefetched = 0
        var used = 0
        var unused = 0
    }
    private let state = Locked(State())
    /// Seconds after which a directory's walk is forgotten (and what it fetched dropped).
    static let walkTimeout: Double = 10

    init(fs: Filesystem, window: Int, maxSize: Int64) {
        self.fs = fs
        self.window = window
        self.maxSize = maxSize
    }

    var prefetched: Int { state.withLock { $0.prefetched } }
    var used: Int { state.withLock { $0.used } }
    var unused: Int { state.withLock { $0.unused } }

    /// Whether reads in `dir` are sniffing ones now: a file opened there reads its head first.
    func mode(dir: [UInt8]) -> Mode {
        let t = monotonicSeconds()
        return state.withLock { s in s.walks[dir].flatMap { t - $0.at < Self.walkTimeout ? $0.mode : nil } ?? .whole }
    }

    /// A file of `dir` was closed after reads up to `readTo`: evidence of what the walk does.
    func closed(dir: [UInt8], size: Int64, readTo: Int64) {
        guard window > 0, size > Self.headSize else { return }
        state.withLock { s in
            guard s.walks[dir] != nil else { return }
            if readTo <= Self.headSize { s.walks[dir]!.mode = .head } else if readTo >= size { s.walks[dir]!.mode = .whole }
        }
    }

    /// A file of `dir` is being opened for reading: its bytes when they were fetched ahead (waiting
    /// for a fetch under way) — the whole object, or its first bytes in a sniffing walk — after
    /// noting the walk and fetching the next files of its window.
    func opened(dir: [UInt8], name: [UInt8], key: [UInt8], etag: String, size: Int64) -> [UInt8]? {
        guard window > 0 else { return nil }
        let t = monotonicSeconds()
        guard let position = fs.state.withLock({ $0.attrs.position(dir: dir, name: name) }) else { return nil }
        let (mine, isWalk) = state.withLock { s -> (Fetch?, Bool) in
            let mine = s.fetches.removeValue(forKey: key)?.fetch
            let last = s.walks[dir].flatMap { t - $0.at < Self.walkTimeout ? $0 : nil }
            var walk = last ?? Walk(lastPosition: position, at: t)
            walk.lastPosition = max(walk.lastPosition, position)
            walk.at = t
            walk.opened.insert(position)
            s.walks[dir] = walk
            // Files of this directory the walk went well past without opening them: wasted. (Parallel
            // readers open in roughly, not exactly, listing order.)
            let passed = s.fetches.filter { $0.value.dir == dir && $0.value.fetch.position < walk.lastPosition - window }
            for k in passed.keys { s.fetches[k] = nil }
            s.unused += passed.count
            if s.walks.count > 256 { s.walks = s.walks.filter { t - $0.value.at < Self.walkTimeout } }
            let inOrder = last.map { position > $0.lastPosition } ?? false
            return (mine, mine != nil || inOrder)
        }
        if isWalk { fetchAhead(dir: dir) }
        guard let mine else { return nil }
        mine.cond.wait(until: { mine.done })
        guard mine.etag == etag, let bytes = mine.bytes, Int64(bytes.count) == min(size, mine.length) else { return nil }
        state.withLock { $0.used += 1 }
        return bytes
    }

    /// Starts fetches for the files after the walk's furthest position in `dir`'s listing order,
    /// up to the window.
    private func fetchAhead(dir: [UInt8]) {
        guard let walk = state.withLock({ $0.walks[dir] }) else { return }
        let limit = walk.mode == .head ? Int64.max : maxSize
        let next = fs.state.withLock { s -> [([UInt8], CachedEntry, Int)] in
            s.attrs.entries(dir: dir, from: walk.lastPosition + 1, count: window, accept: { $0.kind == .file && $0.size > 0 && $0.size <= limit && !$0.etag.isEmpty })
        }
        let shared = fs.reads
        let started = state.withLock { s -> [([UInt8], CachedEntry, Fetch)] in
            var out: [([UInt8], CachedEntry, Fetch)] = []
            for (n, e, position) in next {
                let key = Names.entryKey(dirPath: dir, name: n)
                guard s.fetches[key] == nil, s.walks[dir]?.opened.contains(position) != true, shared.cache?.contains(key: key, etag: e.etag, size: e.size) != true else { continue }
                let f = Fetch(etag: e.etag, position: position, length: walk.mode == .head ? min(e.size, Self.headSize) : e.size)
                s.fetches[key] = (dir, f)
                s.prefetched += 1
                out.append((key, e, f))
            }
            return out
        }
        for (key, e, f) in started {
            shared.pool.submit {
                let bytes = try? FileReader.fetch(shared, key: key, etag: e.etag, size: e.size, range: 0..<f.length)
                f.cond.broadcast { f.bytes = bytes; f.done = true }
            }
        }
    }

    /// Forgets walks and fetched files older than the timeout (called by the cache sweep).
    func sweep(at t: Double) {
        state.withLock { s in
            s.walks = s.walks.filter { t - $0.value.at < Self.walkTimeout }
            let stale = s.fetches.filter { s.walks[$0.value.dir] == nil }
            for k in stale.keys { s.fetches[k] = nil }
            s.unused += stale.count
        }
    }
}
