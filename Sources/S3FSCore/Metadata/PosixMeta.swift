import Glibc

/// A time to the nanosecond, as `utimensat` sets and `stat` shows it (a Double loses the
/// nanoseconds of today's dates, and rsync, make and tar compare them).
public struct Timestamp: Sendable, Equatable, Comparable {
    public var sec: Int64
    public var nsec: UInt32

    public init(sec: Int64, nsec: UInt32 = 0) {
        self.sec = sec
        self.nsec = min(nsec, 999_999_999)
    }

    public init(seconds d: Double) {
        let s = d.rounded(.down)
        self.init(sec: Int64(s), nsec: UInt32(max(0, min(999_999_999, ((d - s) * 1e9).rounded()))))
    }

    public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(sec: Int64(ts.tv_sec), nsec: UInt32(ts.tv_nsec))
    }

    public var seconds: Double { Double(sec) + Double(nsec) / 1e9 }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { (a.sec, a.nsec) < (b.sec, b.nsec) }

    /// "SECONDS" or "SECONDS.NNNNNNNNN".
    public var text: String {
        if nsec == 0 { return String(sec) }
        let f = String(nsec)
        return "\(sec).\(String(repeating: "0", count: 9 - f.count))\(f)"
    }

    /// Parses "SECONDS" with an optional fraction of up to 9 digits (more are cut).
    public init?(text: String) {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let s = Int64(parts[0]) else { return nil }
        var ns: UInt32 = 0
        if parts.count == 2 {
            let digits = parts[1].prefix(9)
            guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            ns = UInt32(digits + String(repeating: "0", count: 9 - digits.count))!
        }
        self.init(sec: s, nsec: ns)
    }
}

/// What a local disk keeps of a file and S3 does not: type and permission bits, owner, group,
/// modification time, a symlink's target. Kept in each object's user metadata in the headers
/// s3fs writes (and rclone's mtime), and in a per-directory index so that a listing can show it
/// without a HeadObject per entry (docs/ARCHITECTURE.md, "POSIX metadata").
public struct PosixMeta: Sendable, Equatable {
    /// `st_mode` with the type bits (S_IFREG, S_IFDIR, S_IFLNK), as s3fs stores it.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// Set by `utimensat`, `touch -d`, `cp -a`, `rsync -a`, `tar`; nil: the object's LastModified.
    public var mtime: Timestamp?
    /// A symlink's target (also the object's body).
    public var linkTarget: [UInt8]?

    public init(mode: UInt32, uid: UInt32, gid: UInt32, mtime: Timestamp? = nil, linkTarget: [UInt8]? = nil) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.linkTarget = linkTarget
    }

    public var permissions: UInt32 { mode & 0o7777 }
    public var isSymlink: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFLNK) }
    public var isDirectory: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFDIR) }

    // MARK: - object headers (s3fs's names and formats; rclone reads the same mtime)

    /// The user metadata an object carries (names without `x-amz-meta-`): decimal st_mode, uid,
    /// gid, and the mtime in seconds (with nanoseconds after a dot when there are any: rclone
    /// writes and reads that form, s3fs reads its whole seconds).
    public func headers(mtimeIfUnset: Timestamp) -> [(String, String)] {
        [("mode", String(mode)), ("uid", String(uid)), ("gid", String(gid)), ("mtime", (mtime ?? mtimeIfUnset).text)]
    }

    /// What an object's headers say (from a HeadObject), or nil when it carries none of ours.
    /// Missing fields come from `defaults`; a mode without type bits gets `type`'s.
    public static func from(headers h: [String: String], defaults: PosixMeta, type: UInt32) -> PosixMeta? {
        let mode = h["mode"].flatMap { UInt32($0.trimmingSpaces) }
        let uid = h["uid"].flatMap { UInt32($0.trimmingSpaces) }
        let gid = h["gid"].flatMap { UInt32($0.trimmingSpaces) }
        // rclone's float seconds, s3fs's whole seconds; Google's reserved name as s3fs also reads it.
        let mtime = (h["mtime"] ?? h["goog-reserved-file-mtime"]).flatMap { Timestamp(text: $0.trimmingSpaces) }
        if mode == nil && uid == nil && gid == nil && mtime == nil { return nil }
        var m = defaults
        if var mode {
            if mode & UInt32(S_IFMT) == 0 { mode |= type }
            m.mode = mode
        }
        if let uid { m.uid = uid }
        if let gid { m.gid = gid }
        m.mtime = mtime
        return m
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}

