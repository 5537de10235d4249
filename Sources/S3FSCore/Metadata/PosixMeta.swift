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
/// change, modification and access times, a symlink's target, a device number, extended
/// attributes. Kept in each object's user metadata in the headers s3fs writes (and rclone's
/// mtime), and in a per-directory index so that a listing can show it without a HeadObject per
/// entry (docs/ARCHITECTURE.md, "POSIX metadata").
public struct PosixMeta: Sendable, Equatable {
    /// `st_mode` with the type bits (S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK), as s3fs stores it.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// Set by writes, `utimensat`, `touch -d`, `cp -a`, `rsync -a`, `tar`; nil: the object's LastModified.
    public var mtime: Timestamp?
    /// Set by every change of the inode (chmod, chown, rename, writes, xattrs); nil: the mtime.
    public var ctime: Timestamp?
    /// Set only by `utimensat` (the mount behaves as `noatime`); nil: the mtime.
    public var atime: Timestamp?
    /// A symlink's target (also the object's body).
    public var linkTarget: [UInt8]?
    /// A character or block device's number (`st_rdev`); 0 for everything else.
    public var rdev: UInt64 = 0
    /// Extended attributes (`--xattr`): full names ("user.x") and values.
    public var xattrs: [String: [UInt8]] = [:]

    public init(mode: UInt32, uid: UInt32, gid: UInt32, mtime: Timestamp? = nil, linkTarget: [UInt8]? = nil) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.linkTarget = linkTarget
    }

    public var permissions: UInt32 { mode & 0o7777 }
    /// The type bits; a mode stored without them is a regular file.
    public var fileType: UInt32 { mode & UInt32(S_IFMT) == 0 ? UInt32(S_IFREG) : mode & UInt32(S_IFMT) }
    public var isSymlink: Bool { fileType == UInt32(S_IFLNK) }
    public var isDirectory: Bool { fileType == UInt32(S_IFDIR) }
    /// A FIFO, socket or device node: an empty object whose mode says what it is.
    public var isSpecial: Bool { [S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].contains { UInt32($0) == fileType } }

    /// Marks a change of the inode: ctime now (and mtime, for a change of its content).
    public mutating func touch(_ t: Timestamp, content: Bool = false) {
        if content { mtime = t }
        ctime = t
    }

    // MARK: - object headers (s3fs's names and formats; rclone reads the same mtime)

    /// The user metadata an object carries (names without `x-amz-meta-`): decimal st_mode, uid,
    /// gid, and the times in seconds (with nanoseconds after a dot when there are any: rclone
    /// writes and reads that form, s3fs reads its whole seconds); rdev and xattr as s3fs writes them.
    public func headers(mtimeIfUnset: Timestamp) -> [(String, String)] {
        var h = [("mode", String(mode)), ("uid", String(uid)), ("gid", String(gid)), ("mtime", (mtime ?? mtimeIfUnset).text)]
        if let ctime { h.append(("ctime", ctime.text)) }
        if let atime { h.append(("atime", atime.text)) }
        if rdev != 0 { h.append(("rdev", String(rdev))) }
        if !xattrs.isEmpty { h.append(("xattr", XattrCodec.encode(xattrs))) }
        return h
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
        m.ctime = h["ctime"].flatMap { Timestamp(text: $0.trimmingSpaces) }
        m.atime = h["atime"].flatMap { Timestamp(text: $0.trimmingSpaces) }
        if m.fileType == UInt32(S_IFCHR) || m.fileType == UInt32(S_IFBLK) { m.rdev = h["rdev"].flatMap { UInt64($0.trimmingSpaces) } ?? 0 }
        m.xattrs = h["xattr"].flatMap { XattrCodec.decode($0.trimmingSpaces) } ?? [:]
        return m
    }
}

/// s3fs's `x-amz-meta-xattr`: a JSON object of names and base64 values, percent-encoded as a
/// whole (`%7B%22user.a%22%3A%22dmFsdWU%3D%22%7D`), so that each tool reads what the other sets.
public enum XattrCodec {
    /// S3 keeps at most 2 KB of user metadata per object: what the other headers leave.
    public static let maxEncodedBytes = 1536

