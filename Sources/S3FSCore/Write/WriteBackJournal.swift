import Glibc
import S3

/// `--write-back`: the durable record of the files whose `close` returned before S3 had them.
/// Each closed file is one record, appended and synced (fdatasync) before the close returns; a
/// later change of its key (a rename) or metadata (tar's utimens and chmod) is appended without a
/// sync of its own (the next record's sync carries it: a crash in between loses the change, never
/// the bytes); an upload that lands appends its end. A daemon that dies leaves the file behind,
/// and the next mount of the same bucket with the same spool finishes what it owes
/// (`Filesystem.finishEarlierWriteBacks`) before it answers lookups.
///
/// Files up to `inlineLimit` bytes travel inside the record itself: one sync per small file. A
/// larger one stays in its spool file, which is synced first, and the record names it.
///
/// On disk: segments `s3mount-writeback-PID-SEQ.journal` in the spool directory, each locked
/// (flock) while its process lives. A record is a header line, for `+` followed by its inline
/// bytes and a newline:
///
///     + ID STORE KEYHEX METAHEX SIZE SPOOLNAME inline|spooled
///     = ID KEYHEX METAHEX
///     - ID
///
/// A new segment begins past `segmentBytes`; a segment whose records have all ended is deleted.
public final class WriteBackJournal: @unchecked Sendable {
    public static let inlineLimit = 256 << 10
    static let segmentBytes = 16 << 20
    /// Larger than any segment this program writes (the last record may pass `segmentBytes`).
    static let maxSegmentRead = segmentBytes + inlineLimit + (64 << 10)

    let dir: String
    private let store: String
    private let pid = getpid()

    private struct Segment {
        var fd: Int32
        var path: String
        var bytes = 0
        /// Records begun here and not ended.
        var open = Set<UInt64>()
    }
    private struct State {
        var segments: [Int: Segment] = [:]
        var current = 0
        /// Which segment each open record began in.
        var home: [UInt64: Int] = [:]
        var nextId: UInt64 = 1
        /// Group commit: bytes appended to the journal (every segment, in order), and bytes known
        /// synced.
        var appended = 0
        var synced = 0
        var syncing = false
        var failed = false
    }
    private let state: Locked<State>
    private let synced = Condition()

    /// nil when the first segment cannot be made: the mount then refuses `--write-back`.
    public init?(spoolDir: String, store: String) {
        dir = spoolDir
        self.store = Self.storeName(store)
        state = Locked(State())
        guard openSegment(0) else { return nil }
    }

    private func segmentPath(_ seq: Int) -> String { "\(dir)/s3mount-writeback-\(pid)-\(seq).journal" }

