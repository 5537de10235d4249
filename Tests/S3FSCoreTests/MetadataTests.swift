import Foundation
import Glibc
import XCTest
import S3
@testable import S3FSCore

/// The metadata part on its own and through the filesystem, over the in-memory store: formats,
/// what a listing shows, conflicts between two mounts, and what another tool's overwrite does.
final class MetadataTests: XCTestCase {

    func make(_ store: InMemoryStore, ttl: Double = 60, mode: MetadataMode = .index) -> Filesystem {
        var o = FSOptions()
        o.metadataTTL = ttl
        o.listPageSize = 3
        o.metadata = mode
        o.metadataDebounce = 0.05
        o.spoolDir = NSTemporaryDirectory()
        o.sweepCaches = false
        return Filesystem(store: store, options: o)
    }

    func lookup(_ fs: Filesystem, _ parent: UInt64, _ name: String) -> Attributes? {
        try! fs.lookup(parent: parent, name: b(name)).get()
    }

    func names(_ fs: Filesystem, _ ino: UInt64) -> [String] {
        let h = try! fs.opendir(ino: ino).get()
        defer { fs.releasedir(handle: h) }
        var out: [String] = []
        var off: Int64 = 0
        while true {
            var got = 0
            _ = fs.readdir(handle: h, offset: off, plus: true) { e in
                if !e.isDotEntry { out.append(String(decoding: e.name, as: UTF8.self)) }
                off = e.nextOffset
                got += 1
                return true
            }
            if got == 0 { break }
        }
        return out
    }

    func testTimestampsKeepNanosecondsInBothTextForms() {
        XCTAssertEqual(Timestamp(text: "1600000000.123456789"), Timestamp(sec: 1_600_000_000, nsec: 123_456_789))
        // rclone trims trailing zeros: ".5" is half a second, not 5 ns.
        XCTAssertEqual(Timestamp(text: "1600000000.5"), Timestamp(sec: 1_600_000_000, nsec: 500_000_000))
        XCTAssertEqual(Timestamp(text: "1600000000"), Timestamp(sec: 1_600_000_000))
        XCTAssertNil(Timestamp(text: "1970-01-01"))
        XCTAssertNil(Timestamp(text: "12.x"))
        // Written with all nine digits: s3fs reads the fraction as a count of nanoseconds.
        XCTAssertEqual(Timestamp(sec: 5, nsec: 5).text, "5.000000005")
        XCTAssertEqual(Timestamp(sec: 5).text, "5")
    }

