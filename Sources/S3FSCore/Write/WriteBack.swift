import CCurlShim
import Glibc
import S3

/// The books of `--write-back`: which released files wait for their upload, and whether one more
/// may join them. A value type that decides; the upload pool and the journal act on it.
struct WriteBackBooks: Equatable {
    var maxFiles: Int
    var maxBytes: Int64
    /// Handle -> bytes of the files closed whose upload is owed (admitted at their close).
    private(set) var owed: [UInt64: Int64] = [:]
    private(set) var owedBytes: Int64 = 0
    /// Handles whose upload failed for good: kept in the spool and reported at the file's next
    /// close or fsync; they hold no place in the bound (S3 may refuse them for hours, and writers
    /// must not wait for that).
    private(set) var failed = Set<UInt64>()
    private(set) var uploaded = 0
    private(set) var failures = 0
    var recovered = 0
    var recoveryFailures = 0

    init(maxFiles: Int, maxBytes: Int64) {
        self.maxFiles = max(1, maxFiles)
        self.maxBytes = max(1, maxBytes)
    }

    /// Whether a file of `size` bytes may join now: the bounds hold, or nothing else is owed
    /// (a file larger than the byte bound goes alone rather than never).
    func admits(_ size: Int64) -> Bool {
        owed.isEmpty || (owed.count < maxFiles && owedBytes <= maxBytes &- size)
    }

    /// A file's close joins the owed (or, closed again after more writes, changes its size).
    mutating func admit(_ handle: UInt64, size: Int64) {
        owedBytes = owedBytes &- (owed[handle] ?? 0) &+ size
        owed[handle] = size
        failed.remove(handle)
    }

    mutating func landed(_ handle: UInt64) {
        if let b = owed.removeValue(forKey: handle) { owedBytes -= b; uploaded += 1 }
        failed.remove(handle)
    }

    /// Its upload failed for good: it leaves the bound and waits to be reported.
    mutating func fail(_ handle: UInt64) {
        if let b = owed.removeValue(forKey: handle) { owedBytes -= b }
        if failed.insert(handle).inserted { failures += 1 }
    }

    /// Unlinked or replaced before it went up: nothing is owed any more.
    mutating func drop(_ handle: UInt64) {
        if let b = owed.removeValue(forKey: handle) { owedBytes -= b }
        failed.remove(handle)
    }

    var pending: Int { owed.count }
    var idle: Bool { owed.isEmpty }
}

/// The write-back part: its journal, its books, and the condition writers and fsyncs wait on.
final class WriteBack: @unchecked Sendable {
    let journal: WriteBackJournal
    let books: Locked<WriteBackBooks>
    let changed = Condition()

    init(journal: WriteBackJournal, maxFiles: Int, maxBytes: Int64) {
        self.journal = journal
        books = Locked(WriteBackBooks(maxFiles: maxFiles, maxBytes: maxBytes))
    }

    /// Uploads wait this long after the release before they start: a rename (rsync's and git's
    /// temporary files), a chmod or utimens (tar), or an unlink that follows a close then changes
    /// what goes up instead of costing a request of its own.
    static let settleDelay = 0.2
    /// The longest a close waits for a place among the owed uploads (see `persistForClose`).
    static let admissionWait = 30.0
    private let timer = Condition()
    private var due: [(at: Double, job: @Sendable () -> Void)] = []
    private var timerStarted = false

    /// Runs `job` on the write-back pool once `settleDelay` has passed: one timer thread, owned
    /// here, hands jobs to the pool when they are due (no pool thread sleeps).
    func submitSettled(_ job: @escaping @Sendable () -> Void) {
        var start = false
        timer.broadcast {
            due.append((monotonicSeconds() + Self.settleDelay, job))
            if !timerStarted { timerStarted = true; start = true }
        }
        guard start else { return }
        Thread { [self] in
            s3m_set_thread_name("s3m-wb-timer")
            while true {
                var ready: [@Sendable () -> Void] = []
                _ = timer.wait(timeout: 0.05, until: {
                    let t = monotonicSeconds()
                    while let first = due.first, first.at <= t { ready.append(due.removeFirst().job) }
                    return !ready.isEmpty
                })
                for j in ready { Pools.writeBack.submit(j) }
            }
        }.start()
    }