/// One entry of a directory's metadata index: the metadata of a name, valid while the object has
/// `etag` (another tool's overwrite changes the ETag, and the listing's attributes apply again).
/// Directories have no ETag to compare (""): their entry applies while the directory exists.
public struct MetaRecord: Sendable, Equatable {
    public var etag: String
    public var meta: PosixMeta
    public init(etag: String, meta: PosixMeta) {
        self.etag = etag
        self.meta = meta
    }
}

/// The index object's format: a text file, one line per name, fields separated by tabs; names
/// and link targets percent-encoded (any byte may be in a key), so the file is plain ASCII.
///
///     s3mount-meta 1
///     NAME  ETAG|-  MODE(octal)  UID  GID  MTIME|-  TARGET|-
enum MetaIndexCodec {
    static let header = "s3mount-meta 1"

    static func encode(_ records: [[UInt8]: MetaRecord]) -> [UInt8] {
        var out = Array((header + "\n").utf8)
        for (name, r) in records.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            let m = r.meta
            let fields = [percent(name), r.etag.isEmpty ? "-" : field(Array(r.etag.utf8)), String(m.mode, radix: 8), String(m.uid), String(m.gid),
                          m.mtime?.text ?? "-", m.linkTarget.map(field) ?? "-"]
            out += Array(fields.joined(separator: "\t").utf8)
            out.append(0x0A)
        }
        return out
    }

    /// The records, or nil when the bytes are not an index of this format. Bad lines are skipped.
    static func decode(_ bytes: [UInt8]) -> [[UInt8]: MetaRecord]? {
        let lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: true)
        guard let first = lines.first, String(decoding: first, as: UTF8.self).trimmingSpaces == header else { return nil }
        var out: [[UInt8]: MetaRecord] = [:]
        for line in lines.dropFirst() {
            let f = line.split(separator: 0x09, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            guard f.count >= 7, let name = unpercent(f[0]), !name.isEmpty,
                  let mode = UInt32(f[2], radix: 8), let uid = UInt32(f[3]), let gid = UInt32(f[4]) else { continue }
            let etag = f[1] == "-" ? "" : unpercent(f[1]).map { String(decoding: $0, as: UTF8.self) } ?? ""
            let mtime = f[5] == "-" ? nil : Timestamp(text: f[5])
            let target = f[6] == "-" ? nil : unpercent(f[6])
            out[name] = MetaRecord(etag: etag, meta: PosixMeta(mode: mode, uid: uid, gid: gid, mtime: mtime, linkTarget: target))
        }
        return out
    }

    /// An optional field's value: "-" alone stands for none, so a value "-" (a symlink to a file
    /// named "-") is written "%2D".
    static func field(_ b: [UInt8]) -> String { b == [0x2D] ? "%2D" : percent(b) }

    static func percent(_ b: [UInt8]) -> String {
        var s = ""
        s.reserveCapacity(b.count)
        for c in b {
            let plain = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x2E || c == 0x5F || c == 0x7E
            if plain { s.unicodeScalars.append(Unicode.Scalar(c)) } else {
                let h = String(c, radix: 16, uppercase: true)
                s += "%" + (h.count == 1 ? "0" : "") + h
            }
        }
        return s
    }

    static func unpercent(_ s: String) -> [UInt8]? {
        let b = Array(s.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(b.count)
        var i = 0
        while i < b.count {
            if b[i] == 0x25 {
                guard i + 2 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) else { return nil }
                out.append(v)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return out
    }
}
