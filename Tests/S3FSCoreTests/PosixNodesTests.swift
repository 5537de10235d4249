import Foundation
import Glibc
import XCTest
import S3
@testable import S3FSCore

/// FIFOs, sockets and device nodes, ctime and directory times, and extended attributes: the rules
/// where they live (the header and index formats, the filesystem over the in-memory store).
final class PosixNodesTests: XCTestCase {
    let caller = Filesystem.Caller(uid: 1000, gid: 1000)
    /// /dev/null's device number, major 1 minor 3 (glibc's makedev is a macro Swift cannot call).
    let devNull: UInt64 = 1 << 8 | 3

    func make(_ store: InMemoryStore, mode: MetadataMode = .index, xattr: Bool = true) -> Filesystem {
        var o = FSOptions()
        o.metadata = mode
        o.metadataDebounce = 0.05
        o.spoolDir = NSTemporaryDirectory()
        o.sweepCaches = false
        o.xattr = xattr
        return Filesystem(store: store, options: o)
    }

    // MARK: - formats

    func testXattrHeaderIsS3fsPercentEncodedJSONOfBase64Values() {
        let encoded = XattrCodec.encode(["user.b": Array("value".utf8), "user.a": [0, 255]])
        XCTAssertEqual(encoded.removingPercentEncoding, #"{"user.a":"AP8=","user.b":"dmFsdWU="}"#)
        XCTAssertFalse(encoded.contains("{") || encoded.contains("\"") || encoded.contains(","))
        XCTAssertEqual(XattrCodec.decode(encoded), ["user.b": Array("value".utf8), "user.a": [0, 255]])
        // As s3fs writes it ('/' and '=' left as they are by its encoder), and a pair that does not parse is skipped.
        XCTAssertEqual(XattrCodec.decode("%7B%22user.x%22%3A%22Pz8/%22%2C%22bad%22%7D"), ["user.x": Array("???".utf8)])
        XCTAssertNil(XattrCodec.decode("not json"))
        XCTAssertEqual(XattrCodec.decode("%7B%22user.x%22%3A%22!!%22%7D"), [:], "not base64: skipped")
        XCTAssertFalse(XattrCodec.storable("user.a\"b"))
        XCTAssertFalse(XattrCodec.storable("user.a,b"))
        XCTAssertTrue(XattrCodec.storable("user.mime_type"))
    }

    func testBase64MatchesTheRFCVectors() {
        for (plain, coded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            XCTAssertEqual(Base64.encode(Array(plain.utf8)), coded)
            XCTAssertEqual(Base64.decode(coded), Array(plain.utf8))
        }
        XCTAssertNil(Base64.decode("Zg=a"))
    }

    func testHeadersCarryTimesDeviceNumbersAndXattrsAndReadBack() {
        var m = PosixMeta(mode: UInt32(S_IFCHR) | 0o600, uid: 0, gid: 0, mtime: Timestamp(sec: 7, nsec: 1))
        m.ctime = Timestamp(sec: 8, nsec: 2)
        m.atime = Timestamp(sec: 6)
        m.rdev = devNull
        m.xattrs = ["user.k": [1, 2, 3]]
        let h = Dictionary(m.headers(mtimeIfUnset: Timestamp(sec: 9)), uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(h["ctime"], "8.000000002")
        XCTAssertEqual(h["atime"], "6")
        XCTAssertEqual(h["rdev"], String(devNull))
        XCTAssertEqual(PosixMeta.from(headers: h, defaults: PosixMeta(mode: 0, uid: 1, gid: 1), type: UInt32(S_IFREG)), m)
        // A regular file's headers have none of them.
        let plain = PosixMeta(mode: UInt32(S_IFREG) | 0o644, uid: 0, gid: 0)
        XCTAssertEqual(plain.headers(mtimeIfUnset: Timestamp(sec: 1)).map { $0.0 }, ["mode", "uid", "gid", "mtime"])
    }

    func testIndexKeepsTheNewColumnsAndReadsLinesWithout() {
        var m = PosixMeta(mode: UInt32(S_IFIFO) | 0o640, uid: 5, gid: 6, mtime: Timestamp(sec: 10, nsec: 5))
        m.ctime = Timestamp(sec: 11)
        m.xattrs = ["user.tab\u{9}name": Array("x\ty".utf8)]
        let records: [[UInt8]: MetaRecord] = [b("fifo"): MetaRecord(etag: "\"e\"", meta: m)]
        let encoded = MetaIndexCodec.encode(records)
        XCTAssertEqual(MetaIndexCodec.decode(encoded)?[b("fifo")]?.meta.xattrs, [:], "a name s3fs cannot read back is not stored")
        m.xattrs = ["user.k": Array("x\ty".utf8)]
        let again: [[UInt8]: MetaRecord] = [b("fifo"): MetaRecord(etag: "\"e\"", meta: m)]
        XCTAssertEqual(MetaIndexCodec.decode(MetaIndexCodec.encode(again)), again)
        // An index written before these columns (seven fields) reads as it did.
        let old = MetaIndexCodec.decode(b("s3mount-meta 1\nf\t\"e\"\t100600\t1\t2\t5\t-\n"))
        XCTAssertEqual(old?[b("f")]?.meta, PosixMeta(mode: 0o100600, uid: 1, gid: 2, mtime: Timestamp(sec: 5)))
    }

    // MARK: - through the filesystem

    /// A file "f" created, written empty and closed through `fs`.
    func writtenFile(_ fs: Filesystem, parent: UInt64) throws -> Attributes {
        let (f, h) = try fs.create(parent: parent, name: b("f"), flags: O_WRONLY, mode: 0o644, caller: caller).get()
        XCTAssertNil(fs.flush(handle: h, final: true))
        fs.release(handle: h)
        return f
    }

    func testMknodMakesFifosSocketsAndDevicesAsEmptyObjectsShownFromTheIndex() throws {
        let store = InMemoryStore()
        let fs = make(store)
        let fifo = try fs.mknod(parent: Filesystem.rootIno, name: b("fifo"), mode: UInt32(S_IFIFO) | 0o640, caller: caller).get()
        XCTAssertEqual(fifo.typeBits, UInt32(S_IFIFO))
        XCTAssertEqual(fifo.mode, 0o640)
        let dev = try fs.mknod(parent: Filesystem.rootIno, name: b("null"), mode: UInt32(S_IFCHR) | 0o666, rdev: devNull, caller: caller).get()
        XCTAssertEqual(dev.typeBits, UInt32(S_IFCHR))
        XCTAssertEqual(dev.rdev, devNull)
        XCTAssertEqual(try fs.mknod(parent: Filesystem.rootIno, name: b("sock"), mode: UInt32(S_IFSOCK) | 0o755, caller: caller).get().typeBits, UInt32(S_IFSOCK))
        XCTAssertEqual(store.data("fifo"), [])
        XCTAssertEqual(store.meta("null")?["rdev"], String(devNull))
        XCTAssertTrue(fs.meta.flush())
        // Another mount: shown from its listing and the index, no HeadObject.
        let fs2 = make(store)
        let heads = store.headCalls
        let again = try XCTUnwrap(fs2.lookup(parent: Filesystem.rootIno, name: b("null")).get())
        XCTAssertEqual(again.typeBits, UInt32(S_IFCHR))
        XCTAssertEqual(again.rdev, devNull)
        XCTAssertEqual(store.headCalls, heads)
        // Without stored metadata there is nowhere to keep the type.
        let none = make(InMemoryStore(), mode: .none)
        XCTAssertEqual(none.mknod(parent: Filesystem.rootIno, name: b("p"), mode: UInt32(S_IFIFO) | 0o644, caller: caller).failure?.errno, EPERM)
    }

    func testChmodChangesCtimeNotMtimeAndEntriesChangeTheirDirectorysTimes() throws {
        let store = InMemoryStore()
        let fs = make(store)
        let d = try fs.mkdir(parent: Filesystem.rootIno, name: b("d"), mode: 0o755, caller: caller).get()
        let f = try writtenFile(fs, parent: d.ino)
        let before = try fs.getattr(ino: f.ino).get()
        usleep(2000)
        let after = try fs.setattr(ino: f.ino, size: nil, mode: 0o600, uid: nil, gid: nil, handle: nil).get()
        XCTAssertEqual(after.mtime, before.mtime)
        XCTAssertGreaterThan(after.ctime!, before.mtime)
        let dirBefore = try fs.getattr(ino: d.ino).get()
        usleep(2000)
        XCTAssertNil(fs.unlink(parent: d.ino, name: b("f")))
        let dirAfter = try fs.getattr(ino: d.ino).get()
        XCTAssertGreaterThan(dirAfter.mtime, dirBefore.mtime)
        XCTAssertEqual(dirAfter.ctime, dirAfter.mtime)
    }

    func testAChmodOnAnotherMountOfAFileWithARecordIsWrittenAndADirectorysTimesAloneMakeNoIndex() throws {
        let store = InMemoryStore()
        let one = make(store)
        _ = try writtenFile(one, parent: Filesystem.rootIno)
        XCTAssertTrue(one.meta.flush())
        XCTAssertNotNil(store.data(".s3mount-meta"), "the file's stored mtime is in the index")
        let two = make(store)
        let g = try two.lookup(parent: Filesystem.rootIno, name: b("f")).get()!
        _ = try two.setattr(ino: g.ino, size: nil, mode: 0o600, uid: nil, gid: nil, handle: nil).get()
        XCTAssertTrue(two.meta.flush())
        let three = make(store)
        XCTAssertEqual(try three.lookup(parent: Filesystem.rootIno, name: b("f")).get()?.mode, 0o600)
        // An unlink leaves the root's new times only: the index goes, none is made for them.
        XCTAssertNil(three.unlink(parent: Filesystem.rootIno, name: b("f")))
        XCTAssertTrue(three.meta.flush())
        XCTAssertNil(store.data(".s3mount-meta"))
    }

    func testXattrsFollowTheFlagsTheLimitAndTheNamespaces() throws {
        let store = InMemoryStore()
        let fs = make(store)
        let f = try writtenFile(fs, parent: Filesystem.rootIno)
        XCTAssertNil(fs.setxattr(ino: f.ino, name: "user.a", value: [1], flags: 0))
        XCTAssertEqual(fs.setxattr(ino: f.ino, name: "user.a", value: [2], flags: Filesystem.xattrCreate)?.errno, EEXIST)
        XCTAssertEqual(fs.setxattr(ino: f.ino, name: "user.b", value: [2], flags: Filesystem.xattrReplace)?.errno, ENODATA)
        XCTAssertEqual(fs.setxattr(ino: f.ino, name: "user.big", value: Array(repeating: 7, count: 2000), flags: 0)?.errno, ENOSPC)
        XCTAssertEqual(fs.setxattr(ino: f.ino, name: "trusted.x", value: [1], flags: 0)?.errno, ENOTSUP)
        XCTAssertEqual(fs.getxattr(ino: f.ino, name: "security.selinux").failure?.errno, ENODATA)
        XCTAssertEqual(try fs.getxattr(ino: f.ino, name: "user.a").get(), [1])
        XCTAssertEqual(try fs.listxattr(ino: f.ino).get(), ["user.a"])
        XCTAssertEqual(fs.removexattr(ino: f.ino, name: "user.zz")?.errno, ENODATA)
        // Set after the upload: kept in the directory's index (with --metadata head, also in a
        // copy's headers), where another mount reads it.
        XCTAssertTrue(fs.meta.flush())
        let two = make(store)
        let g = try XCTUnwrap(try two.lookup(parent: Filesystem.rootIno, name: b("f")).get())
        XCTAssertEqual(try two.getxattr(ino: g.ino, name: "user.a").get(), [1])
        XCTAssertNil(fs.removexattr(ino: f.ino, name: "user.a"))
        XCTAssertEqual(try fs.listxattr(ino: f.ino).get(), [])
    }
}

private extension Result {
    var failure: Failure? { if case .failure(let e) = self { return e } else { return nil } }
}
