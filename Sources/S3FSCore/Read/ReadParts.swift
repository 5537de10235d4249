import Glibc
import S3

/// What every reader of the mount shares: the pool that fetches parts, the memory they may hold,
/// what the first streams taught about the link, the data cache and the counters.
final class ReadShared: @unchecked Sendable {
    let store: ObjectStore
    /// Largest ranged GET of a parallel reader.
    let partSize: Int
    /// Parts one reader keeps in flight at most.
    let concurrency: Int
    /// A stream slower than this (bytes/s, measured while it was not waiting for the reader) means
    /// one connection is capped below what the machine can take: parallel parts pay.
    let parallelBelow: Double
    /// A stream of a whole object checks the CRC-32 S3 keeps for it (`--no-verify-reads`: not).
    let verify: Bool
    let pool: WorkerPool
    let memory: MemoryBudget
    let cache: DataCache?
    /// What the link showed: nil until a stream was measured. A slow link makes later readers start
    /// with parallel parts at once; a fast one keeps them on one stream.
    let linkSlow = Locked<(slow: Bool, at: Double)?>(nil)
    let recent = RecentPrefixes()
    let counters = Locked(ReadCounters())

    init(store: ObjectStore, options: FSOptions, cache: DataCache?) {
        self.store = store
        partSize = max(1 << 20, options.readPartSize)
        concurrency = max(1, options.readConcurrency)
        parallelBelow = options.parallelBelowBytesPerSecond
        verify = options.verifyReads
        pool = WorkerPool(name: "s3m-read", maxThreads: max(4, options.readThreads), bulk: true)
        memory = MemoryBudget(limit: options.maxReadMemory)
        self.cache = cache
    }

    /// Bytes a sequential reader that starts with parts keeps ahead at first (doubling as it reads).
    static let firstWindow = 4 << 20
    var maxWindow: Int { partSize * concurrency }
}

/// The first bytes of objects read in the last seconds (whole small objects, heads), for the next
/// open of the same file: a file manager opens a file to sniff its type and again to draw its
/// thumbnail, `file` then `cat`. Bounded in bytes and age; an ETag that differs finds nothing.
final class RecentPrefixes: @unchecked Sendable {
    static let maxBytes = 32 << 20
    static let maxPrefix = 1 << 20
    static let lifetime: Double = 10
    private struct Entry { var etag: String; var bytes: [UInt8]; var at: Double }
    private struct State { var entries: [[UInt8]: Entry] = [:]; var order: [[UInt8]] = []; var total = 0; var hits = 0 }
    private let state = Locked(State())

    var hits: Int { state.withLock { $0.hits } }

    func keep(key: [UInt8], etag: String, prefix: [UInt8]) {
        guard !etag.isEmpty, !prefix.isEmpty, prefix.count <= Self.maxPrefix else { return }
        let t = monotonicSeconds()
        state.withLock { s in
            if let old = s.entries[key] {
                if old.etag == etag && old.bytes.count >= prefix.count { return }
                s.total -= old.bytes.count
                s.order.removeAll { $0 == key }
            }
            s.entries[key] = Entry(etag: etag, bytes: prefix, at: t)
            s.order.append(key)
            s.total += prefix.count
            while s.total > Self.maxBytes || (s.order.first.flatMap { s.entries[$0] }.map { t - $0.at > Self.lifetime } ?? false) {
                let k = s.order.removeFirst()
                s.total -= s.entries.removeValue(forKey: k)?.bytes.count ?? 0
            }
        }
    }

    func prefix(key: [UInt8], etag: String) -> [UInt8]? {
        let t = monotonicSeconds()
        return state.withLock { s in
            guard let e = s.entries[key], e.etag == etag, t - e.at <= Self.lifetime else { return nil }
            s.hits += 1
            return e.bytes
        }
    }
}

struct ReadCounters {
    var partsFetched = 0
    var partBytes: Int64 = 0
    var parallelReaders = 0
    var streamReaders = 0
    var partRetries = 0
}

/// Bytes of read buffers the whole mount may hold (parts in flight and waiting to be read): a
/// reader that cannot reserve more keeps fewer parts in flight, never fewer than one.
final class MemoryBudget: @unchecked Sendable {
    let limit: Int
    private let used = Locked(0)
    init(limit: Int) { self.limit = limit }

