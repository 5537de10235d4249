import Glibc
import S3

/// Reads of one open file. A sequential reader is served by one streaming GET that stays open
/// across reads (with read-ahead); a read that jumps elsewhere costs one ranged GET of just
/// what it asked for. Bytes the stream delivered wait in a window of chunks (as they arrived,
/// never copied again) until they have been read, so the kernel's parallel read-ahead, whose
/// reads arrive here in any order, is served from the one stream; a reply points straight into
/// those chunks.
final class FileReader: @unchecked Sendable {
    let store: ObjectStore
    let key: [UInt8]
    let size: Int64
    let etag: String
    let readAhead: Int

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
        /// End of the furthest read so far: a read starting near it continues a sequential reader.
        var lastEnd: Int64 = 0
        var closed = false
        var windowStart: Int64 { chunks.first?.start ?? streamPos }
    }
    private let state = Locked(State())
    /// How far ahead of the stream a read may start and still be served by it (the bytes in
    /// between stay in the window for the reads the kernel sent earlier and that arrive later),
    /// and how far behind the furthest read unread bytes are kept: the kernel's whole window.
    private let maxSkip: Int64
    /// Objects up to this size are fetched whole by the first read.
    static let smallFileLimit: Int64 = 1 << 20

    init(store: ObjectStore, key: [UInt8], size: Int64, etag: String, readAhead: Int, kernelReadAhead: Int) {
        maxSkip = Int64(max(4 << 20, 4 * kernelReadAhead + (1 << 20)))
        self.store = store
        self.key = key
        self.size = size
        self.etag = etag
        self.readAhead = readAhead
    }

    /// Hands the bytes of [offset, offset+length) to `reply` as one or more buffers that stay
    /// valid only during the call; returns the error instead when there is one.
    /// Wakes reads of this file waiting for the stream: an interrupted request (Ctrl-C, a fatal
    /// signal) must get its answer (EINTR) at once, and one queued behind a read that waits must
    /// get the lock.
    let interrupts = ReadInterrupts()

    func read(offset: Int64, length: Int, interrupted: (() -> Bool)? = nil, reply: ([UnsafeRawBufferPointer]) -> Void) -> FSError? {
        if offset >= size || length <= 0 { reply([]); return nil }
        let end = min(size, offset + Int64(length))
        return state.withLock { s -> FSError? in
            if s.closed { return FSError(EBADF) }
            if interrupted?() == true { return FSError(EINTR) }
            if offset >= s.windowStart && end <= s.streamPos && !s.chunks.isEmpty {
                serve(&s, offset, end, reply)
                return nil
            }
            // A small file read from its start: the whole object in one GET on this thread, with no
            // stream thread to start (cat of many small files).
            if s.stream == nil && s.chunks.isEmpty && offset == 0 && size <= Self.smallFileLimit {
                let whole: [UInt8]
                do { whole = try fetch(0..<size) } catch { return failure(error) }
                s.chunks = [Chunk(start: 0, bytes: whole)]
                s.streamPos = Int64(whole.count)
                s.lastEnd = end
                serve(&s, offset, min(end, s.streamPos), reply)
                return nil
            }
            let streamServes = s.stream != nil && offset >= s.windowStart && offset <= s.streamPos + maxSkip
            if !streamServes {
                if offset == 0 || (offset >= s.lastEnd && offset <= s.lastEnd + maxSkip) {
                    // Sequential from the start or from where reading stopped: (re)open the stream
                    // there, so reads the kernel sent for the bytes before `offset` find them too.
                    let from = offset == 0 ? 0 : s.lastEnd
                    s.stream?.cancel()
                    s.stream = ObjectStream(store: store, key: key, from: from, etag: etag, limit: readAhead)
                    s.chunks = []
                    s.streamPos = from
                } else {
                    // A random read: exactly the bytes asked for.
                    let out: [UInt8]
                    do { out = try fetch(offset..<end) } catch { return failure(error) }
                    if s.stream == nil { s.lastEnd = end }
                    out.withUnsafeBytes { reply([$0]) }
                    return nil
                }
            }
            // Pull from the stream until the window covers [offset, end).
            var retried = false
            while s.streamPos < end {
                guard let stream = s.stream else { return FSError(EIO) }
                switch stream.take(needed: Int(end - s.streamPos), interrupts: interrupts) {
                case .data(let segments):
                    for seg in segments {
                        s.chunks.append(Chunk(start: s.streamPos, bytes: seg))
                        s.streamPos += Int64(seg.count)
                    }
                case .end:
                    // The object is `size` bytes (the listing said so, If-Match holds): a body that
                    // ends before is a broken answer, never the end of the file.
                    if s.streamPos < size {
                        Self.shortReads.withLock { $0 += 1 }
                        if !retried {
                            retried = true
                            Log.warning("\(Names.display(key)): the answer ended at \(s.streamPos) of \(size) bytes; reading again from there")
                            s.stream = ObjectStream(store: store, key: key, from: s.streamPos, etag: etag, limit: readAhead)
                            continue
                        }
                        Log.error("\(Names.display(key)): the answer ended at \(s.streamPos) of \(size) bytes twice; failing the read")
                        s.stream = nil
                        return FSError(EIO)
                    }
                    if s.streamPos <= offset { return FSError(EIO) }
                    s.lastEnd = max(s.lastEnd, s.streamPos)
                    serve(&s, offset, s.streamPos, reply)
                    return nil
                case .interrupted:
                    // The kernel interrupted a read of this file (Ctrl-C, kill): the stream stays.
                    return FSError(EINTR)
                case .failed(let e):
                    if !retried && e.isRetryable {
                        retried = true
                        Log.info("resuming read of \(Names.display(key)) at \(s.streamPos) after: \(e)")
                        s.stream = ObjectStream(store: store, key: key, from: s.streamPos, etag: etag, limit: readAhead)
                        continue
                    }
                    s.stream = nil
                    return failure(e)
                }
            }
            s.lastEnd = max(s.lastEnd, end)
            serve(&s, offset, end, reply)
            return nil
        }
    }

    /// Answers that were shorter than asked, and whole objects whose bytes did not match their
    /// ETag (MD5), since the mount started: for the statistics.
    static let shortReads = Locked(0)
    static let verificationFailures = Locked(0)

    /// One ranged GET of `range`, guarded by the ETag the file was opened with. An answer of the
    /// wrong length, or a whole object whose MD5 is not its (single-part) ETag, is asked again
    /// once, then fails (EIO): wrong bytes are never served as the file.
    private func fetch(_ range: Range<Int64>) throws -> [UInt8] {
        var lastProblem = ""
        for attempt in 0..<2 {
            var out = [UInt8]()
            out.reserveCapacity(Int(range.count))
            let info = try store.get(key, range: range, from: nil, ifMatch: etag.isEmpty ? nil : etag) { b in
                out.append(contentsOf: b)
                return out.count <= range.count
            }
            if out.count != range.count {
                Self.shortReads.withLock { $0 += 1 }
                lastProblem = "the answer had \(out.count) of \(range.count) bytes"
            } else if range == 0..<size, info.etagIsMD5, let md5 = Self.md5OfETag(etag), Crypto.md5(out) != md5 {
                Self.verificationFailures.withLock { $0 += 1 }
                lastProblem = "its bytes do not match its ETag (MD5)"
            } else {
                return out
            }
            Log.warning("\(Names.display(key)): \(lastProblem)\(attempt == 0 ? "; reading it again" : "; failing the read")")
        }
        throw S3Error(kind: .badResponse, status: 200, code: "BadBody", message: lastProblem, operation: "GetObject")
    }

    /// The MD5 an ETag stands for: a single-part upload's ETag (32 hex digits, no "-N" suffix).
    static func md5OfETag(_ etag: String) -> [UInt8]? {
        let hex = Array(etag.utf8.filter { $0 != 0x22 })
        guard hex.count == 32 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(16)
        var i = 0
        while i < 32 {
            guard let v = UInt8(String(decoding: hex[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            out.append(v)
            i += 2
        }
        return out
    }

    /// The errno for a failed GET; an object replaced since it was listed (If-Match failed) is logged.
    private func failure(_ error: any Error) -> FSError {
        if (error as? S3Error)?.kind == .preconditionFailed {
            Log.warning("\(Names.display(key)) changed since it was opened (ETag differs)")
        }
        return FSError(error)
    }

    /// Calls `reply` with buffers pointing into the chunks that cover [from, to), then counts
    /// those bytes as read and drops what is no longer wanted.
    private func serve(_ s: inout State, _ from: Int64, _ to: Int64, _ reply: ([UnsafeRawBufferPointer]) -> Void) {
        let pieces = Self.reply(s.chunks, from, to, reply)
        for (i, lo, hi) in pieces { s.chunks[i].served += hi - lo }
        trim(&s, readTo: to)
    }

    /// The pieces (chunk index, lower, upper) of `chunks` that cover [from, to), handed to `reply`.
    private static func reply(_ chunks: [Chunk], _ from: Int64, _ to: Int64, _ reply: ([UnsafeRawBufferPointer]) -> Void) -> [(Int, Int, Int)] {
        var pieces: [(Int, Int, Int)] = []
        for (i, c) in chunks.enumerated() where c.end > from && c.start < to {
            pieces.append((i, Int(max(from, c.start) - c.start), Int(min(to, c.end) - c.start)))
        }
        func nest(_ k: Int, _ acc: [UnsafeRawBufferPointer]) {
            if k == pieces.count { reply(acc); return }
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

    func close() {
        state.withLock { s in
            s.closed = true
            s.stream?.cancel()
            s.stream = nil
            s.chunks = []
        }
    }
}

/// Interrupts of the reads of one file: a generation that each interrupt moves on, and the stream
/// condition a read waits on now, woken by an interrupt.
final class ReadInterrupts: @unchecked Sendable {
    private struct State { var generation = 0; var waitingOn: Condition? = nil }
    private let state = Locked(State())

    var generation: Int { state.withLock { $0.generation } }

    func begin(waitingOn c: Condition) -> Int { state.withLock { s in s.waitingOn = c; return s.generation } }
    func end() { state.withLock { $0.waitingOn = nil } }

    func interrupt() {
        let c = state.withLock { s -> Condition? in s.generation += 1; return s.waitingOn }
        c?.broadcast()
    }
}

/// A GET from an offset to the end of the object, run on its own thread, handing bytes over as
/// they arrive and pausing (the curl write callback blocks) when `limit` bytes wait unread.
/// Bytes land in segments allocated at full size up front, so each byte is copied once from
/// curl's buffer and never again by an array growing underneath it.
final class ObjectStream: @unchecked Sendable {
    enum Chunk { case data([[UInt8]]), end, failed(S3Error), interrupted }

    /// Matches the largest FUSE read (1 MiB), so a read spans one or two segments.
    static let segmentSize = 1 << 20
    private let cond = Condition()
    private var segments: [[UInt8]] = []
    /// Segments the reader is done with, reused so the steady state allocates (and page-faults) nothing.
    private var spare: [[UInt8]] = []
    private var pendingBytes = 0
    private var finished = false
    private var failure: S3Error? = nil
    private var cancelled = false
    private let limit: Int
    /// Bytes the reader waiting in `take` needs before it can go on (Int.max: nobody waits). The
    /// stream wakes it only then, not at every piece curl delivers (16–64 KiB): that was a wake-up
    /// and a context switch per piece.
    private var readerNeeds = Int.max

    init(store: ObjectStore, key: [UInt8], from offset: Int64, etag: String, limit: Int) {
        self.limit = limit
        let t = Thread { [self] in
            do {
                try store.get(key, range: nil, from: offset, ifMatch: etag.isEmpty ? nil : etag) { buf in
                    self.cond.wait(until: { self.pendingBytes < self.limit || self.cancelled })
                    var go = true
                    var wake = false
                    self.cond.locked {
                        if self.cancelled { go = false } else {
                            self.append(buf)
                            wake = self.pendingBytes >= self.readerNeeds
                        }
                    }
                    if wake { self.cond.broadcast() }
                    return go
                }
                cond.broadcast { self.finished = true }
            } catch let e as S3Error {
                cond.broadcast { self.failure = e; self.finished = true }
            } catch {
                cond.broadcast {
                    self.failure = S3Error(kind: .transport, status: 0, code: "Transport", message: "\(error)", operation: "GetObject")
                    self.finished = true
                }
            }
        }
        t.start()
    }

    /// Copies `buf` into the last segment while it has room, then into new full-size segments.
    private func append(_ buf: UnsafeRawBufferPointer) {
        var rest = buf[...]
        while !rest.isEmpty {
            if segments.isEmpty || segments[segments.count - 1].count == Self.segmentSize {
                if var seg = spare.popLast() {
                    seg.removeAll(keepingCapacity: true)
                    segments.append(seg)
                } else {
                    var seg = [UInt8]()
                    seg.reserveCapacity(Self.segmentSize)
                    segments.append(seg)
                }
            }
            let room = Self.segmentSize - segments[segments.count - 1].count
            let n = min(room, rest.count)
            segments[segments.count - 1].append(contentsOf: UnsafeRawBufferPointer(rebasing: rest.prefix(n)))
            rest = rest.dropFirst(n)
        }
        pendingBytes += buf.count
    }

    /// Waits for `needed` bytes (or as many as the stream buffers), the end of the object or a
    /// failure. Hands over whole segments while they cover `needed`, so the segment being filled
    /// stays with the stream and fills up (a partly filled segment handed over is never topped up).
    func take(needed: Int, interrupts: ReadInterrupts? = nil) -> Chunk {
        let want = max(1, min(needed, limit))
        let generation = interrupts?.begin(waitingOn: cond) ?? 0
        defer { interrupts?.end() }
        var interrupted = false
        cond.wait(until: {
            interrupted = interrupts.map { $0.generation != generation } ?? false
            let ready = self.pendingBytes >= want || self.finished || interrupted
            self.readerNeeds = ready ? Int.max : want
            return ready
        })
        if interrupted { return .interrupted }
        var out: Chunk = .end
        cond.broadcast {
            guard pendingBytes > 0 else {
                if let f = failure { out = .failed(f) }
                return
            }
            let full = segments.last!.count == Self.segmentSize ? segments.count : segments.count - 1
            if !finished && full > 0 && (full * Self.segmentSize >= needed) {
                out = .data(Array(segments[0..<full]))
                segments.removeFirst(full)
                pendingBytes -= full * Self.segmentSize
            } else {
                out = .data(segments)
                segments = []
                pendingBytes = 0
            }
        }
        return out
    }

    /// Takes back a segment handed out by `take`, once nothing points into it.
    func recycle(_ segment: [UInt8]) {
        guard segment.capacity >= Self.segmentSize else { return }
        cond.locked { if spare.count * Self.segmentSize < 2 * limit { spare.append(segment) } }
    }

    func cancel() { cond.broadcast { cancelled = true; segments = []; pendingBytes = 0 } }
}