    @discardableResult
    private func openSegment(_ seq: Int) -> Bool {
        let path = segmentPath(seq)
        // Never another live journal's file: truncated only once the lock says it is ours.
        guard let fd = OwnedFile.open(path, O_WRONLY | O_CREAT | O_APPEND) else {
            Log.error("write-back: cannot keep a journal in \(path): \(String(cString: strerror(errno)))")
            return false
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0, ftruncate(fd, 0) == 0 else {
            Log.error("write-back: cannot keep a journal in \(path): \(String(cString: strerror(errno)))")
            Glibc.close(fd)
            return false
        }
        state.withLock { s in
            s.segments[seq] = Segment(fd: fd, path: path)
            s.current = seq
        }
        return true
    }

    /// Records a closed file: its key, metadata and bytes (inline, or in its spool file, already
    /// synced). Returns its id once the record is on disk, or nil when it could not be written
    /// (the close must then wait for S3 instead).
    func begin(key: [UInt8], meta: [(String, String)], size: Int64, inline: [UInt8]?, spool: String) -> UInt64? {
        let id = state.withLock { s -> UInt64 in defer { s.nextId += 1 }; return s.nextId }
        let name = spool.split(separator: "/").last.map(String.init) ?? ""
        var line = Array("+ \(id) \(store) \(UploadJournal.encode(key)) \(Self.encodeMeta(meta)) \(size) \(name) \(inline != nil ? "inline" : "spooled")\n".utf8)
        if let inline { line += inline + [0x0A] }
        guard let end = append(line, opening: id) else { return nil }
        return waitSynced(end) ? id : nil
    }

    /// A pending file's new key or metadata (not synced: carried by the next sync).
    func note(_ id: UInt64, key: [UInt8], meta: [(String, String)]) {
        _ = append(Array("= \(id) \(UploadJournal.encode(key)) \(Self.encodeMeta(meta))\n".utf8), opening: nil, in: id)
    }

    /// Its upload landed, or it was discarded (unlinked, replaced by a newer record).
    func end(_ id: UInt64) {
        _ = append(Array("- \(id)\n".utf8), opening: nil, in: id, ending: true)
    }

    /// Appends to the current segment (starting a new one when it is full); returns the offset
    /// the bytes end at in the journal's whole stream, for `waitSynced`.
    private func append(_ bytes: [UInt8], opening: UInt64?, in record: UInt64? = nil, ending: Bool = false) -> Int? {
        state.withLock { s -> Int? in
            if let seg = s.segments[s.current], seg.bytes > Self.segmentBytes { rotate(&s) }
            guard var seg = s.segments[s.current], !s.failed || opening == nil else { return nil }
            let n = bytes.withUnsafeBytes { write(seg.fd, $0.baseAddress, $0.count) }
            guard n == bytes.count else {
                Log.error("write-back: writing the journal \(seg.path): \(String(cString: strerror(errno)))")
                s.failed = true
                return nil
            }
            seg.bytes += n
            s.appended += n
            if let opening {
                seg.open.insert(opening)
                s.home[opening] = s.current
            }
            s.segments[s.current] = seg
            if ending, let record, let home = s.home.removeValue(forKey: record) {
                s.segments[home]?.open.remove(record)
                if home != s.current, !s.syncing, let old = s.segments[home], old.open.isEmpty {
                    // Every record of an older segment has ended: it is no longer needed.
                    unlink(old.path)
                    Glibc.close(old.fd)
                    s.segments[home] = nil
                }
            }
            return s.appended
        }
    }

    /// Starts a new segment (under the lock): the old one is synced first and stays, locked,
    /// until its records end. If the new one cannot be made, the old one goes on growing.
    private func rotate(_ s: inout State) {
        let seq = s.current + 1
        guard let old = s.segments[s.current], fdatasync(old.fd) == 0,
              let fd = OwnedFile.open(segmentPath(seq), O_WRONLY | O_CREAT | O_APPEND) else { return }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0, ftruncate(fd, 0) == 0 else { Glibc.close(fd); return }
        s.segments[seq] = Segment(fd: fd, path: segmentPath(seq))
        s.current = seq
        s.synced = s.appended
    }

    /// Waits until the current segment is synced up to `end`: one fdatasync serves every record
    /// appended before it started (closes in parallel share it).
    private func waitSynced(_ end: Int) -> Bool {
        while true {
            var start: (fd: Int32, upTo: Int)? = nil
            var done = false
            synced.wait(until: {
                state.withLock { s in
                    if s.failed { done = true; return true }
                    if s.synced >= end { done = true; return true }
                    guard let seg = s.segments[s.current] else { s.failed = true; done = true; return true }
                    if !s.syncing { s.syncing = true; start = (seg.fd, s.appended); return true }
                    return false
                }
            })
            if done { return !state.withLock { $0.failed } }
            guard let (fd, upTo) = start else { continue }
            let ok = fdatasync(fd) == 0
            if !ok { Log.error("write-back: syncing the journal: \(String(cString: strerror(errno)))") }
            synced.broadcast {
                state.withLock { s in
                    s.syncing = false
                    if ok { s.synced = max(s.synced, upTo) } else { s.failed = true }
                }
            }
        }
    }

    /// Records not ended: for the statistics and the clean exit.
    var openRecords: Int { state.withLock { $0.home.count } }

    /// At a clean exit: segments go when nothing is left in them; what is left stays for the
    /// next mount.
    public func close() {
        state.withLock { s in
            for (_, seg) in s.segments {
                if seg.open.isEmpty { unlink(seg.path) }
                Glibc.close(seg.fd)
            }
            s.segments = [:]
        }
    }

    // MARK: - reading what an earlier run left

    /// A file an earlier run closed and did not upload.
    struct Owed: Equatable {
        var id: UInt64
        var store: String
        var key: [UInt8]
        var meta: [(String, String)]
        var size: Int64
        /// Its spool file, and its bytes when they travel in the record (else they are in the spool).
        var spool: String
        var inline: [UInt8]?

        static func == (a: Owed, b: Owed) -> Bool {
            a.id == b.id && a.store == b.store && a.key == b.key && a.size == b.size && a.inline == b.inline && a.spool == b.spool
                && a.meta.map { "\($0.0)=\($0.1)" } == b.meta.map { "\($0.0)=\($0.1)" }
        }
    }

    /// The records begun and not ended in a run's segments (concatenated in order), with their
    /// last key and metadata. A record cut short (the crash came while it was written: its close
    /// never returned) and anything that is not what `begin`, `note` and `end` write, ends the
    /// reading or is skipped; a spool name is a bare `s3mount-spool-` file name, never a path.
    static func owed(in bytes: [UInt8]) -> [Owed] {
        var records: [UInt64: Owed] = [:]
        var order: [UInt64] = []
        var i = 0
        while i < bytes.count {
            guard let nl = bytes[i...].firstIndex(of: 0x0A), nl - i <= 16 << 10 else { break }
            let fields = bytes[i..<nl].split(separator: 0x20, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            i = nl + 1
            guard let tag = fields.first, fields.count >= 2, let id = UInt64(fields[1]) else { continue }
            switch tag {
            case "+" where fields.count == 8:
                guard let key = UploadJournal.decode(fields[3]), let meta = decodeMeta(fields[4]), let size = Int64(fields[5]), size >= 0,
                      isSpoolName(fields[6]) else { continue }
                var o = Owed(id: id, store: fields[2], key: key, meta: meta, size: size, spool: fields[6], inline: nil)
                if fields[7] == "inline" {
                    // The bytes, then a newline: all there, or the record was never finished.
                    guard size <= Int64(inlineLimit), bytes.count - i > Int(size), bytes[i + Int(size)] == 0x0A else { return order.compactMap { records[$0] } }
                    o.inline = Array(bytes[i..<(i + Int(size))])
                    i += Int(size) + 1
                } else if fields[7] != "spooled" {
                    continue
                }
                if records[id] == nil { order.append(id) }
                records[id] = o
            case "=" where fields.count == 4:
                guard let key = UploadJournal.decode(fields[2]), let meta = decodeMeta(fields[3]) else { continue }
                records[id]?.key = key
                records[id]?.meta = meta
            case "-" where fields.count == 2:
                records[id] = nil
            default:
                continue
            }
        }
        return order.compactMap { records[$0] }
    }

    /// Marks records of a run that is gone as ended, in its last segment (synced).
    static func endRecords(_ ids: [UInt64], in path: String) {
        guard let fd = OwnedFile.open(path, O_WRONLY | O_APPEND) else { return }
        defer { Glibc.close(fd) }
        let b = Array(ids.map { "- \($0)\n" }.joined().utf8)
        _ = b.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        _ = fdatasync(fd)
    }

    static func isSpoolName(_ s: String) -> Bool {
        s.hasPrefix("s3mount-spool-") && s.utf8.count <= 64 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x2D }
    }

    /// Metadata headers as hex of `name=value` lines ("-" for none).
    static func encodeMeta(_ h: [(String, String)]) -> String {
        h.isEmpty ? "-" : hexString(Array(h.map { "\($0.0)=\($0.1)" }.joined(separator: "\n").utf8))
    }

    static func decodeMeta(_ s: String) -> [(String, String)]? {
        if s == "-" { return [] }
        guard s.utf8.count <= 8192, let b = bytesOfHex(s) else { return nil }
        var out: [(String, String)] = []
        for line in String(decoding: b, as: UTF8.self).split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { return nil }
            out.append((String(line[..<eq]), String(line[line.index(after: eq)...])))
        }
        return out
    }