    func reserve(_ n: Int, force: Bool) -> Bool {
        used.withLock { u in
            guard force || u + n <= limit else { return false }
            u += n
            return true
        }
    }
    func release(_ n: Int) { used.withLock { $0 -= n } }
    var inUse: Int { used.withLock { $0 } }
}

/// One ranged GET of [start, end) into a buffer of its own, read by the reader while it fills.
/// Fields below `buffer` are guarded by the owning window's condition.
final class ReadPart: @unchecked Sendable {
    let start: Int64
    let end: Int64
    let buffer: UnsafeMutableRawPointer
    var received = 0
    /// Bytes handed to readers so far; a part read whole is dropped.
    var served = 0
    /// Set when the GET ended (whole, failed or stopped), with `failure` when it is short.
    var fetchDone = false
    var failure: FSError? = nil
    /// The reader no longer wants it: the fetch stops, and whoever finishes last frees the buffer.
    var dropped = false
    /// Bytes a waiting reader needs before it is worth waking (Int.max: nobody waits).
    var wanted = Int.max

    init(start: Int64, end: Int64) {
        self.start = start
        self.end = end
        buffer = .allocate(byteCount: Int(end - start), alignment: 16)
    }
    var length: Int { Int(end - start) }
}

/// The parallel reading of one sequential reader: ranged parts ahead of it, fetched on the
/// mount's read pool, in a window that starts small and doubles as the reader consumes parts (up
/// to concurrency x part size), each part carrying the ETag the file was opened with. Reads wait
/// only for the bytes they need, not for whole parts. `parts` and the window are touched under
/// the FileReader's lock; part fields under `cond`.
final class PartWindow: @unchecked Sendable {
    let shared: ReadShared
    let key: [UInt8]
    let etag: String
    let size: Int64
    let cond = Condition()
    private(set) var parts: [ReadPart] = []
    /// End of the last part scheduled.
    private(set) var nextStart: Int64
    private var window: Int

    init(shared: ReadShared, key: [UInt8], etag: String, size: Int64, from: Int64, window: Int) {
        self.shared = shared
        self.key = key
        self.etag = etag
        self.size = size
        nextStart = from
        self.window = min(window, shared.maxWindow)
        shared.counters.withLock { $0.parallelReaders += 1 }
    }

    var firstStart: Int64 { parts.first?.start ?? nextStart }

    /// Starts parts until the window ahead of `readTo` is scheduled (and at least `mustReach`),
    /// within the per-reader concurrency and the mount's memory.
    func schedule(readTo: Int64, mustReach: Int64) {
        while nextStart < size {
            let inFlight = cond.locked { parts.filter { !$0.fetchDone }.count }
            let needed = nextStart < mustReach
            if !needed && (nextStart >= readTo + Int64(window) || inFlight >= shared.concurrency) { break }
            let length = Int(min(Int64(partLength), size - nextStart))
            // Over the mount's bound, a reader with nothing ahead of it still gets one part.
            let hasAhead = parts.contains { $0.end > readTo }
            guard shared.memory.reserve(length, force: needed || !hasAhead) else { break }
            let part = ReadPart(start: nextStart, end: nextStart + Int64(length))
            parts.append(part)
            nextStart = part.end
            shared.pool.submit { [self] in fetch(part) }
        }
    }

    /// A quarter of the window, between 1 MiB and the part size: the first parts are small (a
    /// reader that stops early wastes little), later ones large (fewer requests).
    private var partLength: Int { min(shared.partSize, max(1 << 20, window / 4)) }

