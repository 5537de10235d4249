import Glibc
import S3

/// Walks that read ahead: `grep -r`, `tar c`, `rsync` and `cp -r` from the mount, and data
/// loaders, open the files of a directory one after another in listing order, each paying a
/// request's latency. When two files of a directory are opened in that order, the next
/// `window` files (each at most `maxSize` bytes) are fetched whole on the read pool, and the open
/// of each takes its bytes instead of asking S3. Nothing is fetched beyond the window ahead of
/// the walk, so a walk that stops wastes at most the window; files the walk passed without
/// opening are dropped (counted as unused).
final class WalkPrefetch: @unchecked Sendable {
    let window: Int
    let maxSize: Int64
    private unowned let fs: Filesystem

    /// One file fetched ahead: its bytes once they arrived. Fields are guarded by `cond`.
    final class Fetch: @unchecked Sendable {
        let etag: String
        let position: Int
        let cond = Condition()
        var bytes: [UInt8]? = nil
        var done = false
        init(etag: String, position: Int) { self.etag = etag; self.position = position }
    }
    /// Per directory: the furthest position opened, when, and every position opened (never
    /// fetched ahead: a reader has it already).
    private struct Walk { var lastPosition: Int; var at: Double; var opened: Set<Int> = [] }
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

    /// A file of `dir` is being opened for reading: its bytes when they were fetched ahead (waiting
    /// for a fetch under way), after noting the walk and fetching the next files of its window.
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
        guard mine.etag == etag, let bytes = mine.bytes, Int64(bytes.count) == size else { return nil }
        state.withLock { $0.used += 1 }
        return bytes
    }

    /// Starts fetches for the files after the walk's furthest position in `dir`'s listing order,
    /// up to the window.
    private func fetchAhead(dir: [UInt8]) {
        let limit = maxSize
        guard let front = state.withLock({ $0.walks[dir]?.lastPosition }) else { return }
        let next = fs.state.withLock { s -> [([UInt8], CachedEntry, Int)] in
            s.attrs.entries(dir: dir, from: front + 1, count: window, accept: { $0.kind == .file && $0.size > 0 && $0.size <= limit && !$0.etag.isEmpty })
        }
        let shared = fs.reads
        let started = state.withLock { s -> [([UInt8], CachedEntry, Fetch)] in
            var out: [([UInt8], CachedEntry, Fetch)] = []
            for (n, e, position) in next {
                let key = Names.entryKey(dirPath: dir, name: n)
                guard s.fetches[key] == nil, s.walks[dir]?.opened.contains(position) != true, shared.cache?.contains(key: key, etag: e.etag, size: e.size) != true else { continue }
                let f = Fetch(etag: e.etag, position: position)
                s.fetches[key] = (dir, f)
                s.prefetched += 1
                out.append((key, e, f))
            }
            return out
        }
        for (key, e, f) in started {
            shared.pool.submit {
                let bytes = try? FileReader.fetch(shared, key: key, etag: e.etag, size: e.size, range: 0..<e.size)
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
