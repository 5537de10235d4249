import Glibc
import S3

/// A file open for writing. Data is spooled to a local temporary file (bounded memory) and
/// uploaded on flush/fsync/release: PutObject when small; a multipart upload whose parts leave in
/// parallel while a large file is still being written sequentially.
final class FileWriter: @unchecked Sendable {
    let store: ObjectStore
    private(set) var key: [UInt8]
    let ino: UInt64
    let fd: Int32
    let spoolPath: String
    let spoolDir: String
    let multipartThreshold: Int64
    let basePartSize: Int64
    let maxParallelParts: Int

    enum PartStatus {
        case pending, inFlight(stale: Bool), done(CompletedPart)
        var isPending: Bool { if case .pending = self { return true } else { return false } }
    }

    struct State {
        var size: Int64 = 0
        /// Data changed since the last upload.
        var dirty = false
        /// The object must be (re)written even without data changes (a new or truncated file):
        /// `touch` must leave an object behind when it returns.
        var pendingEmpty = false
        /// Bytes [0, sequentialEnd) were written in order: complete parts there may leave early.
        var sequentialEnd: Int64 = 0
        var upload: MultipartUpload? = nil
        var creatingUpload = false
        var parts: [Int: PartStatus] = [:]
        /// Every part below this one is in flight or done: `schedule` starts looking here, so a
        /// 100 GiB file (12,800 parts) costs no scan of all its parts at every 1 MiB write.
        var scanFrom = 1
        var inFlight = 0
        var partError: S3Error? = nil
        var lastError: FSError? = nil
        /// Mode, owner and times the object is uploaded with (its `mtime` set only by an explicit
        /// utimens since the last write: otherwise `contentTime`).
        var meta: PosixMeta
        /// When its content last changed (a write, a truncate, the open that made it empty): the
        /// mtime stat shows and the upload stores, to the nanosecond.
        var contentTime = Timestamp.now()
        /// Its name was removed (unlink) while open: it lives on until the last close and is then
        /// discarded, never uploaded (POSIX; private temporary files rely on it).
        var unlinked = false
        /// The metadata a multipart upload was created with: completed with other metadata
        /// (a chmod or utimens while it ran), the object is copied onto itself with the new.
        var multipartMeta: PosixMeta? = nil
        /// Bumped by every change of the content: what a write-back record was taken of.
        var changes: UInt64 = 0
        /// `--write-back`: its record in the journal (while its upload is owed), and the content
        /// it was taken of.
        var journalId: UInt64? = nil
        var journaledChanges: UInt64? = nil
        /// Released, its upload running (or failed) on the write-back pool.
        var background = false
    }
    let state: Locked<State>
    let partsDone = Condition()
    /// Serialises writes, truncates and uploads of this handle.
    private let ioLock = Locked(())

    /// Where multipart uploads are recorded until they end (nil: not recorded).
    let journal: UploadJournal?

