import Glibc
import S3
import Synchronization

/// Reads of one open file. A sequential reader is served by one streaming GET that stays open
/// across reads (with read-ahead); a read that jumps elsewhere costs one ranged GET of just
/// what it asked for. Recent bytes are kept in a window of chunks (as they arrived, never copied
/// again) so slightly out-of-order reads (the kernel's parallel read-ahead) are served without a
/// new request, and a reply points straight into those chunks.
final class FileReader: @unchecked Sendable {
    let store: ObjectStore
    let key: [UInt8]
    let size: Int64
    let etag: String
    let readAhead: Int

    struct Chunk {
        var start: Int64
        var bytes: [UInt8]
        var end: Int64 { start + Int64(bytes.count) }
    }

    private struct State {
        var chunks: [Chunk] = []
        var stream: ObjectStream? = nil
        var lastEnd: Int64 = 0
        var closed = false
        var windowStart: Int64 { chunks.first?.start ?? 0 }
        var windowEnd: Int64 { chunks.last?.end ?? 0 }
    }
    private let state = Mutex(State())
    /// Bytes a read may skip forward inside the stream instead of opening a new request.
    private let maxSkip: Int64 = 4 << 20
    private let keepBehind: Int64 = 2 << 20
    /// Objects up to this size are fetched whole by the first read.
    private let smallFileLimit: Int64 = 1 << 20

    init(store: ObjectStore, key: [UInt8], size: Int64, etag: String, readAhead: Int) {
        self.store = store
        self.key = key
        self.size = size
        self.etag = etag
        self.readAhead = readAhead
    }

    /// Hands the bytes of [offset, offset+length) to `reply` as one or more buffers that stay
    /// valid only during the call; returns the error instead when there is one.
    func read(offset: Int64, length: Int, reply: ([UnsafeRawBufferPointer]) -> Void) -> FSError? {
        if offset >= size || length <= 0 { reply([]); return nil }
        let end = min(size, offset + Int64(length))
        return state.withLock { s -> FSError? in
            if s.closed { return FSError(EBADF) }
            if !s.chunks.isEmpty && offset >= s.windowStart && end <= s.windowEnd {
                serve(s, offset, end, reply)
                return nil
            }
            // A small file read from its start: the whole object in one GET on this thread, with no
            // stream thread to start (cat of many small files).
            if s.stream == nil && offset == 0 && size <= smallFileLimit {
                var whole = [UInt8]()
                whole.reserveCapacity(Int(size))
                do {
                    try store.get(key, range: 0..<size, from: nil, ifMatch: etag.isEmpty ? nil : etag) { b in whole.append(contentsOf: b); return true }
                } catch {
                    return failure(error)
                }
                s.chunks = [Chunk(start: 0, bytes: whole)]
                s.lastEnd = end
                serve(s, offset, min(end, Int64(whole.count)), reply)
                return nil
            }
            let streaming = s.stream != nil && !s.chunks.isEmpty && offset >= s.windowStart && offset <= s.windowEnd + maxSkip
                || (s.stream != nil && s.chunks.isEmpty && offset == s.lastEnd)
            if !streaming {
                if offset == s.lastEnd || offset == 0 {
                    s.stream?.cancel()
                    s.stream = ObjectStream(store: store, key: key, from: offset, etag: etag, limit: readAhead)
                    s.chunks = []
                    s.lastEnd = offset
                } else {
                    // A random read: exactly the bytes asked for.
                    var out = [UInt8]()
                    out.reserveCapacity(Int(end - offset))
                    do {
                        try store.get(key, range: offset..<end, from: nil, ifMatch: etag.isEmpty ? nil : etag) { b in out.append(contentsOf: b); return true }
                    } catch {
                        return failure(error)
                    }
                    s.lastEnd = end
                    out.withUnsafeBytes { reply([$0]) }
                    return nil
                }
            }
            // Pull from the stream until the window covers [offset, end).
            var retried = false
            while (s.chunks.isEmpty ? s.lastEnd : s.windowEnd) < end {
                guard let stream = s.stream else { return FSError(EIO) }
                let pos = s.chunks.isEmpty ? s.lastEnd : s.windowEnd
                switch stream.take() {
                case .data(let d):
                    s.chunks.append(Chunk(start: pos, bytes: d))
                case .end:
                    if pos <= offset { return FSError(EIO) }
                    s.lastEnd = pos
                    serve(s, offset, pos, reply)
                    return nil
                case .failed(let e):
                    if !retried && e.isRetryable {
                        retried = true
                        Log.info("resuming read of \(Names.display(key)) at \(pos) after: \(e)")
                        s.stream = ObjectStream(store: store, key: key, from: pos, etag: etag, limit: readAhead)
                        if s.chunks.isEmpty { s.lastEnd = pos }
                        continue
                    }
                    s.stream = nil
                    return failure(e)
                }
                trim(&s, keepFrom: offset)
            }
            s.lastEnd = end
            serve(s, offset, end, reply)
            trim(&s, keepFrom: end)
            return nil
        }
    }