    /// A name s3fs can read back: its JSON is not escaped, so no quote, comma, colon, brace or control byte.
    public static func storable(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 255 && !name.utf8.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x2C || $0 == 0x3A || $0 == 0x7B || $0 == 0x7D || $0 == 0x5C || $0 == 0x7F }
    }

    public static func encode(_ x: [String: [UInt8]]) -> String {
        let json = "{" + x.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\(Base64.encode($0.value))\"" }.joined(separator: ",") + "}"
        return MetaIndexCodec.percent(Array(json.utf8))
    }

    /// The attributes, or nil when the text is not this format. Pairs that do not parse are skipped
    /// (as s3fs skips them).
    public static func decode(_ text: String) -> [String: [UInt8]]? {
        guard text.utf8.count <= 64 << 10, let raw = MetaIndexCodec.unpercent(text) else { return nil }
        let s = String(decoding: raw, as: UTF8.self)
        guard s.hasPrefix("{"), s.hasSuffix("}") else { return nil }
        var out: [String: [UInt8]] = [:]
        for pair in s.dropFirst().dropLast().split(separator: ",") {
            let parts = pair.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { continue }
            let k = parts[0].trimmingCharacters(in: " "), v = parts[1].trimmingCharacters(in: " ")
            guard k.count >= 2, k.first == "\"", k.last == "\"", v.count >= 2, v.first == "\"", v.last == "\"" else { continue }
            let name = String(k.dropFirst().dropLast())
            guard storable(name), let value = Base64.decode(String(v.dropFirst().dropLast())) else { continue }
            out[name] = value
        }
        return out
    }
}


/// Standard base64 with padding (RFC 4648), as s3fs writes xattr values.
enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ b: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((b.count + 2) / 3 * 4)
        var i = 0
        while i < b.count {
            let n = min(3, b.count - i)
            let v = (UInt32(b[i]) << 16) | (n > 1 ? UInt32(b[i + 1]) << 8 : 0) | (n > 2 ? UInt32(b[i + 2]) : 0)
            for j in 0..<4 { out.append(j <= n ? alphabet[Int((v >> (18 - 6 * UInt32(j))) & 63)] : 0x3D) }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ s: String) -> [UInt8]? {
        var out: [UInt8] = []
        var acc: UInt32 = 0, bits = 0, padding = 0
        for c in s.utf8 {
            if c == 0x3D { padding += 1; continue }
            guard padding == 0, let v = alphabet.firstIndex(of: c) else { return nil }
            acc = (acc << 6) | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> UInt32(bits)) & 0xFF))
            }
        }
        return padding <= 2 ? out : nil
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
///     NAME  ETAG|-  MODE(octal)  UID  GID  MTIME|-  TARGET|-  CTIME|-  ATIME|-  RDEV|-  XATTR|-
///
/// The last four columns came later and are written only up to the last one set: a reader that
/// knows seven ignores them, and a line with seven has none of them.
enum MetaIndexCodec {
    static let header = "s3mount-meta 1"

    static func encode(_ records: [[UInt8]: MetaRecord]) -> [UInt8] {
        var out = Array((header + "\n").utf8)
        for (name, r) in records.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            let m = r.meta
            var fields = [percent(name), r.etag.isEmpty ? "-" : field(Array(r.etag.utf8)), String(m.mode, radix: 8), String(m.uid), String(m.gid),
                          m.mtime?.text ?? "-", m.linkTarget.map(field) ?? "-",
                          m.ctime?.text ?? "-", m.atime?.text ?? "-", m.rdev == 0 ? "-" : String(m.rdev), m.xattrs.isEmpty ? "-" : XattrCodec.encode(m.xattrs)]
            // The later columns only when one is set: a line of seven is what earlier versions wrote.
            while fields.count > 7 && fields.last == "-" { fields.removeLast() }
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
            var m = PosixMeta(mode: mode, uid: uid, gid: gid, mtime: mtime, linkTarget: target)
            func column(_ i: Int) -> String? { f.count > i && f[i] != "-" ? f[i] : nil }
            m.ctime = column(7).flatMap { Timestamp(text: $0) }
            m.atime = column(8).flatMap { Timestamp(text: $0) }
            m.rdev = column(9).flatMap { UInt64($0) } ?? 0
            m.xattrs = column(10).flatMap { XattrCodec.decode($0) } ?? [:]
            out[name] = MetaRecord(etag: etag, meta: m)
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
