import S3

/// `--metadata head`: HeadObject requests for entries no metadata index covers (a bucket written
/// by s3fs or rclone), sent only for names a program looks up, and in parallel: `ls -l` stats one
/// name after the other, so when one needs its headers, the next `window` names of its directory
/// (in listing order) that need them too are asked for at once, `parallel` at a time.
final class HeadPrefetch: @unchecked Sendable {
    unowned let fs: Filesystem
    let window = 32
    let parallel = 8

    struct State {
        /// Keys whose HeadObject is on the wire.
        var inFlight = Set<[UInt8]>()
        /// Names queued for prefetching, per directory, and the threads working on the queue.
        var queue: [([UInt8], [UInt8])] = []
        var workers = 0
        /// Per directory: the listing order, taken once per complete listing, and how far
        /// prefetching has gone in it.
        var order: [[UInt8]: (listedAt: Double, names: [[UInt8]], upTo: Int)] = [:]
    }
    let state = Locked(State())
    let cond = Condition()

    init(fs: Filesystem) { self.fs = fs }

    /// Claims `key`; false when another thread was reading it (returns once that one is done).
    func begin(_ key: [UInt8]) -> Bool {
        var waited = false
        cond.wait(until: {
            state.withLock { s in
                if s.inFlight.contains(key) { waited = true; return false }
                if !waited { s.inFlight.insert(key) }
                return true
            }
        })
        return !waited
    }

    func end(_ key: [UInt8]) {
        cond.broadcast { state.withLock { s in _ = s.inFlight.remove(key) } }
    }

    /// Queues the names after `name` in `dir`'s complete listing that still need their headers.
    func ahead(of name: [UInt8], in dir: [UInt8]) {
        let listed: (Double, [([UInt8], CachedEntry)])? = fs.state.withLock { s in
            guard let at = s.attrs.listedAt(dir) else { return nil }
            if let o = state.withLock({ $0.order[dir] }), o.listedAt == at { return (at, []) }
            return s.attrs.completeEntries(dir).map { (at, $0) }
        }
        guard let (listedAt, fresh) = listed else { return }
        var start = 0, names: [[UInt8]] = []
        state.withLock { s in
            if !fresh.isEmpty || s.order[dir]?.listedAt != listedAt {
                s.order[dir] = (listedAt, fresh.filter { $0.1.kind == .file }.map { $0.0 }, 0)
            }
            let o = s.order[dir]!
            guard let i = o.names.firstIndex(of: name) else { return }
            start = max(i + 1, o.upTo)
            let end = min(o.names.count, i + 1 + window)
            if start < end { names = Array(o.names[start..<end]) }
            s.order[dir]!.upTo = max(o.upTo, end)
        }
        let wanted = names.filter { n in
            fs.state.withLock { s in s.attrs[dir: dir, name: n] }.map { fs.needsHeaders(dir: dir, name: n, $0) } ?? false
        }
        guard !wanted.isEmpty else { return }
        let start2 = state.withLock { s -> Int in
            s.queue += wanted.map { (dir, $0) }
            let more = min(parallel - s.workers, s.queue.count)
            s.workers += max(0, more)
            return max(0, more)
        }
        for _ in 0..<start2 {
            Pools.heads.submit { [self] in
                while let (d, n) = state.withLock({ s -> ([UInt8], [UInt8])? in
                    if s.queue.isEmpty { s.workers -= 1; return nil }
                    return s.queue.removeFirst()
                }) {
                    fs.learnHeaders(dir: d, name: n)
                }
            }
        }
    }
}
