import CCurlShim
import Glibc
import S3

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
    private let offset: Int64
    /// Bytes received, when the first arrived, and seconds spent waiting for the reader to make
    /// room: the link's speed is what remains.
    private var received: Int64 = 0
    private var firstByteAt: Double = 0
    private var waited: Double = 0
    /// Set by `stop`: the stream ends where it is.
    private var stopped = false
    /// A stream of the whole object keeps the CRC-32 of what it received, checked at its end
    /// against the checksum S3 sent (when it sent one).
    private var crc: UInt32 = 0

    init(store: ObjectStore, key: [UInt8], from offset: Int64, etag: String, limit: Int, verify: Bool = true) {
        let verifying = verify && offset == 0
        self.limit = limit
        self.offset = offset
        let t = Thread { [self] in
            do {
                let info = try store.get(key, range: nil, from: offset, ifMatch: etag.isEmpty ? nil : etag) { buf in
                    let t0 = monotonicSeconds()
                    var paused = false
                    self.cond.wait(until: {
                        let ready = self.pendingBytes < self.limit || self.cancelled || self.stopped
                        if !ready { paused = true }
                        return ready
                    })
                    var go = true
                    var wake = false
                    self.cond.locked {
                        if paused { self.waited += monotonicSeconds() - t0 }
                        if self.cancelled || self.stopped { go = false } else {
                            if self.received == 0 { self.firstByteAt = t0 }
                            self.received += Int64(buf.count)
                            if verifying {
                                // Local work, not the link's: left out of the link's speed.
                                let c0 = monotonicSeconds()
                                self.crc = s3m_crc32(self.crc, buf.baseAddress, buf.count)
                                self.waited += monotonicSeconds() - c0
                            }
                            self.append(buf)
                            wake = self.pendingBytes >= self.readerNeeds
                        }
                    }
                    if wake { self.cond.broadcast() }
                    return go
                }
                cond.broadcast {
                    if verifying, !self.stopped, !self.cancelled, let want = info.checksumCRC32, CRC32.base64(self.crc) != want {
                        self.failure = S3Error(kind: .badResponse, status: 200, code: "BadChecksum",
                                               message: "the bytes received do not match the object's CRC-32", operation: "GetObject")
                    }
                    self.finished = true
                }
            } catch let e as S3Error {
                cond.broadcast {
                    if !self.stopped { self.failure = e }
                    self.finished = true
                }
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
        if interrupts?.requestInterrupted() == true { return .interrupted }
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

    /// Bytes per second the link delivered while the stream was not waiting for the reader, once
    /// `probe` bytes have arrived (nil before).
    func linkRate(probe: Int64) -> Double? {
        cond.locked {
            guard received >= probe, firstByteAt > 0 else { return nil }
            let active = monotonicSeconds() - firstByteAt - waited
            return active > 0 ? Double(received) / active : nil
        }
    }

    /// Ends the stream at what it has received (still handed out by `take`); returns the offset
    /// where it ends.
    func stop() -> Int64 {
        cond.broadcast { () -> Void in stopped = true }
        return cond.locked { offset + received }
    }

    func cancel() { cond.broadcast { cancelled = true; segments = []; pendingBytes = 0 } }
}