    /// The segments of runs that are gone (no lock held on them), by process, in order.
    static func earlierRuns(in dir: String) -> [(paths: [String], fds: [Int32])] {
        let pid = getpid()
        guard let d = opendir(dir) else { return [] }
        var byPid: [String: [(Int, String)]] = [:]
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasPrefix("s3mount-writeback-"), name.hasSuffix(".journal") else { continue }
            let parts = name.dropFirst("s3mount-writeback-".count).dropLast(".journal".count).split(separator: "-")
            guard parts.count == 2, let p = Int32(parts[0]), p != pid, let seq = Int(parts[1]) else { continue }
            byPid[String(parts[0]), default: []].append((seq, "\(dir)/\(name)"))
        }
        closedir(d)
        var runs: [(paths: [String], fds: [Int32])] = []
        for (_, segs) in byPid {
            var paths: [String] = [], fds: [Int32] = []
            var alive = false
            for (_, path) in segs.sorted(by: { $0.0 < $1.0 }) {
                guard let fd = OwnedFile.open(path, O_RDONLY) else { continue }
                // Locked: its process still runs (another mount with the same spool).
                if flock(fd, LOCK_EX | LOCK_NB) != 0 { alive = true; Glibc.close(fd); break }
                paths.append(path)
                fds.append(fd)
            }
            if alive { for f in fds { Glibc.close(f) }; continue }
            if !paths.isEmpty { runs.append((paths, fds)) }
        }
        return runs
    }

    /// How a store is named in records.
    static func storeName(_ store: String) -> String { UploadJournal.encode(Array(store.utf8)) }
}
