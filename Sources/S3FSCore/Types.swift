import Glibc
import S3

public struct FSOptions: Sendable {
    /// Key prefix the mount root shows: "" for the bucket root, else ending in "/".
    public var prefix: [UInt8] = []
    public var uid: UInt32 = getuid()
    public var gid: UInt32 = getgid()
    public var fileMode: UInt32 = 0o644
    public var dirMode: UInt32 = 0o755
    /// Bits no file or directory shows, whatever the bucket stores (`--umask`).
    public var umask: UInt32 = 0
    /// Every file and directory shows `uid` and `gid` (`--force-owner`).
    public var forceOwner = false
    /// Seconds a listing, attribute or negative entry is trusted; .infinity = indefinite.
    public var metadataTTL: Double = 60
    public var readOnly = false
    /// Bytes a streaming read may buffer ahead of the reader.
    public var readAhead = 8 << 20
    /// The kernel's read-ahead window for the mount: its parallel reads of one file arrive in any
    /// order up to four times this apart (fadvise SEQUENTIAL, as `cat` asks, doubles the window,
    /// and the next window is asked for before the current one is read).
    public var kernelReadAhead = 4 << 20
    public var listPageSize = 1000
    /// Start each directory listing with one flat (no delimiter) page of its subtree: a subtree
    /// that fits makes every directory in it complete at once (find, du, ls -R cost one request).
    public var flatListing = true
    /// Flat pages a directory opened during a recursive walk may take before it continues by
    /// delimiter (bounds what a quick click into a huge directory costs).
    public var walkPageLimit = 16
    /// Sweep expired cache entries in the background (off in unit tests that count requests).
    public var sweepCaches = true
    /// Where files being written are spooled before upload.
    public var spoolDir = "/var/tmp"
    /// Above this size a file is uploaded as a multipart upload, parts leaving while it is written.
    public var multipartThreshold: Int64 = 16 << 20
    public var partSize: Int64 = 8 << 20
    public var parallelParts = 8
    /// Reads: the largest ranged GET of a sequential reader's parallel parts, and how many parts
    /// one reader keeps in flight (1: one stream, never parts).
    public var readPartSize = 8 << 20
    public var readConcurrency = 10
    /// Threads fetching parts for the whole mount, and the bytes their buffers may hold.
    public var readThreads = 64
    public var maxReadMemory = 256 << 20
    /// A first stream slower than this (bytes/s) switches its reader, and later readers, to parts.
    public var parallelBelowBytesPerSecond: Double = 300e6
    /// The local data cache: nil for none.
    public var cacheDir: String? = nil
    public var maxCacheSize: Int64 = 1 << 30
    /// Files of a directory read in listing order: how many later ones (each at most
    /// `walkReadAheadMaxSize` bytes) are fetched ahead; 0 turns it off.
    public var walkReadAhead = 8
    public var walkReadAheadMaxSize: Int64 = 1 << 20
    /// Streams of whole objects check the CRC-32 S3 sends with them (`--no-verify-reads`: not).
    public var verifyReads = true
    /// Where modes, owners, mtimes and symlinks live (docs/SEMANTICS.md, "POSIX metadata").
    public var metadata: MetadataMode = .index
    /// Seconds a metadata change may wait before its directory's index is written back.
    public var metadataDebounce: Double = 1.0
    /// S3 event notifications keep the caches current (`--notification-queue`): the mount notes
    /// its own changes so that their events change nothing.
    public var notifications = false
    /// Extended attributes (`--xattr`): `user.*` kept with the objects, the rest answered locally.
    /// Off: the kernel is told at once that there are none, and `ls -l` asks nothing per file.
    public var xattr = false
    /// `--write-back`: `close` returns once the file is in the journal on local disk; uploads run
    /// in the background, at most this many files and bytes owed at once (a close past that waits).
    public var writeBack = false
    public var writeBackMaxFiles = 1024
    public var writeBackMaxBytes: Int64 = 1 << 30
    /// The TTL while the notification queue cannot be read.
    public var degradedTTL: Double = 60
    public init() {}
}

/// `--metadata`: how modes, owners, mtimes and symlinks are kept.
public enum MetadataMode: String, Sendable, CaseIterable {
    /// Objects carry s3fs's headers; a per-directory index object lets a listing show them
    /// without a HeadObject per entry (the default).
    case index
    /// As `index`, and entries the index does not cover (a bucket written by s3fs or rclone) are
    /// asked for their headers with HeadObject when a program stats them.
    case head
    /// Mount-wide modes and owners (--file-mode, --dir-mode, --uid, --gid), nothing stored; chmod
    /// and chown to other values are EPERM, symlinks too.
    case none
}

public enum EntryKind: Sendable, Equatable { case file, directory }

