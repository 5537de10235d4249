import Glibc
import S3

/// Reads of one open file. A sequential reader is served by one streaming GET that stays open
/// across reads (with read-ahead). When that stream shows a link slower per connection than the
/// machine (real S3 caps each connection at 50-100 MB/s), the reader goes on with ranged parts in
/// parallel (`PartWindow`), and later readers start that way. A read that jumps elsewhere costs
/// one ranged GET of just what it asked for. Bytes wait in a window until they have been read,
/// so the kernel's parallel read-ahead, whose reads arrive here in any order, is served from what
/// is already on its way; a reply points straight into those buffers. Bytes found in the local
/// data cache are served from disk; bytes fetched are put there.
final class FileReader: @unchecked Sendable {
    let shared: ReadShared
    var store: ObjectStore { shared.store }
    let key: [UInt8]
    let size: Int64
    let etag: String
    let readAhead: Int
    /// The inode it was opened for (set by `Filesystem.open`).
    var ino: UInt64 = 0
    /// Bytes it served did not match the object's checksum.
    var servedBadBytes: Bool { state.withLock { $0.badBytes } }

    struct Chunk {
        var start: Int64
        var bytes: [UInt8]
        /// Bytes of this chunk handed to readers so far; a chunk read whole is dropped.
        var served = 0
        var end: Int64 { start + Int64(bytes.count) }
    }

    private struct State {
        /// Contiguous: [windowStart, streamPos).
        var chunks: [Chunk] = []
        var stream: ObjectStream? = nil
        /// Offset of the next byte the stream delivers.
        var streamPos: Int64 = 0
        /// Where a stream stopped for parts ends (the parts go on from there).
        var streamEnd: Int64? = nil
        /// Parallel parts, after the stream (or instead of it).
        var parts: PartWindow? = nil
        /// End of the furthest read so far: a read starting near it continues a sequential reader.
        var lastEnd: Int64 = 0
        var closed = false
        /// The bytes did not match the object's checksum: every later read of this open fails
        /// too (a failed kernel read-ahead is not the caller's error; the read after it must be).
        var badBytes = false
        /// When a stream of this open last broke (see `pull`).
        var lastStreamFailure: Double? = nil
        /// End of the furthest read the program asked for (what it wanted, not what was fetched).
        var requested: Int64 = 0
        var windowStart: Int64 { chunks.first?.start ?? (stream != nil ? streamPos : parts?.firstStart ?? streamPos) }
    }
    private let state = Locked(State())
    /// How far ahead of the stream a read may start and still be served by it (the bytes in
    /// between stay in the window for the reads the kernel sent earlier and that arrive later),
    /// and how far behind the furthest read unread bytes are kept: the kernel's whole window.
    private let maxSkip: Int64
    /// Objects up to this size are fetched whole by the first read.
    static let smallFileLimit: Int64 = 1 << 20
    /// Bytes a stream delivers before its speed is judged.
    static let probeBytes: Int64 = 4 << 20
    /// How long what a stream taught of the link holds before another stream measures it again.
    static let linkMemory: Double = 300

    /// Bytes the first read at offset 0 fetches when the file is larger: `head` in a sniffing walk
    /// (the rest streams if the reader goes on), else none (the usual paths).
    let firstFetch: Int64?

    /// `prefetched`: the object's first bytes (or all of it), fetched ahead by a walk. `headFirst`:
    /// a first read at 0 fetches only that many bytes (a sniffing walk).
    init(shared: ReadShared, key: [UInt8], size: Int64, etag: String, readAhead: Int, kernelReadAhead: Int,
         prefetched: [UInt8]? = nil, headFirst: Int64? = nil) {
        // A head fetched ahead makes this a sniffing reader too.
        firstFetch = headFirst ?? prefetched.flatMap { Int64($0.count) < size && !$0.isEmpty ? Int64($0.count) : nil }
        maxSkip = Int64(max(4 << 20, 4 * kernelReadAhead + (1 << 20)))
        self.shared = shared
        self.key = key
        self.size = size
        self.etag = etag
        self.readAhead = readAhead
        if let prefetched, !prefetched.isEmpty, Int64(prefetched.count) <= size {
            state.withLock { s in
                s.chunks = [Chunk(start: 0, bytes: prefetched)]
                s.streamPos = Int64(prefetched.count)
                // A reader that goes on past a head continues from there.
                s.lastEnd = s.streamPos
            }
        }
    }

