import Glibc
import S3
import Synchronization

/// Reads of one open file. A sequential reader is served by one streaming GET that stays open
/// across reads (with read-ahead); a read that jumps elsewhere costs one ranged GET of just
/// what it asked for. Recent bytes are kept in a window so slightly out-of-order reads (the
/// kernel's parallel read-ahead) are served without a new request.
final class FileReader: @unchecked Sendable {
    let store: ObjectStore
    let key: [UInt8]
    let size: Int64
    let etag: String
    let readAhead: Int

    private struct State {
        var window: [UInt8] = []
        var windowStart: Int64 = 0
        var stream: ObjectStream? = nil
        var lastEnd: Int64 = 0
        var closed = false
    }
    private let state = Mutex(State())
    /// Bytes a read may skip forward inside the stream instead of opening a new request.
    private let maxSkip: Int64 = 4 << 20
    private let keepBehind = 2 << 20
    /// Objects up to this size are fetched whole by the first read.
    private let smallFileLimit: Int64 = 1 << 20

    init(store: ObjectStore, key: [UInt8], size: Int64, etag: String, readAhead: Int) {
        self.store = store
        self.key = key
        self.size = size
        self.etag = etag
        self.readAhead = readAhead
    }

    func read(offset: Int64, length: Int) -> Result<[UInt8], FSError> {
        if offset >= size || length <= 0 { return .success([]) }
        let end = min(size, offset + Int64(length))
        return state.withLock { s -> Result<[UInt8], FSError> in
            if s.closed { return .failure(FSError(EBADF)) }
            let winEnd = s.windowStart + Int64(s.window.count)
            if offset >= s.windowStart && end <= winEnd {
                return .success(slice(s, offset, end))
            }
            // A small file read from its start: the whole object in one GET on this thread, with no
            // stream thread to start (cat of many small files).
            if s.stream == nil && offset == 0 && size <= smallFileLimit {
                var whole = [UInt8]()
                whole.reserveCapacity(Int(size))
                do {
                    try store.get(key, range: 0..<size, from: nil, ifMatch: etag.isEmpty ? nil : etag) { b in whole.append(contentsOf: b); return true }
                } catch let e as S3Error {
                    if e.kind == .preconditionFailed { Log.warning("\(Names.display(key)) changed since it was opened (ETag differs)") }
                    return .failure(FSError(e.errno))
                } catch {
                    return .failure(FSError(EIO))
                }
                s.window = whole
                s.windowStart = 0
                s.lastEnd = end
                return .success(slice(s, offset, min(end, Int64(whole.count))))
            }
            let streaming = s.stream != nil && offset >= s.windowStart && offset <= winEnd + maxSkip
            if !streaming {
                if offset == s.lastEnd || offset == 0 {
                    s.stream?.cancel()
                    s.stream = ObjectStream(store: store, key: key, from: offset, etag: etag, limit: readAhead)
                    s.window = []
                    s.windowStart = offset
                } else {
                    // A random read: exactly the bytes asked for.
                    var out = [UInt8]()
                    out.reserveCapacity(Int(end - offset))
                    do {
                        try store.get(key, range: offset..<end, from: nil, ifMatch: etag.isEmpty ? nil : etag) { b in out.append(contentsOf: b); return true }
                    } catch let e as S3Error {
                        return .failure(FSError(e.errno))
                    } catch {
                        return .failure(FSError(EIO))
                    }
                    s.lastEnd = end
                    return .success(out)
                }
            }
            // Pull from the stream until the window covers [offset, end).
            var retried = false
            while s.windowStart + Int64(s.window.count) < end {
                guard let stream = s.stream else { return .failure(FSError(EIO)) }
                switch stream.take() {
                case .data(let d):
                    s.window.append(contentsOf: d)
                case .end:
                    let have = s.windowStart + Int64(s.window.count)
                    if have <= offset { return .failure(FSError(EIO)) }
                    s.lastEnd = have
                    return .success(slice(s, offset, have))
                case .failed(let e):
                    let pos = s.windowStart + Int64(s.window.count)
                    if !retried && e.isRetryable {
                        retried = true
                        Log.info("resuming read of \(Names.display(key)) at \(pos) after: \(e)")
                        s.stream = ObjectStream(store: store, key: key, from: pos, etag: etag, limit: readAhead)
                        continue
                    }
                    s.stream = nil
                    if e.kind == .preconditionFailed {
                        Log.warning("\(Names.display(key)) changed since it was opened (ETag differs)")
                    }
                    return .failure(FSError(e.errno))
                }
                trim(&s, keepFrom: offset)
            }
            s.lastEnd = end
            let out = slice(s, offset, end)
            trim(&s, keepFrom: end)
            return .success(out)
        }
    }

    private func slice(_ s: State, _ from: Int64, _ to: Int64) -> [UInt8] {
        let a = Int(from - s.windowStart), b = Int(to - s.windowStart)
        return Array(s.window[a..<b])
    }

    /// Drops window bytes well behind `keepFrom`, in large steps so the copying stays amortised.
    private func trim(_ s: inout State, keepFrom: Int64) {
        let behind = Int(keepFrom - s.windowStart)
        if behind > keepBehind * 4 {
            let drop = behind - keepBehind
            s.window.removeFirst(drop)
            s.windowStart += Int64(drop)
        }
    }

    func close() {
        state.withLock { s in
            s.closed = true
            s.stream?.cancel()
            s.stream = nil
            s.window = []
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