    func update<R>(_ body: (inout WriteBackBooks) -> R) -> R {
        var r: R? = nil
        changed.broadcast { r = books.withLock { body(&$0) } }
        return r!
    }
}

public struct WriteBackStats: Sendable {
    public var pending = 0, pendingBytes: Int64 = 0, uploaded = 0, failed = 0, failedNow = 0, recovered = 0, journalRecords = 0
}

/// `--write-back`: `close` returns once the file is in the journal on local disk (synced); its
/// upload runs on the write-back pool. See docs/SEMANTICS.md, "Write-back".
extension Filesystem {
    /// FUSE's flush (a close) with write-back: the file's bytes and metadata go to the journal,
    /// synced, and the close returns; the release that follows starts the upload. A writer that
    /// would pass the bound waits here for uploads to land. A file flushed and still open (a
    /// duplicate descriptor) holds its place until its release: should such files fill the bound,
    /// a close waits at most `admissionWait` and then goes past it (said once in the log), so that
    /// writers never wait on one another for good.
    func persistForClose(handle: UInt64, _ w: FileWriter, _ wb: WriteBack) -> FSError? {
        let (dirty, current, journaled, size) = w.state.withLock { (($0.dirty || $0.pendingEmpty) && !$0.unlinked, $0.changes, $0.journaledChanges, $0.size) }
        guard dirty else { return nil }
        if journaled == current { return nil }
        if !wb.books.withLock({ $0.owed[handle] != nil }),
           !wb.changed.wait(timeout: WriteBack.admissionWait, until: { wb.books.withLock { $0.admits(size) } }) {
            Log.shared.once(.warning, key: "write-back-bound", "write-back: the bound of owed uploads is full of files flushed and still open; closes go past it")
        }
        guard let snap = w.journalSnapshot(inlineLimit: WriteBackJournal.inlineLimit),
              let id = wb.journal.begin(key: w.key, meta: FileWriter.headers(w.shownMeta), size: snap.size, inline: snap.inline,
                                        spool: w.spoolPath) else {
            // No durable record: this close waits for S3, as without write-back.
            Log.shared.once(.warning, key: "write-back-journal", "write-back: the journal in \(options.spoolDir) cannot be written; closes wait for S3")
            return flush(handle: handle, final: true)
        }
        let old = w.state.withLock { s -> UInt64? in
            defer { s.journalId = id; s.journaledChanges = snap.changes }
            return s.journalId
        }
        if let old { wb.journal.end(old) }
        wb.update { $0.admit(handle, size: snap.size) }
        return nil
    }

    /// A released file whose upload is owed: it stays among the open writers (what every reader
    /// on the mount sees), and goes up on the write-back pool.
    func releaseToWriteBack(handle: UInt64, _ w: FileWriter, _ wb: WriteBack) -> Bool {
        let owed = w.state.withLock { s -> Bool in
            guard (s.dirty || s.pendingEmpty) && !s.unlinked && s.journalId != nil else { return false }
            s.background = true
            return true
        }
        guard owed else { return false }
        wb.submitSettled { [self] in uploadInBackground(handle: handle, w, wb) }
        return true
    }

    func uploadInBackground(handle: UInt64, _ w: FileWriter, _ wb: WriteBack) {
        if let e = flush(handle: handle, final: true) {
            Log.error("write-back: the upload of \(Names.display(w.key)) failed (\(e)); kept in the spool, reported at its next close or fsync, and sent again at the next mount")
            wb.update { $0.fail(handle) }
            return
        }
        // Unlinked meanwhile: nothing went up, and nothing is owed.
        let dropped = w.state.withLock { $0.unlinked }
        wb.update { dropped ? $0.drop(handle) : $0.landed(handle) }
        finishWriter(handle: handle, w)
    }