    init(store: ObjectStore, key: [UInt8], ino: UInt64, meta: PosixMeta, spoolDir: String, multipartThreshold: Int64, partSize: Int64, parallelParts: Int,
         journal: UploadJournal? = nil, storesMeta: Bool = true) throws {
        self.storesMeta = storesMeta
        self.store = store
        self.journal = journal
        self.state = Locked(State(meta: meta))
        self.key = key
        self.ino = ino
        self.multipartThreshold = multipartThreshold
        self.basePartSize = partSize
        self.maxParallelParts = parallelParts
        var template = Array((spoolDir + "/s3mount-spool-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            Log.error("cannot create a spool file in \(spoolDir): \(String(cString: strerror(errno)))")
            throw FSError([ENOSPC, EMFILE, ENFILE, EDQUOT].contains(errno) ? errno : EIO)
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        // Locked while in use: another mount sharing the spool directory tells it from a leftover.
        _ = flock(fd, LOCK_EX)
        self.fd = fd
        self.spoolPath = String(cString: template)
        self.spoolDir = spoolDir
    }

    var size: Int64 { state.withLock { $0.size } }
    var isDirty: Bool { state.withLock { ($0.dirty || $0.pendingEmpty) && !$0.unlinked } }

    func markPendingEmpty() { state.withLock { $0.pendingEmpty = true; $0.contentTime = Timestamp.now(); $0.changes &+= 1 } }

    var meta: PosixMeta { state.withLock { $0.meta } }
    /// The metadata stat shows while it is open: an unset mtime is its content's time.
    var shownMeta: PosixMeta { state.withLock { s in var m = s.meta; if m.mtime == nil { m.mtime = s.contentTime }; return m } }

    /// unlink of its name: nothing more goes to S3 for it (a multipart upload under way is aborted).
    /// Before its object is deleted: an open that meant to modify it downloads it now.
    func loadBeforeUnlink() -> FSError? { ioLock.withLock { _ in ensureLoaded() } }

    func markUnlinked(_ on: Bool = true) {
        state.withLock { $0.unlinked = on }
        if on { ioLock.withLock { _ in abortMultipart() } }
    }

    /// A chmod, chown or utimens of the open file: sent with its next upload.
    func setMeta(_ m: PosixMeta) { state.withLock { $0.meta = m } }

    /// The headers of an upload starting now.
    static func headers(_ m: PosixMeta) -> [(String, String)] { m.headers(mtimeIfUnset: Timestamp.now()) }

    /// `--metadata none`: uploads carry no mode, owner or time headers.
    let storesMeta: Bool
    func uploadHeaders(_ m: PosixMeta) -> [(String, String)] { storesMeta ? Self.headers(m) : [] }

    /// The object to download before the first read, write or truncate (set by an open without
    /// O_TRUNC): opening and closing without touching the data (`touch`) downloads nothing.
    private var pendingLoad: (size: Int64, etag: String)? = nil

    func loadLazily(size: Int64, etag: String) {
        pendingLoad = (size, etag)
        state.withLock { $0.size = size }
    }

    /// Call with ioLock held.
    private func ensureLoaded() -> FSError? {
        guard let p = pendingLoad else { return nil }
        let e = load(size: p.size, etag: p.etag)
        // Loaded, or still to load: a write after a failed load must never go to a spool
        // without the object's bytes (it would upload zeros over them).
        if e == nil { pendingLoad = nil }
        return e
    }

    /// Fills the spool with the object's current bytes (download-modify-upload of an overwrite).
    /// A body cut off midway (a reset) goes on from where it stopped, a few times; the spool
    /// must end up with exactly `size` bytes.
    func load(size: Int64, etag: String) -> FSError? {
        var off: Int64 = 0
        var writeErr: Int32 = 0
        var resumes = 0
        while off < size {
            let before = off
            do {
                try store.get(key, range: nil, from: off, ifMatch: etag.isEmpty ? nil : etag) { buf in
                    let n = pwrite(self.fd, buf.baseAddress, buf.count, off_t(off))
                    if n != buf.count { writeErr = n < 0 ? errno : ENOSPC; return false }
                    off += Int64(n)
                    return true
                }
                if off < size { throw S3Error(kind: .transport, status: 0, code: "ShortBody", message: "the object ended at \(off) of \(size) bytes", operation: "GetObject") }
            } catch let e as S3Error {
                if writeErr != 0 { return FSError(writeErr) }
                resumes += 1
                guard e.isRetryable || e.code == "ShortBody", resumes <= 3 || (off > before && resumes <= 10) else {
                    Log.error("loading \(Names.display(key)) before changing it: \(e)")
                    return FSError(e.errno == ENOENT ? EIO : e.errno)
                }
                Log.info("loading \(Names.display(key)) before changing it: going on at \(off) after: \(e)")
            } catch {
                return FSError(EIO)
            }
        }
        state.withLock { s in
            s.size = off
            s.sequentialEnd = 0
        }
        return nil
    }

    func read(offset: Int64, length: Int) -> Result<[UInt8], FSError> {
        if let e = ioLock.withLock({ _ in ensureLoaded() }) { return .failure(e) }
        var out = [UInt8](repeating: 0, count: length)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, off_t(offset)) }
        if n < 0 { return .failure(FSError(errno)) }
        out.removeLast(length - n)
        return .success(out)
    }

    func write(offset: Int64, data: UnsafeRawBufferPointer) -> Result<Int, FSError> {
        guard let end = ObjectSize.end(offset: offset, length: data.count, limit: maxSize) else { return .failure(FSError(EFBIG)) }
        return ioLock.withLock { _ in
            if let e = ensureLoaded() { return .failure(e) }
            // Parts being sent over these bytes go again. Marked before the bytes change: a part
            // upload that reads them half-changed fails its checksum, and is then known to be stale.
            state.withLock { s in markStale(&s, from: offset, to: end) }
            let n = pwrite(fd, data.baseAddress, data.count, off_t(offset))
            if n < 0 { return .failure(FSError(errno)) }
            if n < data.count { return .failure(FSError(ENOSPC)) }
            let startMultipart = state.withLock { s -> Bool in
                s.size = max(s.size, end)
                s.dirty = true
                s.changes &+= 1
                // A write sets the mtime and ctime (stored with the upload).
                s.meta.mtime = nil
                s.meta.ctime = nil
                s.contentTime = Timestamp.now()
                if offset == s.sequentialEnd { s.sequentialEnd = end } else { s.sequentialEnd = min(s.sequentialEnd, offset) }
                return s.upload == nil && !s.creatingUpload && s.size > multipartThreshold
            }
            if startMultipart { beginMultipart() }
            schedule(final: false)
            return .success(n)
        }
    }