    /// Wakes reads of this file waiting for the stream: an interrupted request (Ctrl-C, a fatal
    /// signal) must get its answer (EINTR) at once, and one queued behind a read that waits must
    /// get the lock.
    let interrupts = ReadInterrupts()

    /// Hands the bytes of [offset, offset+length) to `reply` as one or more buffers that stay
    /// valid only during the call; returns the error instead when there is one.
    func read(offset: Int64, length: Int, interrupted: (() -> Bool)? = nil, reply: ([UnsafeRawBufferPointer]) -> Void) -> FSError? {
        if offset >= size || length <= 0 { reply([]); return nil }
        let end = min(size, offset + Int64(length))
        return state.withLock { s -> FSError? in
            if s.closed { return FSError(EBADF) }
            if s.badBytes { return FSError(EIO) }
            if let t = troubleAt.withLock({ $0 }), monotonicSeconds() - t < Self.troubleMemory { return FSError(EIO) }
            if interrupted?() == true { return FSError(EINTR) }
            interrupts.running(interrupted)
            defer { interrupts.running(nil) }
            s.requested = max(s.requested, end)
            if offset >= s.windowStart && end <= s.streamPos && !s.chunks.isEmpty {
                serve(&s, offset, end, [], reply)
                return nil
            }
            // A new reader of a file another open read moments ago (file managers open a file to
            // sniff it, then again for its thumbnail): the first bytes kept from that read.
            if s.chunks.isEmpty && s.stream == nil && s.parts == nil && s.lastEnd == 0,
               let recent = shared.recent.prefix(key: key, etag: etag), Int64(recent.count) >= min(end, size) {
                s.chunks = [Chunk(start: 0, bytes: recent)]
                s.streamPos = Int64(recent.count)
                serve(&s, offset, end, [], reply)
                return nil
            }
            if let cache = shared.cache, let bytes = cache.read(key: key, etag: etag, size: size, range: offset..<end) {
                s.lastEnd = max(s.lastEnd, end)
                bytes.withUnsafeBytes { reply([$0]) }
                return nil
            }
            // A small file read from its start: the whole object in one GET on this thread, with no
            // stream thread to start (cat of many small files).
            let first = firstFetch.map { min(size, offset == 0 ? max($0, end) : $0) } ?? (size <= Self.smallFileLimit ? size : nil)
            // (The kernel's read-ahead may send its later read first: any first read within the
            // object's first bytes fetches them from 0.)
            if let first, s.stream == nil && s.parts == nil && s.chunks.isEmpty && s.lastEnd == 0 && end <= first {
                let whole: [UInt8]
                do { whole = try fetch(0..<first) } catch { return failure(error) }
                s.chunks = [Chunk(start: 0, bytes: whole)]
                s.streamPos = Int64(whole.count)
                s.lastEnd = end
                serve(&s, offset, min(end, s.streamPos), [], reply)
                return nil
            }
            // A sniffing reader whose read (or the kernel's read-ahead around it) goes a little past
            // the head it has: just the missing bytes, not a stream that would bring the whole file.
            if let head = firstFetch, s.stream == nil && s.parts == nil && !s.chunks.isEmpty && s.chunks[0].start == 0,
               offset <= s.streamPos && end > s.streamPos && s.streamPos < 4 * head && end - s.streamPos <= 1 << 20 {
                let more: [UInt8]
                do { more = try fetch(s.streamPos..<end) } catch { return failure(error) }
                s.chunks.append(Chunk(start: s.streamPos, bytes: more))
                s.streamPos = end
                s.lastEnd = max(s.lastEnd, end)
                serve(&s, offset, end, [], reply)
                return nil
            }
            let reach = s.parts.map { $0.nextStart } ?? s.streamPos
            let windowServes = (s.stream != nil || s.parts != nil) && offset >= s.windowStart && offset <= reach + maxSkip
            if !windowServes {
                if offset == 0 || (offset >= s.lastEnd && offset <= s.lastEnd + maxSkip) {
                    // Sequential from the start or from where reading stopped: (re)start there, so
                    // reads the kernel sent for the bytes before `offset` find them too.
                    let from = offset == 0 ? 0 : s.lastEnd
                    restart(&s, from: from)
                } else {
                    // A random read: exactly the bytes asked for.
                    let e = fetchAndReply(offset..<end, reply)
                    if e == nil && s.stream == nil && s.parts == nil { s.lastEnd = end }
                    return e
                }
            }
            // The stream's share of [offset, end), then the parts' share.
            let streamTo = min(end, s.streamEnd ?? size)
            if s.stream != nil && s.streamPos < streamTo {
                if let e = pull(&s, to: streamTo) { return e }
                considerParts(&s)
            }
            let partsFrom = max(offset, s.streamPos)
            var pieces: [(ReadPart, Int, Int)] = []
            if partsFrom < end {
                guard let w = s.parts else {
                    // The stream ended (the object's end): serve what there is.
                    if s.streamPos <= offset { return FSError(EIO) }
                    s.lastEnd = max(s.lastEnd, s.streamPos)
                    serve(&s, offset, s.streamPos, [], reply)
                    return nil
                }
                w.schedule(readTo: max(end, s.lastEnd), mustReach: end)
                switch w.pieces(partsFrom, end, interrupts: interrupts) {
                case .success(let p?): pieces = p
                case .success(nil):
                    // Bytes the window let go already (read once, now asked again): on their own.
                    return fetchAndReply(offset..<end, reply)
                case .failure(let e):
                    // A part that failed its resumes: the store's trouble, as in `failure`.
                    if e.errno != EINTR { noteTrouble() }
                    return e
                }
            }
            s.lastEnd = max(s.lastEnd, end)
            serve(&s, offset, end, pieces, reply)
            s.parts?.schedule(readTo: s.lastEnd, mustReach: 0)
            return nil
        }
    }