    /// mkdir with write-back: the marker, an empty object with the directory's headers, is
    /// journaled and goes up behind, as a closed file does. False: send it now instead.
    func writeBackMarker(_ marker: [UInt8], meta m: PosixMeta) -> Bool {
        guard let wb = writeBack, let w = try? makeWriter(key: marker, ino: 0, meta: m) else { return false }
        w.markPendingEmpty()
        let h = register(w)
        if persistForClose(handle: h, w, wb) == nil, w.state.withLock({ $0.journalId != nil }), releaseToWriteBack(handle: h, w, wb) { return true }
        wb.update { $0.drop(h) }
        finishWriter(handle: h, w)
        return false
    }

    /// After an upload through `flush`: a write-back record the upload made good ends.
    func endWriteBackRecord(_ w: FileWriter) {
        guard let wb = writeBack else { return }
        let id = w.state.withLock { s -> UInt64? in
            guard !(s.dirty || s.pendingEmpty) || s.unlinked, let id = s.journalId else { return nil }
            s.journalId = nil
            s.journaledChanges = nil
            return id
        }
        if let id { wb.journal.end(id) }
    }

    /// A rename or metadata change of a file whose write-back record is open: the record follows.
    func noteWriteBack(_ w: FileWriter) {
        guard let wb = writeBack, let id = w.state.withLock({ $0.journalId }) else { return }
        wb.journal.note(id, key: w.key, meta: FileWriter.headers(w.shownMeta))
    }

    /// The released writers of inode `ino` whose upload is still owed (or failed), with handles.
    func backgroundWriters(ino: UInt64) -> [(UInt64, FileWriter)] {
        guard writeBack != nil, handles.hasWriters else { return [] }
        return handles.writers(where: { $0.ino == ino && $0.state.withLock { $0.background } })
    }

    /// Before an open for writing or an fsync of `ino`: its owed uploads land first. One
    /// that failed is tried once more now; its error is the answer when it fails again.
    func settleWriteBack(ino: UInt64) -> FSError? {
        guard let wb = writeBack else { return nil }
        for (h, w) in backgroundWriters(ino: ino) {
            wb.changed.wait(until: { wb.books.withLock { $0.owed[h] == nil } })
            guard wb.books.withLock({ $0.failed.contains(h) }) else { continue }
            if let e = flush(handle: h, final: true) { return e }
            wb.update { $0.landed(h) }
            finishWriter(handle: h, w)
        }
        return nil
    }

    /// Unmount: waits (up to `timeout` seconds) for the owed uploads; failed ones keep their
    /// records and spool files for the next mount.
    func drainWriteBack(timeout: Double) {
        guard let wb = writeBack else { return }
        let owed = wb.books.withLock { $0.pending }
        if owed > 0 {
            Log.info("unmount: waiting for \(owed) write-back upload(s) (up to \(Int(timeout)) s)")
            if !wb.changed.wait(timeout: timeout, until: { wb.books.withLock { $0.idle } }) {
                Log.error("unmount: gave up waiting for \(wb.books.withLock { $0.pending }) write-back upload(s); the next mount with this spool sends them")
            }
        }
        for (_, w) in handles.removeWriters(where: { $0.state.withLock { $0.background } }) {
            // Failed or still running: the journal and the spool keep it for the next mount.
            w.closeKeepingSpool()
        }
    }

    public var writeBackStats: WriteBackStats? {
        guard let wb = writeBack else { return nil }
        let b = wb.books.withLock { $0 }
        return WriteBackStats(pending: b.pending, pendingBytes: b.owedBytes, uploaded: b.uploaded, failed: b.failures + b.recoveryFailures, failedNow: b.failed.count,
                              recovered: b.recovered, journalRecords: wb.journal.openRecords)
    }

    // MARK: - what an earlier run owes