    func truncate(to newSize: Int64) -> FSError? {
        guard newSize >= 0, newSize <= maxSize else { return FSError(newSize < 0 ? EINVAL : EFBIG) }
        return ioLock.withLock { _ in
            if let e = ensureLoaded() { return e }
            // Stale first, as in `write`.
            state.withLock { s in markStale(&s, from: min(s.size, newSize), to: Int64.max) }
            if ftruncate(fd, off_t(newSize)) != 0 { return FSError(errno) }
            state.withLock { s in
                s.size = newSize
                s.dirty = true
                s.changes &+= 1
                s.meta.mtime = nil
                s.meta.ctime = nil
                s.contentTime = Timestamp.now()
                s.sequentialEnd = min(s.sequentialEnd, newSize)
            }
            return nil
        }
    }

    // MARK: - parts

    /// S3's most parts in one upload.
    static let maxParts = 10_000

    /// The largest file this writer can upload: S3's 5 TiB, or less when 10,000 parts of this
    /// part size (doubling every 1,000) reach less.
    var maxSize: Int64 { Self.maxSize(partSize: basePartSize) }

    static func maxSize(partSize: Int64) -> Int64 {
        var reach: Int64 = 0, size = max(1, partSize)
        for _ in 0..<(maxParts / 1000) {
            let (block, o1) = size.multipliedReportingOverflow(by: 1000)
            let (sum, o2) = reach.addingReportingOverflow(block)
            if o1 || o2 || sum >= ObjectSize.maxWritable { return ObjectSize.maxWritable }
            reach = sum
            size *= 2
        }
        return reach
    }

    /// Part n (1-based) covers [start, end). Part sizes double every 1,000 parts, so 10,000 parts
    /// reach past S3's 5 TiB object limit while small files keep small parts.
    func partBounds(_ n: Int) -> (Int64, Int64) {
        var start: Int64 = 0
        var remaining = n - 1
        var size = basePartSize
        while remaining >= 1000 {
            start += size * 1000
            remaining -= 1000
            size *= 2
        }
        start += size * Int64(remaining)
        return (start, start + size)
    }

    /// The part holding byte `offset`.
    func partIndex(containing offset: Int64) -> Int {
        var start: Int64 = 0, size = basePartSize, first = 1
        while offset >= start + size * 1000 {
            start += size * 1000
            size *= 2
            first += 1000
        }
        return first + Int((offset - start) / size)
    }

    /// Parts an object of `size` bytes has (an empty one has one, empty).
    func partCount(for size: Int64) -> Int { size == 0 ? 1 : partIndex(containing: size - 1) }

    /// Parts sent or being sent that [from, to) overlaps must be sent again.
    private func markStale(_ s: inout State, from: Int64, to: Int64) {
        guard !s.parts.isEmpty, from < to else { return }
        let lo = partIndex(containing: from)
        // A write touches a part or two; a truncation may touch every part after `from`.
        let touched = to == Int64.max ? s.parts.keys.filter { $0 >= lo } : Array(lo...partIndex(containing: to - 1))
        for n in touched {
            switch s.parts[n] {
            case .inFlight?: s.parts[n] = .inFlight(stale: true)
            case .done?:
                s.parts[n] = .pending
                s.scanFrom = min(s.scanFrom, n)
            case .pending?, nil: break
            }
        }
    }

    private func beginMultipart() {
        state.withLock { $0.creatingUpload = true }
        do {
            let m = meta
            let upload = try store.createMultipart(key, metadata: uploadHeaders(m))
            journal?.started(key, uploadId: upload.id)
            state.withLock { $0.upload = upload; $0.creatingUpload = false; $0.multipartMeta = m }
        } catch let e as S3Error {
            state.withLock { $0.creatingUpload = false; $0.partError = e }
        } catch {
            state.withLock { $0.creatingUpload = false }
        }
    }