    /// Starts sequential reading at `from`: parts when the link is known to be slow per
    /// connection, else one stream (which measures it).
    private func restart(_ s: inout State, from: Int64) {
        s.stream?.cancel()
        s.stream = nil
        s.parts?.cancel()
        s.parts = nil
        s.chunks = []
        s.streamPos = from
        s.streamEnd = nil
        if shared.concurrency > 1 && linkIsSlow() == true {
            s.streamEnd = from
            s.parts = PartWindow(shared: shared, key: key, etag: etag, size: size, from: from, window: ReadShared.firstWindow)
        } else {
            s.stream = newStream(from: from)
            shared.counters.withLock { $0.streamReaders += 1 }
        }
    }

    private func linkIsSlow() -> Bool? {
        shared.linkSlow.withLock { l in
            guard let l, monotonicSeconds() - l.at < Self.linkMemory else { return nil }
            return l.slow
        }
    }

    /// Once the stream has shown its speed: a slow link (per connection) hands the rest of the
    /// file to parallel parts, from where the stream has got to.
    private func considerParts(_ s: inout State) {
        guard shared.concurrency > 1, s.parts == nil, s.streamEnd == nil, let stream = s.stream else { return }
        var slow = linkIsSlow()
        if slow == nil, let rate = stream.linkRate(probe: Self.probeBytes) {
            slow = rate < shared.parallelBelow
            shared.linkSlow.withLock { $0 = (slow!, monotonicSeconds()) }
            Log.debug("one stream read \(Names.display(key)) at \(Int(rate / 1e6)) MB/s: \(slow! ? "parallel parts" : "one stream")")
        }
        guard slow == true, size - s.streamPos > 2 * Int64(shared.partSize) else { return }
        let stop = stream.stop()
        s.streamEnd = stop
        // This reader has read sequentially for a while already: the whole window at once.
        s.parts = PartWindow(shared: shared, key: key, etag: etag, size: size, from: stop, window: shared.maxWindow)
    }

