import Glibc
import S3

/// Walks that read ahead: `grep -r`, `tar c`, `rsync` and `cp -r` from the mount, and data
/// loaders, open the files of a directory one after another in listing order (Thunar in reverse
/// order), each paying a request's latency. When two files of a directory are opened in that
/// order (or its reverse), the next `window` files of the extensions the walk opens are fetched
/// on the read pool, and the open of each takes its bytes instead of asking S3. Nothing is
/// fetched beyond the window ahead of the walk, so a walk that stops wastes at most the window;
/// files the walk passed without opening are dropped (counted as unused).
///
/// Programs that only sniff (a file manager guessing types, `head -c`, `file` on big files,
/// thumbnailers of small images) read the first bytes of each file and close it. What the walk
/// did with the last closed file of an extension decides for the others: read no further than
/// `headSize` (of a larger file), they are fetched ahead as their first `headSize` bytes only (a
/// ranged GET, whatever the file's size), and an open that is not fetched ahead reads only that
/// much first; read whole, they are fetched whole (at most `maxSize` bytes). Until one was closed,
/// files larger than `headSize` are fetched as heads. A reader that goes on past a head streams
/// from there.
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
        /// An open took it (guarded by the walk state's lock).
        var taken = false
        init(etag: String, position: Int, length: Int64) { self.etag = etag; self.position = position; self.length = length }
    }
    /// Per directory: the position opened last, the walk's direction (Thunar goes through a folder
    /// from its end) and the furthest position reached that way, when, every position opened
    /// (never fetched ahead: a reader has it already), and whether the walk sniffs.
    private struct Walk {
        var last: Int
        var direction = 0
        var front: Int
        var at: Double
        var opened: Set<Int> = []
        /// What the walk does with files of each extension (.py sniffed, .png read whole for a
        /// thumbnail), from files closed so far.
        var modes: [[UInt8]: Mode] = [:]
        var sniffs: Bool { modes.values.contains(.head) }
        func mode(of name: [UInt8]) -> Mode { modes[WalkPrefetch.extensionOf(name)] ?? .whole }
        /// What to fetch ahead of a file: whole when files like it were read whole (or it is no
        /// larger than a head), else its head — until a file of its kind was closed, a program
        /// whose threads open many at once (PCManFM) would otherwise get whole files it sniffs.
        func fetchLength(of name: [UInt8], size: Int64) -> Int64 {
            modes[WalkPrefetch.extensionOf(name)] == .whole ? size : min(size, WalkPrefetch.headSize)
        }
        /// Name extensions of the files opened: a file manager opens only the types it cannot tell
        /// by name (.py to sniff, images for thumbnails), so only those are fetched ahead.
        var extensions: Set<[UInt8]> = []
        /// Files fetched ahead that this walk took, and that it went past.
        var used = 0
        var wasted = 0
        /// Positions the window covers next.
        func ahead(_ n: Int) -> Range<Int> { direction < 0 ? max(0, front - n)..<front : front + 1..<front + 1 + n }
        /// Whether a position fetched ahead lies so far behind the front that the walk passed it.
        func passed(_ p: Int, _ n: Int) -> Bool { direction < 0 ? p > front + n : p < front - n }
    }
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

    /// Positions fetched ahead: the window, four times over for a sniffing walk (heads are small,
    /// 64 KiB each, and a file manager sniffs a folder's files as fast as they come).
    /// A walk that lets more fetched files go unused than it takes (a file manager making thumbnails
    /// only of what is on screen, then jumping) keeps the plain window.
    private func span(_ w: Walk) -> Int { w.sniffs && w.wasted * 2 <= w.used ? 4 * window : window }

    /// Whether reads of files like `name` in `dir` are sniffing ones now: such a file reads its
    /// head first.
    func mode(dir: [UInt8], name: [UInt8]) -> Mode {
        let t = monotonicSeconds()
        return state.withLock { s in s.walks[dir].flatMap { t - $0.at < Self.walkTimeout ? $0.mode(of: name) : nil } ?? .whole }
    }

    /// A file of `dir` was closed after reads up to `readTo`: evidence of what the walk does with
    /// files of its extension.
    func closed(dir: [UInt8], name: [UInt8], size: Int64, readTo: Int64) {
        guard window > 0, size > Self.headSize else { return }
        let ext = Self.extensionOf(name)
        state.withLock { s in
            guard s.walks[dir] != nil else { return }
            if readTo <= Self.headSize { s.walks[dir]!.modes[ext] = .head } else if readTo >= size { s.walks[dir]!.modes[ext] = .whole }
        }
    }

    /// A file of `dir` is being opened for reading: its bytes when they were fetched ahead (waiting
    /// for a fetch under way) — the whole object, or its first bytes in a sniffing walk — after
    /// noting the walk and fetching the next files of its window.
    func opened(dir: [UInt8], name: [UInt8], key: [UInt8], etag: String, size: Int64) -> [UInt8]? {
        guard window > 0 else { return nil }
        let t = monotonicSeconds()
        guard let position = fs.state.withLock({ $0.attrs.position(dir: dir, name: name) }) else { return nil }
        let (mine, isWalk, firstTake) = state.withLock { s -> (Fetch?, Bool, Bool) in
            // Kept for a second open of the same file (PCManFM opens each twice), until the walk
            // passes it.
            let mine = s.fetches[key]?.fetch
            let firstTake = mine.map { !$0.taken } ?? false
            mine?.taken = true
            let last = s.walks[dir].flatMap { t - $0.at < Self.walkTimeout ? $0 : nil }
            var walk = last ?? Walk(last: position, front: position, at: t)
            // The next position in either direction, a few skipped at most (directories, files
            // opened by another thread a moment later), continues the walk.
            // Several threads of one program (PCManFM) open files a little out of order: a step
            // back within the window is jitter, not a turn.
            let step = position - walk.last
            let reach = 2 * span(walk)
            let inOrder = last != nil && step != 0 && abs(step) <= reach
            if inOrder {
                let direction = step > 0 ? 1 : -1
                if walk.direction == 0 || (direction != walk.direction && abs(position - walk.front) > span(walk)) {
                    walk.direction = direction
                    walk.front = position
                }
                walk.front = walk.direction > 0 ? max(walk.front, position) : min(walk.front, position)
            }
            walk.last = position
            walk.at = t
            walk.opened.insert(position)
            walk.extensions.insert(Self.extensionOf(name))
            if firstTake { walk.used += 1 }
            // Files of this directory the walk went well past without opening them: wasted. (Parallel
            // readers open in roughly, not exactly, listing order: 16 threads of one program are
            // up to 16 positions apart, so what is dropped lies four windows behind.)
            let passed = s.fetches.filter { $0.value.dir == dir && walk.passed($0.value.fetch.position, 4 * span(walk)) }
            for k in passed.keys { s.fetches[k] = nil }
            let wasted = passed.values.filter { !$0.fetch.taken }.count
            s.unused += wasted
            walk.wasted += wasted
            s.walks[dir] = walk
            if s.walks.count > 256 { s.walks = s.walks.filter { t - $0.value.at < Self.walkTimeout } }
            return (mine, mine != nil || inOrder, firstTake)
        }
        if isWalk { fetchAhead(dir: dir) }
        guard let mine else { return nil }
        mine.cond.wait(until: { mine.done })
        guard mine.etag == etag, let bytes = mine.bytes, Int64(bytes.count) == min(size, mine.length) else { return nil }
        if firstTake { state.withLock { $0.used += 1 } }
        return bytes
    }

    /// Starts fetches for the files ahead of the walk's front in its direction, up to the window.
    private func fetchAhead(dir: [UInt8]) {
        guard let walk = state.withLock({ $0.walks[dir] }), walk.direction != 0 else { return }
        // Up to `span` files of the extensions the walk opens, looked for within 4 x span positions:
        // heads of files of a sniffed extension, whole files up to `maxSize` of the others. Not
        // archived objects: S3 refuses their bytes until restored.
        let range = walk.ahead(4 * span(walk))
        var next = fs.state.withLock { s -> [([UInt8], CachedEntry, Int)] in
            s.attrs.entries(dir: dir, from: range.lowerBound, count: range.count, accept: { $0.kind == .file && $0.size > 0 && !$0.etag.isEmpty && !$0.isArchived })
        }.filter { walk.extensions.contains(Self.extensionOf($0.0)) && (walk.mode(of: $0.0) == .head || $0.1.size <= maxSize) }
        if walk.direction < 0 { next.reverse() }
        next = Array(next.prefix(span(walk)))
        let shared = fs.reads
        let started = state.withLock { s -> [([UInt8], CachedEntry, Fetch)] in
            var out: [([UInt8], CachedEntry, Fetch)] = []
            for (n, e, position) in next {
                let key = Names.entryKey(dirPath: dir, name: n)
                guard s.fetches[key] == nil, s.walks[dir]?.opened.contains(position) != true, shared.cache?.contains(key: key, etag: e.etag, size: e.size) != true else { continue }
                let f = Fetch(etag: e.etag, position: position, length: walk.fetchLength(of: n, size: e.size))
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

    /// What follows the last dot of a name ("" for none, or a name that starts with its only dot).
    static func extensionOf(_ name: [UInt8]) -> [UInt8] {
        guard let dot = name.lastIndex(of: 0x2E), dot > 0 else { return [] }
        return Array(name[(dot + 1)...])
    }

    /// Forgets walks and fetched files older than the timeout (called by the cache sweep).
    func sweep(at t: Double) {
        state.withLock { s in
            s.walks = s.walks.filter { t - $0.value.at < Self.walkTimeout }
            let stale = s.fetches.filter { s.walks[$0.value.dir] == nil }
            for k in stale.keys { s.fetches[k] = nil }
            // Only those no open took were wasted (a taken one stays for a second open).
            s.unused += stale.values.filter { !$0.fetch.taken }.count
        }
    }
}
