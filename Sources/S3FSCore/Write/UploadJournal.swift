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
    private let fd: Locked<Int32>

    /// nil when the file cannot be made: uploads work as before, without a record.
    public init?(spoolDir: String, store: String) {
        dir = spoolDir
        self.store = Self.encode(Array(store.utf8))
        path = "\(spoolDir)/s3mount-uploads-\(getpid()).journal"
        let f = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o600)
        guard f >= 0 else {
            Log.warning("cannot keep a record of multipart uploads in \(path): \(String(cString: strerror(errno)))")
            return nil
        }
        _ = flock(f, LOCK_EX)
        fd = Locked(f)
    }

    func started(_ key: [UInt8], uploadId: String) { append("+ \(store) \(Self.encode(key)) \(uploadId)\n") }
    func ended(uploadId: String) { append("- \(uploadId)\n") }

    private func append(_ line: String) {
        fd.withLock { f in
            guard f >= 0 else { return }
            let b = Array(line.utf8)
            _ = b.withUnsafeBytes { write(f, $0.baseAddress, $0.count) }
        }
    }

    /// At a clean exit: the record goes when nothing is left in it.
    public func close() {
        fd.withLock { f in
            guard f >= 0 else { return }
            if Self.unfinished(in: readTextFile(path) ?? "").isEmpty { unlink(path) }
            Glibc.close(f)
            f = -1
        }
    }

    /// Uploads started and not ended, in order, from a journal's text.
    static func unfinished(in text: String) -> [(store: String, key: String, uploadId: String)] {
        var started: [(store: String, key: String, uploadId: String)] = []
        var ended = Set<String>()
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ").map(String.init)
            if f.count == 4, f[0] == "+" { started.append((f[1], f[2], f[3])) }
            if f.count == 2, f[0] == "-" { ended.insert(f[1]) }
        }
        return started.filter { !ended.contains($0.uploadId) }
    }

    /// Aborts the uploads that earlier runs (processes that are gone) started in this store and
    /// never ended; keeps other stores' entries. Returns how many were aborted.
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
            let f = Glibc.open(j, O_RDWR | O_CLOEXEC)
            guard f >= 0 else { continue }
            defer { Glibc.close(f) }
            // Locked: its process still runs (another mount); its uploads are its own.
            guard flock(f, LOCK_EX | LOCK_NB) == 0 else { continue }
            var kept = ""
            for u in Self.unfinished(in: readTextFile(j) ?? "") {
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