    /// Starts uploads of parts that are ready: complete parts inside the sequential region while
    /// writing, every part when `final`.
    private func schedule(final: Bool) {
        var toStart: [(Int, MultipartUpload)] = []
        state.withLock { s in
            guard let upload = s.upload, s.partError == nil, !s.unlinked else { return }
            let limit = final ? s.size : s.sequentialEnd
            // While writing: the parts [0, sequentialEnd) holds whole.
            let last = final ? partCount(for: s.size) : partIndex(containing: limit) - 1
            // Skip the front parts already in flight or done.
            while s.scanFrom <= last, let st = s.parts[s.scanFrom], !st.isPending { s.scanFrom += 1 }
            guard last >= s.scanFrom else { return }
            for n in s.scanFrom...last {
                if s.inFlight >= maxParallelParts { break }
                let (a, b) = partBounds(n)
                if !final && b > limit { break }
                if a >= s.size && n > 1 { break }
                switch s.parts[n] {
                case nil, .pending?:
                    s.parts[n] = .inFlight(stale: false)
                    s.inFlight += 1
                    toStart.append((n, upload))
                default: break
                }
            }
        }
        for (n, upload) in toStart {
            Pools.uploads.submit { [self] in self.uploadPart(n, upload: upload) }
        }
    }

    private func uploadPart(_ n: Int, upload: MultipartUpload) {
        let (a, b) = partBounds(n)
        let len = max(0, min(b, size) - a)
        var result: Result<CompletedPart, S3Error>
        do {
            result = .success(try store.uploadPart(key, upload: upload, partNumber: n, body: .file(fd: fd, offset: a, length: len)))
        } catch let e as S3Error {
            result = .failure(e)
        } catch {
            result = .failure(S3Error(kind: .transport, status: 0, code: "Transport", message: "\(error)", operation: "UploadPart"))
        }
        partsDone.broadcast {
            state.withLock { s in
                s.inFlight -= 1
                switch result {
                case .success(let part):
                    if case .inFlight(stale: true)? = s.parts[n] {
                        s.parts[n] = .pending
                        s.scanFrom = min(s.scanFrom, n)
                    } else {
                        s.parts[n] = .done(part)
                    }
                case .failure(let e):
                    // A stale part's outcome does not count (its bytes changed while it was sent,
                    // which can fail its checksum): it is sent again.
                    if case .inFlight(stale: false)? = s.parts[n] { s.partError = e }
                    s.parts[n] = .pending
                    s.scanFrom = min(s.scanFrom, n)
                }
            }
        }
        schedule(final: false)
    }

    /// What an upload left in S3.
    struct Uploaded {
        var size: Int64
        var etag: String
        var meta: PosixMeta
    }

    /// Uploads the spool if it changed since the last upload. Returns what is now in S3, or the
    /// error the writer should see. A failed multipart upload is aborted.
    func upload(final: Bool) -> Result<Uploaded?, FSError> {
        ioLock.withLock { _ -> Result<Uploaded?, FSError> in
            let (dirty, size, id, meta, unlinked) = state.withLock { ($0.dirty || $0.pendingEmpty, $0.size, $0.upload?.id, $0.meta, $0.unlinked) }
            var stored = meta
            if stored.mtime == nil { stored.mtime = state.withLock { $0.contentTime } }
            guard dirty && !unlinked else { return .success(nil) }
            do {
                var etag: String
                if id == nil && size <= multipartThreshold {
                    etag = try store.put(key, body: .file(fd: fd, offset: 0, length: size), metadata: uploadHeaders(stored))
                } else {
                    if id == nil { beginMultipart() }
                    let count = partCount(for: size)
                    // Send every part not yet sent, then wait for all of them.
                    while true {
                        schedule(final: true)
                        var failed: S3Error? = nil
                        var complete = false
                        partsDone.wait(until: {
                            state.withLock { s in
                                if let e = s.partError { failed = e; return s.inFlight == 0 }
                                if s.upload == nil { failed = S3Error(kind: .badResponse, status: 0, code: "NoUpload", message: "could not start the multipart upload", operation: "CreateMultipartUpload"); return true }
                                complete = (1...count).allSatisfy { if case .done? = s.parts[$0] { return true } else { return false } }
                                if complete { return true }
                                // Wake to schedule more when a slot is free.
                                return s.inFlight < maxParallelParts && (1...count).contains { n in
                                    if case .inFlight? = s.parts[n] { return false }
                                    if case .done? = s.parts[n] { return false }
                                    return true
                                }
                            }
                        })
                        if let failed { throw failed }
                        if complete { break }
                    }
                    let (uploadId, parts) = state.withLock { s -> (String, [CompletedPart]) in
                        (s.upload!.id, (1...count).map { n in
                            if case .done(let part)? = s.parts[n] { return part }
                            return CompletedPart(partNumber: n, etag: "")
                        })
                    }
                    etag = try store.completeMultipart(key, uploadId: uploadId, parts: parts)
                    journal?.ended(uploadId: uploadId)
                    let createdWith = state.withLock { s -> PosixMeta? in
                        s.upload = nil; s.parts = [:]; s.scanFrom = 1
                        defer { s.multipartMeta = nil }
                        return s.multipartMeta
                    }
                    if createdWith != meta {
                        // Mode or times changed while the parts were going up: one copy onto itself.
                        let copied = try store.copy(from: key, to: key, size: size, metadata: uploadHeaders(stored), sourceETag: etag)
                        if !copied.isEmpty { etag = copied }
                    }
                }
                state.withLock { s in
                    s.dirty = false
                    s.pendingEmpty = false
                    s.lastError = nil
                    // Uploaded with it: what later changes of its metadata keep.
                    if s.meta.mtime == nil { s.meta.mtime = stored.mtime }
                }
                return .success(Uploaded(size: size, etag: etag, meta: stored))
            } catch {
                let s3e = error as? S3Error
                Log.error("upload of \(Names.display(key)) (\(size) bytes) failed: \(error)")
                abortMultipart()
                let e = FSError(s3e?.errno == ENOENT ? EIO : (s3e?.errno ?? EIO))
                state.withLock { $0.lastError = e }
                return .failure(e)
            }
        }
    }

