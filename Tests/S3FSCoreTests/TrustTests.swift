import Foundation
import Glibc
import XCTest
import S3
@testable import S3FSCore

/// What a local user, a bucket writer or a file planted in a shared folder can do to the core:
/// refused, bounded or harmless (docs/SECURITY.md).
final class TrustTests: XCTestCase {

    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "s3mtrust-" + UUID().uuidString
        XCTAssertEqual(mkdir(d, 0o700), 0)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    func make(_ store: InMemoryStore, spool: String? = nil, configure: (inout FSOptions) -> Void = { _ in }) -> Filesystem {
        var o = FSOptions()
        o.metadataDebounce = 0.05
        o.spoolDir = spool ?? NSTemporaryDirectory()
        o.sweepCaches = false
        configure(&o)
        return Filesystem(store: store, options: o)
    }

    func lookup(_ fs: Filesystem, _ parent: UInt64, _ name: String) -> Attributes? {
        try? fs.lookup(parent: parent, name: b(name)).get()
    }

    func spoolBytes(_ dir: String) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: dir))?.filter { $0.hasPrefix("s3mount-spool-") }.reduce(0) { sum, f in
            var st = stat()
            return sum + (stat(dir + "/" + f, &st) == 0 ? Int(st.st_blocks) * 512 : 0)
        } ?? 0
    }

    // MARK: - sizes and offsets from a user

    func testAWriteOrTruncatePastWhatS3HoldsIsEFBIGBeforeAnythingIsSpooled() throws {
        let store = InMemoryStore()
        let spool = tempDir()
        let fs = make(store, spool: spool)
        let (a, h) = try fs.create(parent: Filesystem.rootIno, name: b("f"), flags: O_WRONLY | O_CREAT).get()
        let data = b("hello")
        for offset: Int64 in [Int64.max, Int64.max - 2, (5 << 40) - 2, 5 << 40] {
            let r = data.withUnsafeBytes { fs.write(handle: h, offset: offset, data: $0) }
            guard case .failure(let e) = r else { return XCTFail("a write at \(offset) was taken") }
            XCTAssertEqual(e.errno, EFBIG, "at \(offset)")
        }
        if case .failure(let e) = data.withUnsafeBytes({ fs.write(handle: h, offset: -1, data: $0) }) { XCTAssertEqual(e.errno, EINVAL) } else { XCTFail() }
        for size: Int64 in [Int64.max, (5 << 40) + 1] {
            guard case .failure(let e) = fs.setattr(ino: a.ino, size: size, mode: nil, uid: nil, gid: nil, handle: h) else { return XCTFail("truncate to \(size)") }
            XCTAssertEqual(e.errno, EFBIG)
        }
        guard case .failure(let e) = fs.setattr(ino: a.ino, size: -1, mode: nil, uid: nil, gid: nil, handle: h) else { return XCTFail() }
        XCTAssertEqual(e.errno, EINVAL)
        XCTAssertEqual(spoolBytes(spool), 0, "nothing was spooled")
        // The file is as good as before: a write within bounds uploads.
        XCTAssertEqual(try data.withUnsafeBytes { fs.write(handle: h, offset: 0, data: $0) }.get(), 5)
        XCTAssertNil(fs.flush(handle: h, final: true))
        fs.release(handle: h)
        XCTAssertEqual(store.data("f"), data)
        // Without an open file, through a truncate of the object: refused before any download.
        let gets = store.getCalls
        guard case .failure(let e2) = fs.setattr(ino: a.ino, size: Int64.max, mode: nil, uid: nil, gid: nil, handle: nil) else { return XCTFail() }
        XCTAssertEqual(e2.errno, EFBIG)
        XCTAssertEqual(store.getCalls, gets)
    }

    func testTheLargestFileIsWhatS3AndThePartsReach() {
        XCTAssertEqual(FileWriter.maxSize(partSize: 8 << 20), 5 << 40, "8 MiB parts doubling every 1,000 reach past 5 TiB in 10,000")
        XCTAssertEqual(FileWriter.maxSize(partSize: 1 << 10), (1 << 10) * 1000 * 1023, "1 KiB parts reach less")
        XCTAssertEqual(FileWriter.maxSize(partSize: Int64.max / 2), 5 << 40, "no overflow on the way")
    }

    // MARK: - the data cache

    func testTheDataCacheTakesNoHugeSizeAndTrapsOnNone() throws {
        XCTAssertEqual(DataCache.blocks(Int64.max), Int(Int64.max / (1 << 20)) + 1)
        let cache = try DataCache(root: tempDir() + "/c", maxBytes: 8 << 20, namespace: "t/b")
        defer { cache.close() }
        // A listing claims 1 PiB: its block map would take a gigabyte; nothing is kept.
        cache.store(key: b("huge"), etag: "\"e\"", size: 1 << 50, offset: 0, bytes: b("abc"))
        cache.store(key: b("x"), etag: "\"e\"", size: 3, offset: Int64.max - 1, bytes: b("abc"))
        XCTAssertEqual(cache.bytesCached, 0)
        XCTAssertNil(cache.read(key: b("x"), etag: "\"e\"", size: 3, range: 0..<Int64.max))
    }

    func testACacheFolderOfAnotherUserOrWithALinkPlantedInItIsNotUsed() throws {
        let other = tempDir() + "/theirs"
        XCTAssertEqual(mkdir(other, 0o755), 0)
        XCTAssertEqual(chown(other, 65534, 65534), 0)
        XCTAssertThrowsError(try DataCache(root: other, maxBytes: 8 << 20, namespace: "t/b")) { e in
            XCTAssertTrue("\(e)".contains("belongs to uid 65534"), "\(e)")
        }
        // A link where an object's data file goes: the store does not write through it.
        let root = tempDir() + "/c"
        let victim = tempDir() + "/victim"
        XCTAssertTrue(FileManager.default.createFile(atPath: victim, contents: Data("precious".utf8)))
        var cache: DataCache? = try DataCache(root: root, maxBytes: 8 << 20, namespace: "t/b")
        let name = hexString(Crypto.sha256(Array("t/b".utf8) + [0] + b("k")))
        XCTAssertEqual(mkdir("\(root)/objects/\(name.prefix(2))", 0o700), 0)
        XCTAssertEqual(symlink(victim, "\(root)/objects/\(name.prefix(2))/\(name)"), 0)
        let (_, log) = capturingLog { cache!.store(key: b("k"), etag: "\"e\"", size: 4, offset: 0, bytes: b("evil")) }
        XCTAssertTrue(log.contains("Too many levels of symbolic links"), log)
        XCTAssertNil(cache!.read(key: b("k"), etag: "\"e\"", size: 4, range: 0..<4))
        cache!.close()
        cache = nil
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "precious")
    }

    // MARK: - the spool

    func testAFIFOOrAHugeJournalInTheSpoolNeitherBlocksNorIsRead() throws {
        let spool = tempDir()
        XCTAssertEqual(mkfifo(spool + "/s3mount-spool-fifo", 0o600), 0)
        XCTAssertEqual(mkfifo(spool + "/s3mount-uploads-1.journal", 0o600), 0)
        let sparse = open(spool + "/s3mount-uploads-2.journal", O_WRONLY | O_CREAT, 0o600)
        XCTAssertEqual(ftruncate(sparse, 1 << 40), 0)
        close(sparse)
        let store = InMemoryStore()
        let fs = make(store, spool: spool)
        let start = monotonicSeconds()
        let (_, log) = capturingLog { () -> Int in
            fs.reportLeftovers()
            let journal = UploadJournal(spoolDir: spool, store: "t/b")!
            defer { journal.close() }
            return journal.cleanUpAfterEarlierRuns { _, _ in XCTFail("nothing to abort") }
        }
        XCTAssertLessThan(monotonicSeconds() - start, 2, "no open waited on the FIFOs, nothing read the terabyte")
        XCTAssertTrue(log.contains("s3mount-uploads-2.journal: larger than any record"), log)
        XCTAssertTrue(log.contains("s3mount-uploads-1.journal: not a regular file"), log)
        XCTAssertFalse(log.contains("spool file(s) from a run"), "a FIFO is no leftover spool file: \(log)")
    }

    func testOnlyThisStoresWellFormedJournalLinesAreAborted() throws {
        let spool = tempDir()
        let own = UploadJournal.encode(b("t/b")), other = UploadJournal.encode(b("other/b"))
        let lines = [
            "+ \(own) \(hexString(b("mine"))) up-1",
            "+ \(other) \(hexString(b("theirs"))) up-2",
            "+ \(own) not-hex up-3",
            "+ \(own) \(hexString(b("ctl"))) bad\u{7}id",
            "+ \(own) \(hexString(b("done"))) up-4",
            "- up-4",
        ]
        XCTAssertTrue(FileManager.default.createFile(atPath: spool + "/s3mount-uploads-99999999.journal", contents: Data((lines.joined(separator: "\n") + "\n").utf8)))
        let journal = UploadJournal(spoolDir: spool, store: "t/b")!
        defer { journal.close() }
        var aborted: [(String, String)] = []
        let (n, _) = capturingLog { journal.cleanUpAfterEarlierRuns { aborted.append((String(decoding: $0, as: UTF8.self), $1)) } }
        XCTAssertEqual(n, 1)
        XCTAssertEqual(aborted.map { "\($0.0) \($0.1)" }, ["mine up-1"])
        let left = try String(contentsOfFile: spool + "/s3mount-uploads-99999999.journal", encoding: .utf8)
        XCTAssertEqual(left, "+ \(other) \(hexString(b("theirs"))) up-2\n", "another store's entry stays for its own mount")
    }

    func testARunningJournalStaysSmall() throws {
        let spool = tempDir()
        let journal = UploadJournal(spoolDir: spool, store: "t/b")!
        for i in 0..<20_000 {
            journal.started(b("key-\(i)"), uploadId: "upload-\(i)-" + String(repeating: "x", count: 40))
            journal.ended(uploadId: "upload-\(i)-" + String(repeating: "x", count: 40))
        }
        journal.started(b("still-open"), uploadId: "open-1")
        var st = stat()
        XCTAssertEqual(stat("\(spool)/s3mount-uploads-\(getpid()).journal", &st), 0)
        XCTAssertLessThanOrEqual(Int(st.st_size), UploadJournal.compactAt, "compacted: \(st.st_size) bytes")
        let text = try String(contentsOfFile: "\(spool)/s3mount-uploads-\(getpid()).journal", encoding: .utf8)
        XCTAssertEqual(UploadJournal.unfinished(in: text).map(\.uploadId).last, "open-1")
        journal.ended(uploadId: "open-1")
        journal.close()
        XCTAssertNotEqual(stat("\(spool)/s3mount-uploads-\(getpid()).journal", &st), 0, "nothing open: removed at the clean exit")
    }

    // MARK: - what a bucket writer stores

    func testAnIndexInAnUnknownFormatIsLeftAloneAndItsDirectoryReadOnly() throws {
        let store = InMemoryStore()
        store.put("d/f", "data")
        let foreign = "s3mount-meta 2\nf\tsomething a newer version wrote\n"
        store.put("d/.s3mount-meta", foreign)
        let fs = make(store)
        let d = lookup(fs, Filesystem.rootIno, "d")!
        let (f, log) = capturingLog { lookup(fs, d.ino, "f") }
        XCTAssertEqual(f?.mode, 0o644, "the defaults")
        XCTAssertTrue(log.contains("is not in a format this version of s3mount reads"), log)
        guard case .failure(let e) = fs.setattr(ino: f!.ino, size: nil, mode: 0o600, uid: nil, gid: nil, handle: nil) else { return XCTFail("chmod taken") }
        XCTAssertEqual(e.errno, EROFS)
        XCTAssertTrue(fs.meta.flush())
        XCTAssertEqual(store.data("d/.s3mount-meta"), b(foreign), "never overwritten")
    }

    func testAnIndexPastTheCapIsReadOncePerVersion() throws {
        let store = InMemoryStore()
        store.put("big/f", "data")
        store.put(b("big/.s3mount-meta"), b("s3mount-meta 1\n") + [UInt8](repeating: 0x41, count: MetadataIndex.maxIndexBytes + 10))
        let fs = make(store) { $0.metadataTTL = 0.01 }
        let d = lookup(fs, Filesystem.rootIno, "big")!
        let gets = store.getCalls
        let (_, log) = capturingLog {
            for _ in 0..<3 {
                _ = lookup(fs, d.ino, "f")
                _ = try? fs.getattr(ino: d.ino).get()
            }
        }
        XCTAssertEqual(store.getCalls - gets, 1, "one download of it, not three per stat")
        XCTAssertTrue(log.contains("is larger than 64 MiB"), log)
    }

    func testUmaskAndForceOwnerPinWhatTheBucketSays() throws {
        let store = InMemoryStore()
        store.put("tool")
        // A bucket writer's record: setuid root, writable by all.
        let index = "s3mount-meta 1\ntool\t\(store.etag("tool")!)\t104777\t0\t0\t-\t-\n"
        store.put(".s3mount-meta", index)
        let plain = make(store)
        XCTAssertEqual(lookup(plain, Filesystem.rootIno, "tool")?.mode, 0o4777, "as stored, without the options")
        let fs = make(store) { o in
            o.umask = 0o7022
            o.forceOwner = true
            o.uid = 1234
            o.gid = 5678
        }
        let t = lookup(fs, Filesystem.rootIno, "tool")!
        XCTAssertEqual(t.mode, 0o755)
        XCTAssertEqual([t.uid, t.gid], [1234, 5678])
        let root = try fs.getattr(ino: Filesystem.rootIno).get()
        XCTAssertEqual(root.mode & 0o022, 0, "the root's record too")
        guard case .failure(let e) = fs.setattr(ino: t.ino, size: nil, mode: nil, uid: 0, gid: nil, handle: nil) else { return XCTFail("chown taken") }
        XCTAssertEqual(e.errno, EPERM)
        XCTAssertNoThrow(try fs.setattr(ino: t.ino, size: nil, mode: nil, uid: 1234, gid: 5678, handle: nil).get(), "what it shows already")
    }

    func testAPrefixNamedAsTheIndexIsNoDirectory() throws {
        let store = InMemoryStore()
        store.put(".s3mount-meta/planted")
        store.put("d/.s3mount-meta/x")
        store.put("d/f")
        let fs = make(store)
        let (names, _) = capturingLog { readDirectory(fs, Filesystem.rootIno, plus: true).map(\.0) }
        XCTAssertEqual(names, [".", "..", "d"])
        let d = lookup(fs, Filesystem.rootIno, "d")!
        let (inD, _) = capturingLog { readDirectory(fs, d.ino, plus: true).map(\.0) }
        XCTAssertEqual(inD, [".", "..", "f"])
    }

    func testAnEventThatNamesNoBucketIsAnothers() {
        let store = InMemoryStore()
        store.put("d/a")
        let fs = make(store)
        XCTAssertEqual(fs.applyEvent(ObjectEvent(bucket: "", key: b("d/a"), change: .removed, name: "ObjectRemoved:Delete", time: 0), bucket: "bkt"), .ignored)
    }
}