public struct Attributes: Sendable, Equatable {
    public var ino: UInt64
    /// The object's shape in S3: a key (file or symlink) or a prefix (directory).
    public var kind: EntryKind
    public var size: Int64
    public var mtime: Timestamp
    /// Permission bits (with setuid, setgid, sticky); the bridge adds the file type.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// A file's type bits as its metadata says: S_IFREG, or S_IFLNK (its body is the target),
    /// S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK (an empty object).
    public var fileType = UInt32(S_IFREG)
    public var isSymlink: Bool {
        get { fileType == UInt32(S_IFLNK) }
        set { fileType = UInt32(newValue ? S_IFLNK : S_IFREG) }
    }
    /// nil: the mtime (no change of the inode since its content changed).
    public var ctime: Timestamp? = nil
    /// nil: the mtime (the mount behaves as `noatime`).
    public var atime: Timestamp? = nil
    /// A device node's number.
    public var rdev: UInt64 = 0
    /// Shown before the object's own headers were read (`--metadata head`): the kernel must not
    /// keep them, so that a stat asks again.
    public var provisional = false
    /// Open and no longer under any name (unlinked while open): `fstat` shows no link.
    public var unlinked = false
    public var nlink: UInt32 { kind == .directory ? 2 : unlinked ? 0 : 1 }
    /// st_mode's file type bits.
    public var typeBits: UInt32 { kind == .directory ? UInt32(S_IFDIR) : fileType }
}

public struct FSError: Error, Equatable, CustomStringConvertible {
    public var errno: Int32
    public init(_ e: Int32) { errno = e }
    /// The errno for any failure below the core: S3's own mapping, else EIO.
    init(_ error: any Error) {
        errno = (error as? FSError)?.errno ?? (error as? S3Error)?.errno ?? EIO
    }
    public var description: String { String(cString: strerror(errno)) }
}

/// What a name in a directory is, as learned from a listing.
/// Field order matters: one is kept per listed object, and this order packs it in 48 bytes (56
/// with `kind` first).
struct CachedEntry: Sendable {
    var size: Int64
    var mtime: Double
    /// Monotonic time the entry was learned.
    var at: Double
    private var tag: CompactETag
    var kind: EntryKind
    /// The listing's storage class, as 1 + its index in `StorageClass.known` (0: not known);
    /// one byte, so the entry stays 48 bytes.
    private var storageClassCode: UInt8 = 0

    init(kind: EntryKind, size: Int64, mtime: Double, etag: String, at: Double, storageClass: String? = nil) {
        self.kind = kind
        self.size = size
        self.mtime = mtime
        self.tag = CompactETag(etag)
        self.at = at
        self.storageClass = storageClass
    }

    /// nil when not known (an entry this mount made, or a class S3 added after this list).
    var storageClass: String? {
        get { storageClassCode == 0 ? nil : StorageClass.known[Int(storageClassCode) - 1] }
        set { storageClassCode = newValue.flatMap { StorageClass.known.firstIndex(of: $0) }.map { UInt8($0 + 1) } ?? 0 }
    }

    /// Listed in a class that must be restored before its bytes can be read.
    var isArchived: Bool { StorageClass.isArchived(storageClass) }

    var etag: String {
        get { tag.string }
        set { tag = CompactETag(newValue) }
    }
}

/// An ETag in 16 bytes when it is the usual quoted MD5 hex, instead of a heap string: the
/// attribute cache holds one per listed object.
enum CompactETag: Sendable {
    case none
    case md5(UInt64, UInt64)
    case other(String)

    init(_ s: String) {
        let b = Array(s.utf8)
        if b.isEmpty { self = .none; return }
        if b.count == 34, b.first == 0x22, b.last == 0x22,
           let hi = UInt64(String(decoding: b[1..<17], as: UTF8.self), radix: 16),
           let lo = UInt64(String(decoding: b[17..<33], as: UTF8.self), radix: 16),
           b[1..<33].allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) {
            self = .md5(hi, lo)
            return
        }
        self = .other(s)
    }

    var string: String {
        switch self {
        case .none: return ""
        case .other(let s): return s
        case .md5(let hi, let lo):
            func hex(_ v: UInt64) -> String {
                let s = String(v, radix: 16)
                return String(repeating: "0", count: 16 - s.count) + s
            }
            return "\"" + hex(hi) + hex(lo) + "\""
        }
    }
}

public struct CacheCounters: Sendable {
    public var attrHits = 0, attrMisses = 0
    public var negativeHits = 0, negativeMisses = 0
    public var listingHits = 0, listingMisses = 0
    public var skippedNames = 0
}

public struct StatfsInfo: Sendable {
    public var blockSize: UInt64 = 1 << 20
    public var blocks: UInt64 = 1 << 32
    public var freeBlocks: UInt64 = 1 << 32
    public var files: UInt64 = 1 << 32
    public var freeFiles: UInt64 = 1 << 32
    public var nameMax: UInt64 = 255
}