    /// Pulls from the stream until it has delivered `target` (or ended); nil when it has.
    private func pull(_ s: inout State, to target: Int64) -> FSError? {
        var retried = false
        while s.streamPos < target {
            guard let stream = s.stream else { return FSError(EIO) }
            switch stream.take(needed: Int(target - s.streamPos), interrupts: interrupts) {
            case .data(let segments):
                for seg in segments {
                    shared.cache?.store(key: key, etag: etag, size: size, offset: s.streamPos, bytes: seg)
                    s.chunks.append(Chunk(start: s.streamPos, bytes: seg))
                    s.streamPos += Int64(seg.count)
                }
                // At the object's end: the stream's end, and its checksum, are awaited so that a
                // body that does not match it fails this last read (no later read would ask).
                if s.streamPos == size, let e = awaitVerifiedEnd(stream) {
                    s.stream = nil
                    s.chunks = []
                    s.badBytes = true
                    return e
                }
            case .end:
                if let stop = s.streamEnd, s.streamPos == stop {
                    // Stopped for parts, which go on from here.
                    s.stream = nil
                    return nil
                }
                // The object is `size` bytes (the listing said so, If-Match holds): a body that
                // ends before is a broken answer, never the end of the file.
                if s.streamPos < size {
                    Self.shortReads.withLock { $0 += 1 }
                    if !retried {
                        retried = true
                        Log.warning("\(Names.display(key)): the answer ended at \(s.streamPos) of \(size) bytes; reading again from there")
                        s.stream = newStream(from: s.streamPos)
                        continue
                    }
                    Log.error("\(Names.display(key)): the answer ended at \(s.streamPos) of \(size) bytes twice; failing the read")
                    s.stream = nil
                    noteTrouble()
                    return FSError(EIO)
                }
                return nil
            case .interrupted:
                // The kernel interrupted a read of this file (Ctrl-C, kill): the stream stays.
                return FSError(EINTR)
            case .failed(let e):
                // A broken stream goes on from where it stopped; broken again within a minute, the
                // store is in trouble and the read fails (a server that stalls every answer
                // midway would otherwise be followed half the rest at a time, a stall each).
                let t = monotonicSeconds()
                let recent = s.lastStreamFailure.map { t - $0 < Self.streamFailureWindow } ?? false
                s.lastStreamFailure = t
                if !retried && !recent && e.isRetryable {
                    retried = true
                    Log.info("resuming read of \(Names.display(key)) at \(s.streamPos) after: \(e)")
                    s.stream = newStream(from: s.streamPos)
                    continue
                }
                s.stream = nil
                return failure(e)
            }
        }
        return nil
    }

    /// The end of a stream that delivered the whole object: EIO when its bytes did not match the
    /// checksum S3 sent (what it delivered is dropped from the data cache).
    private func awaitVerifiedEnd(_ stream: ObjectStream) -> FSError? {
        guard case .failed(let e) = stream.take(needed: 1, interrupts: interrupts), e.code == "BadChecksum" else { return nil }
        Self.verificationFailures.withLock { $0 += 1 }
        shared.cache?.drop(key: key)
        Log.error("\(Names.display(key)): \(e.message); failing the read")
        return FSError(EIO)
    }

    /// Answers that were shorter than asked, and whole objects whose bytes did not match their
    /// ETag (MD5), since the mount started: for the statistics.
    static let shortReads = Locked(0)
    static let verificationFailures = Locked(0)

    private func fetch(_ range: Range<Int64>) throws -> [UInt8] {
        try Self.fetch(shared, key: key, etag: etag, size: size, range: range)
    }