    /// Waits until [from, to) has arrived; the pieces that hold it, or nil when the parts do not
    /// cover it (bytes dropped already: the caller asks for them on their own).
    func pieces(_ from: Int64, _ to: Int64, interrupts: ReadInterrupts) -> Result<[(ReadPart, Int, Int)]?, FSError> {
        var out: [(ReadPart, Int, Int)] = []
        var cursor = from
        for p in parts where p.end > from && p.start < to {
            guard p.start <= cursor else { return .success(nil) }
            cursor = p.end
            let lo = Int(max(from, p.start) - p.start), hi = Int(min(to, p.end) - p.start)
            let generation = interrupts.begin(waitingOn: cond)
            var failure: FSError? = nil
            var interrupted = interrupts.requestInterrupted()
            if !interrupted { cond.wait(until: {
                interrupted = interrupts.generation != generation
                if p.received >= hi { p.wanted = Int.max; return true }
                if p.fetchDone || interrupted { p.wanted = Int.max; failure = p.failure ?? FSError(EIO); return true }
                p.wanted = hi
                return false
            }) }
            interrupts.end()
            if interrupted && p.received < hi { return .failure(FSError(EINTR)) }
            if let failure, p.received < hi { return .failure(failure) }
            out.append((p, lo, hi))
        }
        return .success(cursor >= to ? out : nil)
    }

    /// Counts bytes as read; drops parts read whole or lying behind `horizon`, growing the
    /// window for each part read whole.
    func served(_ pieces: [(ReadPart, Int, Int)], horizon: Int64) {
        cond.locked { for (p, lo, hi) in pieces { p.served += hi - lo } }
        while let first = parts.first {
            let whole = cond.locked { first.served >= first.length }
            guard whole || first.end < horizon else { break }
            parts.removeFirst()
            if whole { window = min(shared.maxWindow, window * 2) }
            drop(first)
        }
    }

    /// Stops every part (a seek elsewhere, a close).
    func cancel() {
        for p in parts { drop(p) }
        parts = []
    }

    private func drop(_ p: ReadPart) {
        let free = cond.locked { () -> Bool in p.dropped = true; return p.fetchDone }
        if free { release(p) }
    }

    private func release(_ p: ReadPart) {
        p.buffer.deallocate()
        shared.memory.release(p.length)
    }

    /// The part's GET on a pool thread: resumed where it stopped after a transport failure or a
    /// short answer (twice at most), stopped when the reader drops the part.
    private func fetch(_ p: ReadPart) {
        var filled = 0
        var attempts = 0
        var failure: FSError? = nil
        while filled < p.length {
            if cond.locked({ p.dropped }) { break }
            attempts += 1
            if attempts > 3 { failure = failure ?? FSError(EIO); break }
            if attempts > 1 { shared.counters.withLock { $0.partRetries += 1 } }
            do {
                try shared.store.get(key, range: (p.start + Int64(filled))..<p.end, from: nil, ifMatch: etag.isEmpty ? nil : etag) { buf in
                    guard buf.count <= p.length - filled else { return false }
                    if let base = buf.baseAddress { memcpy(p.buffer + filled, base, buf.count) }
                    filled += buf.count
                    var go = true
                    let wake = self.cond.locked { () -> Bool in
                        if p.dropped { go = false; return false }
                        p.received = filled
                        return filled >= p.wanted
                    }
                    if wake { self.cond.broadcast() }
                    return go
                }
                if filled < p.length {
                    // The object is longer (the listing said so, If-Match holds): a broken answer.
                    FileReader.shortReads.withLock { $0 += 1 }
                    Log.warning("\(Names.display(key)): a part answer ended at \(filled) of \(p.length) bytes; asking for the rest")
                }
            } catch {
                if cond.locked({ p.dropped }) { break }
                guard let s3 = error as? S3Error, s3.isRetryable else {
                    if (error as? S3Error)?.kind == .preconditionFailed {
                        Log.warning("\(Names.display(key)) changed since it was opened (ETag differs)")
                    }
                    failure = FSError(error)
                    break
                }
                Log.info("resuming part \(p.start)+\(filled) of \(Names.display(key)) after: \(s3)")
            }
        }
        if filled == p.length {
            shared.counters.withLock { $0.partsFetched += 1; $0.partBytes += Int64(p.length) }
            shared.cache?.store(key: key, etag: etag, size: size, offset: p.start, bytes: UnsafeRawBufferPointer(start: p.buffer, count: p.length))
        }
        let free = cond.locked { () -> Bool in
            p.received = filled
            if filled < p.length { p.failure = failure ?? FSError(EIO) }
            p.fetchDone = true
            return p.dropped
        }
        cond.broadcast()
        if free { release(p) }
    }
}