    func testHeadersAreWhatS3fsWritesAndReadBack() {
        let m = PosixMeta(mode: UInt32(S_IFREG) | 0o640, uid: 1000, gid: 100, mtime: Timestamp(sec: 7, nsec: 1))
        let h = Dictionary(m.headers(mtimeIfUnset: Timestamp(sec: 9)), uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(h, ["mode": "33184", "uid": "1000", "gid": "100", "mtime": "7.000000001"])
        let defaults = PosixMeta(mode: UInt32(S_IFREG) | 0o644, uid: 0, gid: 0)
        XCTAssertEqual(PosixMeta.from(headers: h, defaults: defaults, type: UInt32(S_IFREG)), m)
        // A mode without type bits (s3fs's mkdir) gets the entry's type; no header at all: nil.
        XCTAssertEqual(PosixMeta.from(headers: ["mode": "493"], defaults: defaults, type: UInt32(S_IFDIR))?.mode, UInt32(S_IFDIR) | 0o755)
        XCTAssertNil(PosixMeta.from(headers: ["other": "x"], defaults: defaults, type: UInt32(S_IFREG)))
    }

    func testIndexFormatRoundTripsOddNamesAndTargets() {
        let odd: [[UInt8]] = [b("plain"), b("tab\there"), b("nl\nname"), b("100%"), [0xFF, 0xFE], b("caf\u{00e9}"), b(".")]
        var records: [[UInt8]: MetaRecord] = [:]
        for (i, n) in odd.enumerated() {
            records[n] = MetaRecord(etag: "\"e\(i)\"", meta: PosixMeta(mode: UInt32(S_IFLNK) | 0o777, uid: UInt32(i), gid: 7,
                                                                        mtime: i % 2 == 0 ? nil : Timestamp(sec: Int64(i), nsec: 9),
                                                                        linkTarget: i == 3 ? [0x20, 0x0A, 0x09] : b("t\(i)")))
        }
        let bytes = MetaIndexCodec.encode(records)
        XCTAssertFalse(bytes.contains(0x09) && String(decoding: bytes, as: UTF8.self).contains("\tnl\n"), "names never break the lines")
        XCTAssertEqual(MetaIndexCodec.decode(bytes), records)
        XCTAssertNil(MetaIndexCodec.decode(b("<html>not an index</html>")))
        // A damaged line is skipped, the rest still read.
        let damaged = b("s3mount-meta 1\nbad line\nok\t-\t100644\t1\t2\t-\t-\n")
        XCTAssertEqual(MetaIndexCodec.decode(damaged)?.count, 1)
    }

    func testModesShowAfterARemountWithOneIndexReadAndTheIndexIsHidden() throws {
        let store = InMemoryStore()
        let fs = make(store)
        let caller = Filesystem.Caller(uid: 1000, gid: 1000)
        let d = try fs.mkdir(parent: Filesystem.rootIno, name: b("d"), mode: 0o750, caller: caller).get()
        for i in 0..<5 {
            let (a, h) = try fs.create(parent: d.ino, name: b("f\(i)"), flags: O_WRONLY, mode: i == 0 ? 0o644 : 0o600, caller: caller).get()
            XCTAssertEqual(a.mode, i == 0 ? 0o644 : 0o600)
            XCTAssertNil(fs.flush(handle: h, final: true))
            fs.release(handle: h)
        }
        XCTAssertTrue(try fs.symlink(parent: d.ino, name: b("ln"), target: b("f1"), caller: caller).get().isSymlink)
        XCTAssertTrue(fs.meta.flush())
        XCTAssertNotNil(store.data("d/.s3mount-meta"))
        XCTAssertEqual(store.meta("d/f1")?["mode"], String(UInt32(S_IFREG) | 0o600))

        let again = make(store)
        let d2 = lookup(again, Filesystem.rootIno, "d")!
        XCTAssertEqual(d2.mode, 0o750)
        XCTAssertEqual(d2.uid, 1000)
        let gets = store.getCalls
        XCTAssertEqual(names(again, d2.ino), ["f0", "f1", "f2", "f3", "f4", "ln"], "the index is not an entry")
        XCTAssertNil(lookup(again, d2.ino, ".s3mount-meta"))
        XCTAssertEqual(lookup(again, d2.ino, "f0")?.mode, 0o644)
        XCTAssertEqual(lookup(again, d2.ino, "f3")?.mode, 0o600)
        XCTAssertEqual(lookup(again, d2.ino, "f3")?.uid, 1000)
        let ln = lookup(again, d2.ino, "ln")!
        XCTAssertTrue(ln.isSymlink)
        XCTAssertEqual(try again.readlink(ino: ln.ino).get(), b("f1"))
        XCTAssertEqual(store.getCalls - gets, 1, "one GET of the index for the whole directory")
        XCTAssertEqual(store.headCalls, 0)
    }

    func testAnOverwriteByAnotherToolFallsBackToWhatTheListingSays() throws {
        let store = InMemoryStore()
        let fs = make(store)
        let (_, h) = try fs.create(parent: Filesystem.rootIno, name: b("x"), flags: O_WRONLY, mode: 0o600).get()
        XCTAssertNil(fs.flush(handle: h, final: true))
        fs.release(handle: h)
        XCTAssertTrue(fs.meta.flush())
        store.put("x", "replaced by another tool")
        let again = make(store)
        XCTAssertEqual(lookup(again, Filesystem.rootIno, "x")?.mode, 0o644, "the ETag changed: the index entry no longer applies")
    }

    func testMetadataNoneUploadsNoMetadataHeaders() throws {
        let store = InMemoryStore()
        let fs = make(store, mode: .none)
        let (_, h) = try fs.create(parent: Filesystem.rootIno, name: b("plain"), flags: O_WRONLY, mode: 0o600).get()
        XCTAssertEqual(try b("abc").withUnsafeBytes { try fs.write(handle: h, offset: 0, data: $0).get() }, 3)
        XCTAssertNil(fs.flush(handle: h, final: true))
        fs.release(handle: h)
        XCTAssertEqual(store.data("plain"), b("abc"))
        XCTAssertEqual(store.meta("plain") ?? [:], [:], "nothing kept: no mode, owner or mtime header")
        // The same file with the index on carries them.
        let kept = make(store)
        let (_, h2) = try kept.create(parent: Filesystem.rootIno, name: b("kept"), flags: O_WRONLY, mode: 0o600).get()
        XCTAssertNil(kept.flush(handle: h2, final: true))
        kept.release(handle: h2)
        XCTAssertEqual(store.meta("kept")?["mode"], String(UInt32(S_IFREG) | 0o600))
    }

    func testTwoMountsChangingOneDirectoryKeepBothChanges() throws {
        let store = InMemoryStore()
        store.put("shared/a")
        store.put("shared/b")
        let one = make(store), two = make(store)
        let d1 = lookup(one, Filesystem.rootIno, "shared")!, d2 = lookup(two, Filesystem.rootIno, "shared")!
        _ = names(one, d1.ino)
        _ = names(two, d2.ino)
        let a = lookup(one, d1.ino, "a")!, bb = lookup(two, d2.ino, "b")!
        _ = try one.setattr(ino: a.ino, size: nil, mode: 0o600, uid: nil, gid: nil, handle: nil).get()
        _ = try two.setattr(ino: bb.ino, size: nil, mode: 0o700, uid: nil, gid: nil, handle: nil).get()
        XCTAssertTrue(one.meta.flush())
        XCTAssertTrue(two.meta.flush(), "the second write finds the first (412), reads it and puts its change on top")
        XCTAssertEqual(store.preconditionFailures, 1)
        let three = make(store)
        let d3 = lookup(three, Filesystem.rootIno, "shared")!
        XCTAssertEqual(lookup(three, d3.ino, "a")?.mode, 0o600)
        XCTAssertEqual(lookup(three, d3.ino, "b")?.mode, 0o700)
    }

    func testChangesAfterTheUploadGoToTheIndexNotToACopy() throws {
        let store = InMemoryStore()
        store.put("f")
        let fs = make(store)
        let f = lookup(fs, Filesystem.rootIno, "f")!
        _ = try fs.setattr(ino: f.ino, size: nil, mode: 0o700, uid: nil, gid: nil, handle: nil).get()
        _ = try fs.setattr(ino: f.ino, size: nil, mode: nil, uid: nil, gid: nil, mtime: Timestamp(sec: 1234, nsec: 5), handle: nil).get()
        XCTAssertTrue(fs.meta.flush())
        XCTAssertEqual(store.copyCalls, 0, "tar's chmod and utimens after each close cost no request of their own")
        XCTAssertNil(store.meta("f")?["mtime"], "the object's headers keep what its upload said")
        let two = make(store)
        let again = lookup(two, Filesystem.rootIno, "f")!
        XCTAssertEqual(again.mode, 0o700)
        XCTAssertEqual(again.mtime, Timestamp(sec: 1234, nsec: 5))
    }

    /// `--metadata head`, for buckets shared with tools that read only headers (s3fs).
    func testWithHeadersKeptChangesInARowAreOneCopyAndARenameCarriesThem() throws {
        let store = InMemoryStore()
        store.put("f")
        store.put("g")
        let fs = make(store, mode: .head)
        let f = lookup(fs, Filesystem.rootIno, "f")!
        _ = try fs.setattr(ino: f.ino, size: nil, mode: 0o700, uid: nil, gid: nil, handle: nil).get()
        let a = try fs.setattr(ino: f.ino, size: nil, mode: nil, uid: nil, gid: nil, mtime: Timestamp(sec: 1234, nsec: 5), handle: nil).get()
        XCTAssertEqual(a.mode, 0o700)
        XCTAssertEqual(a.mtime, Timestamp(sec: 1234, nsec: 5))
        XCTAssertEqual(store.copyCalls, 0, "not sent yet")
        XCTAssertTrue(fs.meta.flush())
        XCTAssertEqual(store.copyCalls, 1)
        XCTAssertEqual(store.meta("f")?["mtime"], "1234.000000005")
        // A chmod then a rename: one copy, which carries the new mode.
        let g = lookup(fs, Filesystem.rootIno, "g")!
        _ = try fs.setattr(ino: g.ino, size: nil, mode: 0o640, uid: nil, gid: nil, handle: nil).get()
        XCTAssertNil(fs.rename(parent: Filesystem.rootIno, name: b("g"), newParent: Filesystem.rootIno, newName: b("h"), flags: 0))
        XCTAssertTrue(fs.meta.flush())
        XCTAssertEqual(store.copyCalls, 2)
        XCTAssertEqual(store.meta("h")?["mode"], String(UInt32(S_IFREG) | 0o640))
        XCTAssertNil(store.data("g"))
    }

    func testRemovingADirectoryRemovesItsIndex() throws {
        let store = InMemoryStore()
        let fs = make(store)
        let d = try fs.mkdir(parent: Filesystem.rootIno, name: b("d"), mode: 0o755, caller: Filesystem.Caller(uid: 0, gid: 0)).get()
        let (_, h) = try fs.create(parent: d.ino, name: b("f"), flags: O_WRONLY, mode: 0o600).get()
        XCTAssertNil(fs.flush(handle: h, final: true))
        fs.release(handle: h)
        XCTAssertTrue(fs.meta.flush())
        XCTAssertNotNil(store.data("d/.s3mount-meta"))
        XCTAssertNil(fs.unlink(parent: d.ino, name: b("f")))
        XCTAssertNil(fs.rmdir(parent: Filesystem.rootIno, name: b("d")))
        XCTAssertTrue(fs.meta.flush())
        XCTAssertEqual(store.allKeys.filter { $0.hasPrefix("d/") }, [], "nothing keeps the directory alive")
    }

    func testHeadModeAsksOnlyForWhatIsLookedUp() throws {
        let store = InMemoryStore()
        for i in 0..<10 { store.put("s/f\(i)") }
        store.setMeta("s/f3", ["mode": String(UInt32(S_IFREG) | 0o600), "uid": "42"])
        let fs = make(store, mode: .head)
        let s = lookup(fs, Filesystem.rootIno, "s")!
        XCTAssertEqual(names(fs, s.ino).count, 10)
        XCTAssertEqual(store.headCalls, 0, "listing asks for no headers")
        let f3 = lookup(fs, s.ino, "f3")!
        XCTAssertEqual(f3.mode, 0o600)
        XCTAssertEqual(f3.uid, 42)
        XCTAssertFalse(f3.provisional)
        XCTAssertEqual(lookup(fs, s.ino, "f5")?.mode, 0o644)
        usleep(200_000) // the prefetch of the names after f3
        XCTAssertLessThanOrEqual(store.headCalls, 7, "f3 and the six after it, each once")
    }
}
