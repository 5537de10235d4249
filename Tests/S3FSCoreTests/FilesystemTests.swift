import Foundation
import XCTest
import S3
@testable import S3FSCore

final class FilesystemTests: XCTestCase {

    func make(_ keys: [String], ttl: Double = 60, configure: (inout FSOptions) -> Void = { _ in }) -> (Filesystem, InMemoryStore) {
        let store = InMemoryStore()
        for k in keys { store.put(k) }
        var o = FSOptions()
        o.metadataTTL = ttl
        o.listPageSize = 3
        configure(&o)
        return (Filesystem(store: store, options: o), store)
    }

    func readAll(_ fs: Filesystem, _ ino: UInt64, plus: Bool = true) -> [(String, Attributes?)] { readDirectory(fs, ino, plus: plus) }

    func lookup(_ fs: Filesystem, _ parent: UInt64, _ name: String) -> Attributes? {
        try! fs.lookup(parent: parent, name: b(name)).get()
    }

    func testListingPrimesLookupsAndMissesWithoutRequests() {
        let (fs, store) = make((0..<10).map { "d/f\($0)" } + ["d/sub/x", "top"])
        let d = lookup(fs, 1, "d")!
        XCTAssertEqual(d.kind, .directory)
        let before = store.lists
        let names = readAll(fs, d.ino).map { $0.0 }
        XCTAssertEqual(names, [".", ".."] + (0..<10).map { "f\($0)" } + ["sub"])
        XCTAssertEqual(store.lists - before, 4, "11 entries in pages of 3")
        let afterListing = store.lists
        XCTAssertEqual(lookup(fs, d.ino, "f7")?.size, 1)
        XCTAssertEqual(lookup(fs, d.ino, "sub")?.kind, .directory)
        XCTAssertNil(lookup(fs, d.ino, "desktop.ini"))
        XCTAssertNil(lookup(fs, d.ino, ".hidden"))
        XCTAssertEqual(store.lists, afterListing, "no request after a complete listing")
        XCTAssertEqual(fs.counters.negativeHits, 2)
        // A second opendir within the TTL is served from the cache.
        _ = readAll(fs, d.ino)
        XCTAssertEqual(store.lists, afterListing)
    }

    func testLookupInUnlistedDirectoryIsOneListing() {
        let (fs, store) = make(["a/name", "a/name.bak", "a/name-2/x", "a/dir/y"])
        let a = lookup(fs, 1, "a")!
        let before = store.lists
        XCTAssertEqual(lookup(fs, a.ino, "name")?.kind, .file)
        // One for the name, one for whether the directory has a metadata index (once per directory).
        XCTAssertEqual(store.lists - before, 2)
        // Siblings seen in that page are primed too.
        XCTAssertEqual(lookup(fs, a.ino, "name.bak")?.kind, .file)
        XCTAssertEqual(lookup(fs, a.ino, "name-2")?.kind, .directory)
        XCTAssertEqual(store.lists - before, 2)
        // The second name that needs S3 lists the whole directory instead (2 pages of 3 here).
        XCTAssertEqual(lookup(fs, a.ino, "dir")?.kind, .directory)
        usleep(100_000)
        XCTAssertNil(lookup(fs, a.ino, "nothing"))
        XCTAssertNil(lookup(fs, a.ino, "nothing"), "the miss is cached")
        XCTAssertEqual(store.lists - before, 4)
    }