    /// One ranged GET of just `range`, handed to `reply` (bytes kept nowhere but the caches).
    private func fetchAndReply(_ range: Range<Int64>, _ reply: ([UnsafeRawBufferPointer]) -> Void) -> FSError? {
        let out: [UInt8]
        do { out = try fetch(range) } catch { return failure(error) }
        out.withUnsafeBytes { reply([$0]) }
        return nil
    }

    /// A streaming GET from `offset` to the object's end.
    private func newStream(from offset: Int64) -> ObjectStream {
        ObjectStream(store: store, key: key, from: offset, etag: etag, limit: readAhead, verify: shared.verify)
    }

    /// One ranged GET of `range`, guarded by the ETag the file was opened with. An answer of the
    /// wrong length, or a whole object whose MD5 is not its (single-part) ETag, is asked again
    /// once, then fails (EIO): wrong bytes are never served as the file. What arrives is kept in
    /// the data cache.
    static func fetch(_ shared: ReadShared, key: [UInt8], etag: String, size: Int64, range: Range<Int64>) throws -> [UInt8] {
        var lastProblem = ""
        for attempt in 0..<2 {
            var out = [UInt8]()
            out.reserveCapacity(Int(range.count))
            let info: ObjectInfo
            do {
                info = try shared.store.get(key, range: range, from: nil, ifMatch: etag.isEmpty ? nil : etag) { b in
                    out.append(contentsOf: b)
                    return out.count <= range.count
                }
            } catch let e as S3Error where attempt == 0 && e.isRetryable {
                // Broken off after some bytes had come (the client retries only before the first).
                Log.warning("\(Names.display(key)): \(e); reading it again")
                continue
            }
            if out.count != range.count {
                Self.shortReads.withLock { $0 += 1 }
                lastProblem = "the answer had \(out.count) of \(range.count) bytes"
            } else if range == 0..<size, info.etagIsMD5, let md5 = Self.md5OfETag(etag), Crypto.md5(out) != md5 {
                Self.verificationFailures.withLock { $0 += 1 }
                lastProblem = "its bytes do not match its ETag (MD5)"
            } else {
                shared.cache?.store(key: key, etag: etag, size: size, offset: range.lowerBound, bytes: out)
                if range.lowerBound == 0 { shared.recent.keep(key: key, etag: etag, prefix: out) }
                return out
            }
            Log.warning("\(Names.display(key)): \(lastProblem)\(attempt == 0 ? "; reading it again" : "; failing the read")")
        }
        throw S3Error(kind: .badResponse, status: 200, code: "BadBody", message: lastProblem, operation: "GetObject")
    }

    /// The MD5 an ETag stands for: a single-part upload's ETag (32 hex digits, no "-N" suffix).
    static func md5OfETag(_ etag: String) -> [UInt8]? {
        let hex = etag.filter { $0 != "\"" }
        guard hex.utf8.count == 32 else { return nil }
        return bytesOfHex(hex)
    }

    /// The errno for a failed GET; an object replaced since it was listed (If-Match failed) is logged.
    private func failure(_ error: any Error) -> FSError {
        if (error as? S3Error)?.kind == .preconditionFailed {
            Log.warning("\(Names.display(key)) changed since it was opened (ETag differs)")
        }
        // The store failed this read after its whole retry budget: the kernel's other reads of
        // this open (read-ahead, then the page it retries) fail at once instead of each paying
        // the budget again (a body stalling midway cost minutes). A new open tries again.
        if let e = error as? S3Error, e.isRetryable || e.code == "ShortBody" { noteTrouble() }
        return FSError(error)
    }

    /// When a read of this open last failed for the store's trouble (see `failure`).
    private let troubleAt = Locked<Double?>(nil)
    private func noteTrouble() { troubleAt.withLock { $0 = monotonicSeconds() } }
    static let troubleMemory: Double = 30
    static let streamFailureWindow: Double = 60