    /// At mount, before the first lookup: uploads every file that an earlier run with this spool
    /// and bucket closed and did not upload (its process died). Runs with or without
    /// `--write-back`. What fails is kept for the mount after this one. Returns how many landed.
    @discardableResult
    public func finishEarlierWriteBacks(spoolDir: String, store storeName: String) -> Int {
        let ourStore = WriteBackJournal.storeName(storeName)
        var landed = 0
        for run in WriteBackJournal.earlierRuns(in: spoolDir) {
            var bytes: [UInt8] = []
            for fd in run.fds { bytes += readRegularFile(fd, maxBytes: WriteBackJournal.maxSegmentRead) ?? [] }
            let owed = WriteBackJournal.owed(in: bytes)
            let ours = owed.filter { $0.store == ourStore }
            if options.readOnly && !ours.isEmpty {
                Log.error("write-back: \(ours.count) upload(s) that an earlier run owes wait in \(spoolDir); mount read-write to send them")
                for f in run.fds { Glibc.close(f) }
                continue
            }
            let failed = Locked<[WriteBackJournal.Owed]>([])
            let left = Condition()
            var running = ours.count
            for o in ours {
                Pools.writeBack.submit { [self] in
                    if !sendOwed(o, spoolDir: spoolDir) { failed.withLock { $0.append(o) } }
                    left.broadcast { running -= 1 }
                }
            }
            left.wait(until: { running == 0 })
            let kept = failed.withLock { $0 }
            landed += ours.count - kept.count
            let sent = ours.filter { !kept.contains($0) }
            if sent.count == owed.count {
                for path in run.paths { Glibc.unlink(path) }
            } else if !sent.isEmpty, let last = run.paths.last {
                // Records of other buckets, or that failed again, stay for a later mount; what was
                // sent is marked ended in the old run's own journal.
                WriteBackJournal.endRecords(sent.map(\.id), in: last)
            }
            for o in sent { Glibc.unlink(spoolDir + "/" + o.spool) }
            for fd in run.fds { Glibc.close(fd) }
            if !kept.isEmpty {
                Log.error("write-back: \(kept.count) upload(s) an earlier run owed failed again; kept in \(spoolDir) for the next mount")
                writeBack?.update { $0.recoveryFailures += kept.count }
            }
        }
        if landed > 0 {
            Log.info("write-back: sent \(landed) file(s) that an earlier run closed and did not upload")
            writeBack?.update { $0.recovered += landed }
        }
        return landed
    }

    /// Uploads one owed file and records its metadata in its directory's index.
    private func sendOwed(_ o: WriteBackJournal.Owed, spoolDir: String) -> Bool {
        let headers = options.metadata == .none ? [] : o.meta
        do {
            let etag: String
            if let data = o.inline {
                etag = try store.put(o.key, body: data.isEmpty ? .none : .bytes(data), metadata: headers)
            } else if let fd = OwnedFile.open(spoolDir + "/" + o.spool, O_RDONLY) {
                defer { Glibc.close(fd) }
                var st = stat()
                guard fstat(fd, &st) == 0 else { return false }
                etag = try uploadWhole(key: o.key, fd: fd, size: Int64(st.st_size), headers: headers)
            } else {
                Log.error("write-back: the spool file of \(Names.display(o.key)) (\(o.spool)) is gone; it cannot be sent")
                return true
            }
            let (dir, name) = splitKey(o.key)
            if options.metadata != .none, let m = PosixMeta.from(headers: Dictionary(o.meta, uniquingKeysWith: { $1 }), defaults: defaultMeta(.file), type: UInt32(S_IFREG)) {
                recordMeta(dirPath: dir, name: name, kind: .file, etag: etag, m)
            }
            return true
        } catch {
            Log.error("write-back: sending \(Names.display(o.key)) that an earlier run owed: \(error)")
            return false
        }
    }

    /// A spooled file of any size, as a writer would send it (multipart above the threshold).
    private func uploadWhole(key: [UInt8], fd: Int32, size: Int64, headers: [(String, String)]) throws -> String {
        if size <= options.multipartThreshold { return try store.put(key, body: .file(fd: fd, offset: 0, length: size), metadata: headers) }
        let m = PosixMeta.from(headers: Dictionary(headers, uniquingKeysWith: { $1 }), defaults: defaultMeta(.file), type: UInt32(S_IFREG)) ?? defaultMeta(.file)
        let w = try makeWriter(key: key, ino: 0, meta: m)
        defer { w.close() }
        var off: Int64 = 0
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while off < size {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(off)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            let r = buf.withUnsafeBytes { w.write(offset: off, data: UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            if case .failure(let e) = r { throw e }
            off += Int64(n)
        }
        switch w.upload(final: true) {
        case .success(let up): return up?.etag ?? ""
        case .failure(let e): throw e
        }
    }
}