    /// The errno for a failed GET; an object replaced since it was listed (If-Match failed) is logged.
    private func failure(_ error: any Error) -> FSError {
        if (error as? S3Error)?.kind == .preconditionFailed {
            Log.warning("\(Names.display(key)) changed since it was opened (ETag differs)")
        }
        return FSError(error)
    }

    /// Calls `reply` with buffers pointing into the chunks that cover [from, to).
    private func serve(_ s: State, _ from: Int64, _ to: Int64, _ reply: ([UnsafeRawBufferPointer]) -> Void) {
        var pieces: [(Int, Int, Int)] = [] // (chunk index, lower, upper)
        for (i, c) in s.chunks.enumerated() where c.end > from && c.start < to {
            pieces.append((i, Int(max(from, c.start) - c.start), Int(min(to, c.end) - c.start)))
        }
        func nest(_ k: Int, _ acc: [UnsafeRawBufferPointer]) {
            if k == pieces.count { reply(acc); return }
            let (i, lo, hi) = pieces[k]
            s.chunks[i].bytes.withUnsafeBytes { all in
                nest(k + 1, acc + [UnsafeRawBufferPointer(rebasing: all[lo..<hi])])
            }
        }
        nest(0, [])
    }

    /// Drops whole chunks that lie well behind `keepFrom`.
    private func trim(_ s: inout State, keepFrom: Int64) {
        while let first = s.chunks.first, s.chunks.count > 1, first.end < keepFrom - keepBehind {
            s.chunks.removeFirst()
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

/// A GET from an offset to the end of the object, run on its own thread, handing bytes over as
/// they arrive and pausing (the curl write callback blocks) when `limit` bytes wait unread.
final class ObjectStream: @unchecked Sendable {
    enum Chunk { case data([UInt8]), end, failed(S3Error) }

    private let cond = Condition()
    private var pending: [UInt8] = []
    private var finished = false
    private var failure: S3Error? = nil
    private var cancelled = false
    private let limit: Int

    init(store: ObjectStore, key: [UInt8], from offset: Int64, etag: String, limit: Int) {
        self.limit = limit
        let t = Thread { [self] in
            do {
                try store.get(key, range: nil, from: offset, ifMatch: etag.isEmpty ? nil : etag) { buf in
                    self.cond.wait(until: { self.pending.count < self.limit || self.cancelled })
                    var go = true
                    self.cond.broadcast {
                        if self.cancelled { go = false } else { self.pending.append(contentsOf: buf) }
                    }
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

    /// Waits for bytes, the end of the object or a failure.
    func take() -> Chunk {
        cond.wait(until: { !self.pending.isEmpty || self.finished })
        var out: Chunk = .end
        cond.broadcast {
            if !pending.isEmpty {
                out = .data(pending)
                pending = []
            } else if let f = failure {
                out = .failed(f)
            }
        }
        return out
    }

    func cancel() { cond.broadcast { cancelled = true; pending = [] } }
}