    private func abortMultipart() {
        // Wait for parts in flight, then abort so no orphaned parts stay billed.
        partsDone.wait(until: { state.withLock { $0.inFlight == 0 } })
        let id = state.withLock { s -> String? in
            let id = s.upload?.id
            s.upload = nil
            s.parts = [:]
            s.scanFrom = 1
            s.partError = nil
            s.sequentialEnd = 0
            return id
        }
        guard let id else { return }
        do {
            try store.abortMultipart(key, uploadId: id)
            journal?.ended(uploadId: id)
        } catch {
            // Retried within the write budget already; the journal keeps it for the next mount.
            Log.warning("could not abort the multipart upload of \(Names.display(key)) (\(id)): \(error); the next mount tries again")
        }
    }

    /// A rename while a multipart upload runs: that upload belongs to the old key, so it is
    /// aborted and the file goes up whole under its new name at the next flush.
    func rename(to newKey: [UInt8]) {
        ioLock.withLock { _ in
            if state.withLock({ $0.upload != nil || $0.creatingUpload }) {
                abortMultipart()
                state.withLock { $0.dirty = true }
            }
            key = newKey
        }
    }

    // MARK: - write-back

    /// What a write-back record is taken of: the content's version, its size, and its bytes when
    /// they fit in the record (else the spool is synced to disk first, and the record names it).
    /// nil when the spool cannot be read or synced (the close then waits for S3).
    func journalSnapshot(inlineLimit: Int) -> (changes: UInt64, size: Int64, inline: [UInt8]?)? {
        ioLock.withLock { _ -> (UInt64, Int64, [UInt8]?)? in
            if ensureLoaded() != nil { return nil }
            let (changes, size) = state.withLock { ($0.changes, $0.size) }
            if size > Int64(inlineLimit) { return fdatasync(fd) == 0 ? (changes, size, nil) : nil }
            guard let out = preadFully(fd, count: Int(size), at: 0), out.count == Int(size) else { return nil }
            return (changes, size, out)
        }
    }

    /// A rename of a file whose data is not in S3 yet: it goes up under the new key, and nothing
    /// is copied. False when there is nothing to send (the rename then moves the object).
    func retargetIfUnsent(to newKey: [UInt8]) -> Bool {
        ioLock.withLock { _ in
            guard state.withLock({ ($0.dirty || $0.pendingEmpty) && !$0.unlinked }) else { return false }
            if state.withLock({ $0.upload != nil || $0.creatingUpload }) { abortMultipart() }
            key = newKey
            return true
        }
    }

    /// At unmount, a write-back whose upload failed: the spool file stays where the journal
    /// names it, for the next mount to send.
    func closeKeepingSpool() { Glibc.close(fd) }

    /// Closes the spool. When the last upload failed, the spool is kept (renamed so it is easy
    /// to find) and its path logged: the data is recoverable.
    func close() {
        let (dirty, failed, unlinked) = state.withLock { ($0.dirty || $0.pendingEmpty, $0.lastError, $0.unlinked) }
        Glibc.close(fd)
        if dirty && failed != nil && !unlinked {
            let kept = spoolDir + "/s3mount-unsaved-" + String(spoolPath.utf8.suffix(6))!
            Glibc.rename(spoolPath, kept)
            Log.error("data for \(Names.display(key)) could not be uploaded; kept in \(kept)")
        } else {
            unlink(spoolPath)
        }
    }
}

