import Glibc
import S3

/// The multipart uploads this process has started and not yet completed or aborted, in a file in
/// the spool directory (`s3mount-uploads-PID.journal`). Parts of an upload nobody completes stay
/// billed until the bucket's lifecycle rule (if any) removes them; S3 gives no way to tell which
/// uploads a process started, so the process writes it down. The file is locked (flock) for the
/// life of the process: a later mount that can lock it knows its writer is gone, aborts the
/// uploads listed for its own bucket and removes the entries (`cleanUpAfterEarlierRuns`).
///
/// Lines: `+ STORE KEYHEX UPLOADID` when an upload starts, `- UPLOADID` when it is completed or
/// aborted. STORE is the endpoint and bucket (the mount's namespace), so mounts of other buckets
/// sharing the spool directory leave each other's entries alone.
public final class UploadJournal: @unchecked Sendable {
    private let dir: String
    private let store: String
    private let path: String
    private struct Record {
        var fd: Int32
        /// Lines of the uploads started and not ended, by upload id: what a compaction keeps.
        var open: [String: String] = [:]
        var bytes = 0
    }
    private let record: Locked<Record>
    /// A journal past this is rewritten with only its open uploads; one found larger than
    /// `maxRead` at the next mount is no journal this program wrote, and is left alone.
    static let compactAt = 1 << 20
    static let maxRead = 16 << 20

    /// nil when the file cannot be made: uploads work as before, without a record.
    public init?(spoolDir: String, store: String) {
        dir = spoolDir
        self.store = Self.encode(Array(store.utf8))
        path = "\(spoolDir)/s3mount-uploads-\(getpid()).journal"
        guard let f = OwnedFile.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND) else {
            Log.warning("cannot keep a record of multipart uploads in \(path): \(String(cString: strerror(errno)))")
            return nil
        }
        _ = flock(f, LOCK_EX)
        record = Locked(Record(fd: f))
    }

    func started(_ key: [UInt8], uploadId: String) {
        let line = "+ \(store) \(Self.encode(key)) \(uploadId)\n"
        append(line) { $0.open[uploadId] = line }
    }
    func ended(uploadId: String) { append("- \(uploadId)\n") { $0.open[uploadId] = nil } }

    private func append(_ line: String, note: (inout Record) -> Void) {
        record.withLock { r in
            guard r.fd >= 0 else { return }
            note(&r)
            var b = Array(line.utf8)
            if r.bytes + b.count > Self.compactAt {
                // Only what is still open: a mount that runs for months keeps a small record.
                _ = ftruncate(r.fd, 0)
                r.bytes = 0
                b = Array(r.open.values.joined().utf8)
            }
            let n = b.withUnsafeBytes { write(r.fd, $0.baseAddress, $0.count) }
            if n > 0 { r.bytes += n }
        }
    }

    /// At a clean exit: the record goes when nothing is left in it.
    public func close() {
        record.withLock { r in
            guard r.fd >= 0 else { return }
            if r.open.isEmpty { unlink(path) }
            Glibc.close(r.fd)
            r.fd = -1
        }
    }

    /// Uploads started and not ended, in order, from a journal's text. Lines that are not what
    /// `started` and `ended` write (a key that is no hex, an upload id with spaces or controls,
    /// a line too long for any real key) are ignored.
    static func unfinished(in text: String) -> [(store: String, key: String, uploadId: String)] {
        var started: [(store: String, key: String, uploadId: String)] = []
        var ended = Set<String>()
        for line in text.split(separator: "\n") where line.utf8.count <= 8192 {
            let f = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            if f.count == 4, f[0] == "+", decode(f[2]) != nil, isUploadId(f[3]) { started.append((f[1], f[2], f[3])) }
            if f.count == 2, f[0] == "-" { ended.insert(f[1]) }
        }
        return started.filter { !ended.contains($0.uploadId) }
    }

    /// S3's upload ids are URL-safe text; anything else in a journal is not one S3 gave.
    static func isUploadId(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 1024 && s.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    /// Aborts the uploads that earlier runs (processes that are gone) started in this store and
    /// never ended; keeps other stores' entries. Only journals this user owns, in this mount's
    /// private spool, that are regular files of a size this program writes, are read. Returns
    /// how many uploads were aborted.
    @discardableResult
    public func cleanUpAfterEarlierRuns(abort: ([UInt8], String) throws -> Void) -> Int {
        guard let d = opendir(dir) else { return 0 }
        var journals: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix("s3mount-uploads-") && name.hasSuffix(".journal") && "\(dir)/\(name)" != path { journals.append("\(dir)/\(name)") }
        }
        closedir(d)
        var aborted = 0
        for j in journals {
            guard let f = OwnedFile.open(j, O_RDWR) else {
                Log.shared.once(.warning, key: "journal:" + j, "ignoring \(j): not a regular file of this user's")
                continue
            }
            defer { Glibc.close(f) }
            // Locked: its process still runs (another mount); its uploads are its own.
            guard flock(f, LOCK_EX | LOCK_NB) == 0 else { continue }
            guard let bytes = readRegularFile(f, maxBytes: Self.maxRead) else {
                Log.shared.once(.warning, key: "journal:" + j, "ignoring \(j): larger than any record of uploads this program keeps")
                continue
            }
            var kept = ""
            for u in Self.unfinished(in: String(decoding: bytes, as: UTF8.self)) {
                guard u.store == store, let key = Self.decode(u.key) else {
                    kept += "+ \(u.store) \(u.key) \(u.uploadId)\n"
                    continue
                }
                do {
                    try abort(key, u.uploadId)
                    aborted += 1
                    Log.info("aborted the multipart upload of \(Names.display(key)) that an earlier run left (\(u.uploadId))")
                } catch {
                    kept += "+ \(u.store) \(u.key) \(u.uploadId)\n"
                    Log.warning("could not abort the multipart upload of \(Names.display(key)) that an earlier run left: \(error); trying again at the next mount")
                }
            }
            if kept.isEmpty {
                unlink(j)
            } else {
                _ = ftruncate(f, 0)
                let b = Array(kept.utf8)
                _ = b.withUnsafeBytes { pwrite(f, $0.baseAddress, $0.count, 0) }
            }
        }
        return aborted
    }

    static func encode(_ b: [UInt8]) -> String { b.isEmpty ? "-" : hexString(b) }
    static func decode(_ s: String) -> [UInt8]? { s == "-" ? [] : bytesOfHex(s) }
}