    func testConcurrentLookupsOfOneNameShareOneRequest() {
        let (fs, store) = make(["d/file"])
        let d = lookup(fs, 1, "d")!
        store.listDelay = 200_000
        let before = store.lists
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            XCTAssertEqual(self.lookup(fs, d.ino, "file")?.kind, .file)
        }
        // The name's listing, and one probe for the directory's metadata index.
        XCTAssertEqual(store.lists - before, 2)
    }

    func testLookupsWaitForARunningListing() {
        let (fs, store) = make((0..<5).map { "d/f\($0)" })
        let d = lookup(fs, 1, "d")!
        store.listDelay = 100_000
        let before = store.lists
        let h = try! fs.opendir(ino: d.ino).get()
        XCTAssertEqual(store.lists, before, "opening a directory lists nothing yet")
        // The first readdir starts the listing (and waits for its first page).
        let reading = DispatchGroup()
        DispatchQueue.global().async(group: reading) { _ = fs.readdir(handle: h, offset: 0, plus: false) { _ in true } }
        while !fs.state.withLock({ $0.listings[Array("d/".utf8)] != nil }) { usleep(1000) }
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            XCTAssertNotNil(self.lookup(fs, d.ino, "f\(i)"))
        }
        reading.wait()
        fs.releasedir(handle: h)
        XCTAssertEqual(store.lists - before, 2, "only the listing's two pages")
    }

    func testInodesAreStableCountedAndFreedOnForget() {
        let (fs, _) = make(["d/a", "d/b"])
        let d = lookup(fs, 1, "d")!
        let a1 = lookup(fs, d.ino, "a")!
        let a2 = lookup(fs, d.ino, "a")!
        XCTAssertEqual(a1.ino, a2.ino)
        let entries = readAll(fs, d.ino)
        let viaReaddir = entries.first { $0.0 == "a" }!.1!
        XCTAssertEqual(viaReaddir.ino, a1.ino)
        let count = fs.inodeCount
        fs.forget(ino: a1.ino, count: 2)
        XCTAssertEqual(fs.inodeCount, count, "readdirplus added a third reference")
        fs.forget(ino: a1.ino, count: 1)
        XCTAssertEqual(fs.inodeCount, count - 1)
        let again = lookup(fs, d.ino, "a")!
        XCTAssertNotEqual(again.ino, a1.ino, "numbers are never reused")
        if case .failure(let e) = fs.getattr(ino: a1.ino) { XCTAssertEqual(e.errno, ENOENT) } else { XCTFail("a forgotten inode is gone") }
    }

    func testReaddirplusEntryThatDoesNotFitDropsItsReference() {
        let (fs, _) = make(["d/a", "d/b"])
        let d = lookup(fs, 1, "d")!
        let base = fs.inodeCount
        let h = try! fs.opendir(ino: d.ino).get()
        var accepted = 0
        _ = fs.readdir(handle: h, offset: 0, plus: true) { e in
            if e.isDotEntry { return true }
            accepted += 1
            return accepted < 2 // the second real entry "does not fit"
        }
        fs.releasedir(handle: h)
        XCTAssertEqual(fs.inodeCount, base + 1)
    }

    func testFileAndPrefixCollisionShowsDirectoryAndBadNamesAreSkipped() {
        let long = String(repeating: "n", count: 256)
        let (fs, _) = make(["both", "both/in", "x//y", "x/./dot", "x/../up", "x/\(long)", "x/ok"])
        let (x, log) = capturingLog { () -> Attributes in
            XCTAssertEqual(lookup(fs, 1, "both")?.kind, .directory)
            let root = readAll(fs, 1).map { $0.0 }
            XCTAssertEqual(root.filter { $0 == "both" }.count, 1)
            let x = lookup(fs, 1, "x")!
            XCTAssertEqual(readAll(fs, x.ino).map { $0.0 }, [".", "..", "ok"])
            return x
        }
        XCTAssertEqual(fs.counters.skippedNames, 4)
        // Each skipped key is named once in the log, with the reason.
        for (key, why) in [("x/../up", "'.' or '..'"), ("x/./dot", "'.' or '..'"), ("x//y", "empty name (from '//')"),
                           ("x/\(long)", "longer than 255 bytes")] {
            XCTAssertEqual(log.components(separatedBy: "warning: skipping key \"\(key)\": \(why)").count - 1, 1, log)
        }
        XCTAssertEqual(try? fs.lookup(parent: x.ino, name: b(long)).get().map { $0.ino }, nil)
        if case .failure(let e) = fs.lookup(parent: x.ino, name: Array(repeating: 0x61, count: 256)) { XCTAssertEqual(e.errno, ENAMETOOLONG) } else { XCTFail() }
    }

    func testNamesAreComparedAsBytes() {
        let store = InMemoryStore()
        store.put([0x63, 0xC3, 0xA9], [1])          // NFC é
        store.put([0x63, 0x65, 0xCC, 0x81], [2])    // NFD e + combining acute
        let fs = Filesystem(store: store, options: FSOptions())
        let nfc = try! fs.lookup(parent: 1, name: [0x63, 0xC3, 0xA9]).get()!
        let nfd = try! fs.lookup(parent: 1, name: [0x63, 0x65, 0xCC, 0x81]).get()!
        XCTAssertNotEqual(nfc.ino, nfd.ino)
    }

    func testExpiredListingIsFetchedAgainAndRemovalsShow() {
        let (fs, store) = make(["d/a", "d/b"], ttl: 0.2)
        let d = lookup(fs, 1, "d")!
        XCTAssertEqual(readAll(fs, d.ino).count, 4)
        store.remove("d/b")
        store.put("d/c")
        usleep(300_000)
        XCTAssertEqual(readAll(fs, d.ino).map { $0.0 }, [".", "..", "a", "c"])
        XCTAssertNil(lookup(fs, d.ino, "b"))
    }

    func testPrefixMountShowsOnlyItsKeys() {
        let (fs, _) = make(["p/one", "p/sub/two", "other"]) { $0.prefix = Names.normalizePrefix("/p/") }
        XCTAssertEqual(readAll(fs, 1).map { $0.0 }, [".", "..", "one", "sub"])
    }

    func testReadsSequentialStreamAndChangedObject() {
        let store = InMemoryStore()
        let data = (0..<2_500_000).map { UInt8(truncatingIfNeeded: $0 &* 7) } // above the small-file limit: streamed
        store.put(b("f"), data)
        let fs = Filesystem(store: store, options: FSOptions())
        let f = lookup(fs, 1, "f")!
        let h = try! fs.open(ino: f.ino, flags: O_RDONLY).get()
        var got = [UInt8]()
        var off: Int64 = 0
        while true {
            let chunk = try! fs.read(handle: h, offset: off, size: 65536).get()
            if chunk.isEmpty { break }
            got += chunk
            off += Int64(chunk.count)
        }
        XCTAssertEqual(got, data)
        XCTAssertEqual(store.getCalls, 1, "one streaming GET for a sequential reader")
        // A jump backwards far away: one ranged GET of just the bytes asked for.
        _ = try! fs.read(handle: h, offset: 10, size: 10).get()
        fs.release(handle: h)
        let h2 = try! fs.open(ino: f.ino, flags: O_RDONLY).get()
        store.put(b("f"), [9, 9, 9])
        let (changed, log) = capturingLog { fs.read(handle: h2, offset: 0, size: 10) }
        if case .failure(let e) = changed { XCTAssertEqual(e.errno, ESTALE) } else { XCTFail("changed object must be detected") }
        XCTAssertTrue(log.contains("warning: f changed since it was opened (ETag differs)"), log)
        fs.release(handle: h2)
    }

    func testStatsCountWhatHappened() throws {
        let (fs, _) = make(["a"])
        _ = lookup(fs, 1, "a")
        _ = lookup(fs, 1, "a")
        let s = fs.stats()
        XCTAssertEqual(s.cache.attrHits, 1, "the second lookup is answered from the cache")
        XCTAssertEqual(s.inodes, 2, "the root and a")
        XCTAssertTrue(s.pools.contains { $0.name == "s3m-list" })
    }

    func testWritesUpdateStoreAndCaches() {
        let (fs, store) = make(["d/old.txt"]) { $0.spoolDir = NSTemporaryDirectory(); $0.multipartThreshold = 1000; $0.partSize = 300 }
        let d = lookup(fs, 1, "d")!
        _ = readAll(fs, d.ino)
        let (a, h) = try! fs.create(parent: d.ino, name: b("new.txt"), flags: O_WRONLY | O_CREAT).get()
        let payload = (0..<2500).map { UInt8($0 % 256) }
        var off = 0
        while off < payload.count {
            let n = min(700, payload.count - off)
            let r = payload[off..<(off + n)].withUnsafeBytes { fs.write(handle: h, offset: Int64(off), data: $0) }
            XCTAssertEqual(try r.get(), n)
            off += n
        }
        XCTAssertEqual(try fs.getattr(ino: a.ino).get().size, 2500, "size while writing")
        XCTAssertNil(fs.flush(handle: h))
        fs.release(handle: h)
        XCTAssertEqual(store.data("d/new.txt"), payload, "multipart parts assembled in order")
        let lists = store.lists
        XCTAssertEqual(lookup(fs, d.ino, "new.txt")?.size, 2500)
        XCTAssertEqual(readAll(fs, d.ino).map { $0.0 }.sorted(), [".", "..", "new.txt", "old.txt"])
        XCTAssertEqual(store.lists, lists, "the written file is known without a request")

        XCTAssertNil(fs.rename(parent: d.ino, name: b("new.txt"), newParent: 1, newName: b("moved.txt"), flags: 0))
        XCTAssertEqual(store.data("moved.txt"), payload)
        XCTAssertNil(store.data("d/new.txt"))
        XCTAssertNil(lookup(fs, d.ino, "new.txt"))
        XCTAssertEqual(fs.rename(parent: 1, name: b("moved.txt"), newParent: d.ino, newName: b("old.txt"), flags: Filesystem.renameNoReplace)?.errno, EEXIST)

        XCTAssertEqual(try fs.mkdir(parent: d.ino, name: b("sub")).get().kind, .directory)
        XCTAssertNotNil(store.data("d/sub/"))
        XCTAssertEqual(fs.rmdir(parent: 1, name: b("d"))?.errno, ENOTEMPTY)
        XCTAssertNil(fs.rename(parent: 1, name: b("d"), newParent: 1, newName: b("e"), flags: 0))
        XCTAssertEqual(store.allKeys, ["e/", "e/old.txt", "e/sub/", "moved.txt"].filter { $0 != "e/" })
        let e = lookup(fs, 1, "e")!
        XCTAssertEqual(e.ino, d.ino, "the renamed directory keeps its inode")
        XCTAssertNil(fs.unlink(parent: e.ino, name: b("old.txt")))
        XCTAssertNil(fs.rmdir(parent: e.ino, name: b("sub")))
        XCTAssertEqual(store.allKeys, ["moved.txt"])
        XCTAssertEqual(fs.unlink(parent: e.ino, name: b("old.txt"))?.errno, ENOENT)
    }

    func testNewFileExistsOnCloseAndDataFollows() {
        let (fs, store) = make([]) { $0.spoolDir = NSTemporaryDirectory() }
        let (_, h) = try! fs.create(parent: 1, name: b("f"), flags: O_WRONLY | O_CREAT | O_TRUNC).get()
        XCTAssertNil(fs.flush(handle: h))  // close() before any data: touch, or a shell's dup2
        XCTAssertEqual(store.data("f"), [], "the file exists once close returns")
        _ = Array("data".utf8).withUnsafeBytes { fs.write(handle: h, offset: 0, data: $0) }
        XCTAssertNil(fs.flush(handle: h))
        fs.release(handle: h)
        XCTAssertEqual(store.putCalls, 2, "release has nothing left to send")
        XCTAssertEqual(store.data("f"), Array("data".utf8))
        let (_, h2) = try! fs.create(parent: 1, name: b("empty"), flags: O_WRONLY | O_CREAT).get()
        fs.release(handle: h2)
        XCTAssertEqual(store.data("empty"), [])
    }

    func testReadOnlyRefusesEverything() {
        let (fs, _) = make(["f"]) { $0.readOnly = true }
        let f = lookup(fs, 1, "f")!
        if case .failure(let e) = fs.open(ino: f.ino, flags: O_WRONLY) { XCTAssertEqual(e.errno, EROFS) } else { XCTFail() }
        if case .failure(let e) = fs.create(parent: 1, name: b("n"), flags: O_WRONLY) { XCTAssertEqual(e.errno, EROFS) } else { XCTFail() }
        XCTAssertEqual(fs.unlink(parent: 1, name: b("f"))?.errno, EROFS)
        XCTAssertEqual(fs.rename(parent: 1, name: b("f"), newParent: 1, newName: b("g"), flags: 0)?.errno, EROFS)
    }

    /// Walks the whole tree like `find`, returning every path.
    func walk(_ fs: Filesystem, _ ino: UInt64, _ prefix: String = "") -> [String] {
        var out: [String] = []
        for (name, a) in readAll(fs, ino) where name != "." && name != ".." {
            out.append(prefix + name)
            if a!.kind == .directory { out += walk(fs, a!.ino, prefix + name + "/") }
        }
        return out
    }

    func treeKeys() -> [String] {
        var keys: [String] = []
        for a in 0..<4 {
            for b in 0..<3 { for c in 0..<3 { keys.append("t/d\(a)/e\(b)/f\(c)") } }
            keys.append("t/d\(a)/top")
        }
        keys += ["t/marker/", "t/z"]
        return keys
    }

    func expectedPaths(_ keys: [String], under root: String) -> [String] {
        var set = Set<String>()
        for k in keys where k.hasPrefix(root) {
            let parts = k.dropFirst(root.count).split(separator: "/", omittingEmptySubsequences: false)
            for i in 1...parts.count where !parts[i - 1].isEmpty {
                set.insert(parts[0..<i].joined(separator: "/"))
            }
        }
        return set.sorted()
    }

    func testFlatListingMakesAWholeSmallTreeOneRequest() {
        let keys = treeKeys()
        let (fs, store) = make(keys) { $0.listPageSize = 1000 }
        let t = lookup(fs, 1, "t")!
        let before = store.lists
        let paths = walk(fs, t.ino)
        XCTAssertEqual(paths.sorted(), expectedPaths(keys, under: "t/"))
        XCTAssertEqual(store.lists - before, 1, "one flat page covers every directory")
        XCTAssertNil(lookup(fs, t.ino, "nothing"))
        XCTAssertEqual(store.lists - before, 1)
    }

    func testFlatThenDelimiterListingIsCorrectWithSmallPages() {
        let keys = treeKeys()
        // A walk sweeps the parent's subtree with flat pages (directories spread over pages carried
        // from one page to the next), up to a page limit and then lists the directory on its own:
        // each mix must give the tree.
        for page in [1, 2, 3, 5, 7] {
            for limit in [1, 2, 16] {
                let (fs, store) = make(keys) { $0.listPageSize = page; $0.walkPageLimit = limit }
                let t = lookup(fs, 1, "t")!
                XCTAssertEqual(walk(fs, t.ino).sorted(), expectedPaths(keys, under: "t/"), "page size \(page), walk limit \(limit)")
                XCTAssertEqual(walk(fs, t.ino).sorted(), expectedPaths(keys, under: "t/"), "again from the caches")
                XCTAssertGreaterThan(store.flatListCalls, 0)
            }
        }
    }

    /// 100,000 objects in 1,110 directories, walked as find does: at most 1.2 × 100 ListObjectsV2
    /// of 1,000 keys (the issue's target). 104 here: the first top directory is listed level by
    /// level (122 in all before walks were detected); once a second one is opened, sweeps of the
    /// parent's subtree complete each of the others, and everything below it, in about 10 pages.
    func testDeepTreeWalkListsAboutOncePerThousandObjects() {
        var keys: [String] = []
        for a in 0..<10 { for b in 0..<10 { for c in 0..<10 { for f in 0..<100 {
            keys.append("deep/a\(a)/b\(b)/c\(c)/f\(f < 10 ? "0" : "")\(f).txt")
        } } } }
        let (fs, store) = make(keys) { $0.listPageSize = 1000; $0.sweepCaches = false }
        let root = lookup(fs, 1, "deep")!
        let before = store.lists
        let paths = walk(fs, root.ino)
        XCTAssertEqual(paths.sorted(), expectedPaths(keys, under: "deep/"))
        let lists = store.lists - before
        print("deep tree walk: \(lists) ListObjectsV2 (\(store.flatListCalls) flat)")
        XCTAssertLessThanOrEqual(lists, 120)
    }

    /// A wide tree: 2,000 directories of 10 objects (photos/2024-01-01/...). Listed one directory
    /// at a time a walk costs about one request per directory; sweeping the parent's subtree
    /// costs about one per 1,000 keys.
    func testWideTreeWalkListsAboutOncePerThousandObjects() {
        var keys: [String] = []
        for d in 0..<2000 { for f in 0..<10 { keys.append("wide/d\(1000 + d)/f\(f).jpg") } }
        let (fs, store) = make(keys) { $0.listPageSize = 1000; $0.sweepCaches = false }
        let root = lookup(fs, 1, "wide")!
        let before = store.lists
        XCTAssertEqual(walk(fs, root.ino).sorted(), expectedPaths(keys, under: "wide/"))
        let lists = store.lists - before
        print("wide tree walk: \(lists) ListObjectsV2 for \(keys.count) objects in 2,000 directories")
        XCTAssertLessThanOrEqual(lists, 30)
    }

    /// A walk leaves the rest of a sweep for its next directory; a change made through the mount in
    /// between must not come back from what the sweep saw before it.
    func testChangeDuringAWalkIsNotUndoneByTheSweep() {
        var keys: [String] = []
        for d in 1...3 { for f in 0..<600 { keys.append("w/d\(d)/f\(100 + f)") } }
        let (fs, store) = make(keys) { $0.listPageSize = 1000; $0.sweepCaches = false }
        let w = lookup(fs, 1, "w")!
        _ = readAll(fs, w.ino)
        let d1 = lookup(fs, w.ino, "d1")!, d2 = lookup(fs, w.ino, "d2")!, d3 = lookup(fs, w.ino, "d3")!
        _ = readAll(fs, d1.ino)
        XCTAssertEqual(readAll(fs, d2.ino).count, 602, "the sweep passes d2 and stops inside d3")
        XCTAssertNil(fs.unlink(parent: d3.ino, name: b("f100")))
        XCTAssertNil(store.data("w/d3/f100"))
        let names = readAll(fs, d3.ino).map { $0.0 }
        XCTAssertFalse(names.contains("f100"), "deleted through the mount")
        XCTAssertEqual(names.count, 2 + 599)
    }

    /// S3 keys are at most 1,024 bytes: a longer path is refused before any request, as a local
    /// disk refuses a path too long.
    func testKeysOverS3sLimitAreRefusedWithENAMETOOLONG() {
        let (fs, store) = make([])
        var parent = Filesystem.rootIno
        let name = Array(repeating: UInt8(0x6E), count: 200)
        for _ in 0..<4 { parent = try! fs.mkdir(parent: parent, name: name).get().ino } // 804 bytes
        XCTAssertEqual(try? fs.mkdir(parent: parent, name: name).get().kind, .directory, "a marker of 1,005 bytes")
        let deep = lookup(fs, parent, String(decoding: name, as: UTF8.self))!.ino
        let before = store.lists
        if case .failure(let e) = fs.mkdir(parent: deep, name: name) { XCTAssertEqual(e.errno, ENAMETOOLONG) } else { XCTFail("mkdir") }
        if case .failure(let e) = fs.create(parent: deep, name: name, flags: O_WRONLY) { XCTAssertEqual(e.errno, ENAMETOOLONG) } else { XCTFail("create") }
        XCTAssertEqual(fs.rename(parent: Filesystem.rootIno, name: name, newParent: deep, newName: name, flags: 0)?.errno, ENAMETOOLONG)
        XCTAssertEqual(store.lists, before, "no request")
    }
}