    /// Calls `reply` with buffers pointing into the chunks that cover [from, to), followed by the
    /// parts' pieces, then counts those bytes as read and drops what is no longer wanted.
    private func serve(_ s: inout State, _ from: Int64, _ to: Int64, _ parts: [(ReadPart, Int, Int)], _ reply: ([UnsafeRawBufferPointer]) -> Void) {
        let chunksTo = parts.first.map { $0.0.start + Int64($0.1) } ?? to
        let tail = parts.map { UnsafeRawBufferPointer(start: $0.0.buffer + $0.1, count: $0.2 - $0.1) }
        let pieces = Self.reply(s.chunks, from, chunksTo, tail, reply)
        for (i, lo, hi) in pieces { s.chunks[i].served += hi - lo }
        trim(&s, readTo: to)
        s.parts?.served(parts, horizon: max(to, s.lastEnd) - maxSkip)
    }

    /// The pieces (chunk index, lower, upper) of `chunks` that cover [from, to), handed to `reply`
    /// followed by `tail`.
    private static func reply(_ chunks: [Chunk], _ from: Int64, _ to: Int64, _ tail: [UnsafeRawBufferPointer], _ reply: ([UnsafeRawBufferPointer]) -> Void) -> [(Int, Int, Int)] {
        var pieces: [(Int, Int, Int)] = []
        for (i, c) in chunks.enumerated() where c.end > from && c.start < to {
            pieces.append((i, Int(max(from, c.start) - c.start), Int(min(to, c.end) - c.start)))
        }
        func nest(_ k: Int, _ acc: [UnsafeRawBufferPointer]) {
            if k == pieces.count { reply(acc + tail); return }
            let (i, lo, hi) = pieces[k]
            chunks[i].bytes.withUnsafeBytes { all in
                nest(k + 1, acc + [UnsafeRawBufferPointer(rebasing: all[lo..<hi])])
            }
        }
        nest(0, [])
        return pieces
    }

    /// Drops leading chunks that have been read whole, and any that lie too far behind the
    /// furthest read (bytes the kernel skipped, or a reader that went back).
    private func trim(_ s: inout State, readTo: Int64) {
        let horizon = max(readTo, s.lastEnd) - maxSkip
        while let first = s.chunks.first, first.served >= first.bytes.count || first.end < horizon {
            // Not `s.stream?.recycle(s.chunks.removeFirst()...)`: optional chaining would skip the removal.
            let done = s.chunks.removeFirst()
            s.stream?.recycle(done.bytes)
        }
    }

    /// How far the reader got (for the walk's evidence of sniffing).
    var readTo: Int64 { state.withLock { $0.requested } }

    func close() {
        state.withLock { s in
            s.closed = true
            s.stream?.cancel()
            s.stream = nil
            s.parts?.cancel()
            s.parts = nil
            s.chunks = []
        }
    }
}

/// Interrupts of the reads of one file: a generation that each interrupt moves on, and the stream
/// condition a read waits on now, woken by an interrupt.
final class ReadInterrupts: @unchecked Sendable {
    private struct State { var generation = 0; var waitingOn: Condition? = nil; var request: (() -> Bool)? = nil }
    private let state = Locked(State())

    var generation: Int { state.withLock { $0.generation } }

    /// The FUSE request of the read now running (reads of one file run one at a time).
    func running(_ request: (() -> Bool)?) { state.withLock { $0.request = request } }

    /// Whether that request was interrupted before its wait began (`begin`): an interrupt that
    /// came between the read's first check and `begin` found no wait to wake. Asked after `begin`
    /// and outside the wait's lock (libfuse calls the interrupt callback under its request lock,
    /// and the callback takes the wait's lock: asking inside would invert that order).
    func requestInterrupted() -> Bool { state.withLock { $0.request }?() == true }

    func begin(waitingOn c: Condition) -> Int { state.withLock { s in s.waitingOn = c; return s.generation } }
    func end() { state.withLock { $0.waitingOn = nil } }

    func interrupt() {
        let c = state.withLock { s -> Condition? in s.generation += 1; return s.waitingOn }
        c?.broadcast()
    }
}

