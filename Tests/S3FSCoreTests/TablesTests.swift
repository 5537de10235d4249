import XCTest
@testable import S3FSCore

/// The compact tables behind the caches: what they hold must stay findable through removals,
/// slot reuse, index shifts and compaction.
final class TablesTests: XCTestCase {
    /// A fixed pseudo-random sequence (the same every run).
    struct Sequence { var x: UInt64 = 0x9E37_79B9_7F4A_7C15; mutating func next(_ n: Int) -> Int { x = x &* 6364136223846793005 &+ 1442695040888963407; return Int((x >> 33) % UInt64(n)) } }

    func name(_ i: Int) -> [UInt8] { Array("name-\(i)".utf8) }

    func testNodeTableFindsEveryLiveInodeAfterRandomRemovalsAndNeverReusesANumber() {
        var t = NodeTable(root: 1)
        var live: [Int: Node] = [:] // i -> node
        var everIssued = Set<UInt64>([1])
        var rnd = Sequence()
        for i in 0..<20_000 {
            let n = t.add(parent: UInt64(1 + i % 50), parentPath: [], name: StoredName(copying: name(i)), kind: i % 7 == 0 ? .directory : .file)
            XCTAssertTrue(everIssued.insert(n.ino).inserted)
            live[i] = n
        }
        for _ in 0..<3 {
            for i in Array(live.keys) where rnd.next(10) < 6 {
                t.remove(live[i]!.ino)
                XCTAssertNil(t[live[i]!.ino])
                live[i] = nil
            }
            for i in 20_000..<25_000 where live[i] == nil {
                let n = t.add(parent: UInt64(1 + i % 50), parentPath: [], name: StoredName(copying: name(i)), kind: .file)
                XCTAssertTrue(everIssued.insert(n.ino).inserted, "an inode number came back")
                live[i] = n
            }
            _ = t.shrinkIfSparse()
        }
        XCTAssertEqual(t.count, live.count + 1)
        for (i, n) in live {
            XCTAssertEqual(t.find(parent: UInt64(1 + i % 50), name: name(i), kind: n.kind)?.ino, n.ino)
            XCTAssertEqual(t[n.ino]?.name, name(i))
        }
        XCTAssertNil(t.find(parent: 1, name: name(0), kind: .file), "name-0 is a directory")
        // Detached: still there by number, no longer by name.
        let (i, n) = live.first!
        t.detach(n.ino)
        XCTAssertNotNil(t[n.ino])
        XCTAssertNil(t.find(parent: UInt64(1 + i % 50), name: name(i), kind: n.kind))
    }

    func testNodeTableShrinksAfterMassForgetAndKeepsNumbersUnique() {
        var t = NodeTable(root: 1)
        var issued = Set<UInt64>()
        var nodes: [Node] = []
        for i in 0..<10_000 { let n = t.add(parent: 1, parentPath: [], name: StoredName(copying: name(i)), kind: .file); nodes.append(n); issued.insert(n.ino) }
        for n in nodes.dropFirst(10) { t.remove(n.ino) }
        XCTAssertTrue(t.shrinkIfSparse())
        for i in 0..<10 { XCTAssertEqual(t.find(parent: 1, name: name(i), kind: .file)?.ino, nodes[i].ino) }
        for i in 10_000..<20_000 {
            let n = t.add(parent: 1, parentPath: [], name: StoredName(copying: name(i)), kind: .file)
            XCTAssertTrue(issued.insert(n.ino).inserted, "an inode number came back after the table shrank")
        }
    }

    func testDirTableRemovesRevivesAndCompactsWithoutLosingNames() {
        var t = DirTable()
        func entry(_ size: Int64) -> CachedEntry { CachedEntry(kind: .file, size: size, mtime: 0, etag: "\"0123456789abcdef0123456789abcdef\"", at: 1) }
        for i in 0..<1000 { t.set(name(i), entry(Int64(i))) }
        let kept = t.storedName(name(5))!
        for i in 0..<1000 where i % 10 != 0 { t.set(name(i), nil) }
        XCTAssertEqual(t.live, 100)
        XCTAssertLessThan(t.slots.count, 1000, "removals compacted the table")
        XCTAssertEqual(kept.bytes, name(5), "a name handed out stays readable after compaction")
        for i in 0..<1000 {
            if i % 10 == 0 { XCTAssertEqual(t[name(i)]?.size, Int64(i)) } else { XCTAssertNil(t[name(i)]) }
        }
        t.set(name(3), entry(33))
        t.set(name(3), entry(34))
        XCTAssertEqual(t[name(3)]?.size, 34)
        XCTAssertEqual(t.live, 101)
        XCTAssertEqual(t[name(0)]?.etag, "\"0123456789abcdef0123456789abcdef\"")
        XCTAssertEqual(t.entries.map { $0.0 }, (0..<100).map { name($0 * 10) } + [name(3)], "in the order learned")
    }

    func testAttrCacheMarkCompleteDropsWhatTheListingDidNotSee() {
        var c = AttrCache()
        let dir = Array("d/".utf8)
        c[dir: dir, name: name(1)] = CachedEntry(kind: .file, size: 1, mtime: 0, etag: "", at: 10)
        c[dir: dir, name: name(2)] = CachedEntry(kind: .file, size: 2, mtime: 0, etag: "", at: 20)
        c[dir: dir, name: name(3)] = CachedEntry(kind: .file, size: 3, mtime: 0, etag: "", at: 30)
        c.markComplete(dir, at: 20) // a listing started at 20 saw name-2; name-3 was written after it began
        XCTAssertEqual(c.completeEntries(dir)?.map { $0.0 }, [name(2), name(3)])
        XCTAssertEqual(c[dir + name(2)]?.size, 2, "entry keys address the same table")
        XCTAssertEqual(c.sweep(fresh: { $0 >= 25 }), 2, "name-2 and the listing expire")
        XCTAssertNil(c.completeEntries(dir))
        XCTAssertEqual(c[dir: dir, name: name(3)]?.size, 3)
    }
}

/// Part arithmetic of multipart uploads, whose sizes double every 1,000 parts: the closed forms
/// must agree with the part bounds everywhere, the tier boundaries most of all.
final class PartMathTests: XCTestCase {
    func testPartIndexAndCountAgreeWithPartBounds() throws {
        let w = try FileWriter(store: InMemoryStore(), key: Array("k".utf8), ino: 2, meta: PosixMeta(mode: 0o100644, uid: 0, gid: 0), spoolDir: "/tmp",
                               multipartThreshold: 16 << 20, partSize: 8 << 20, parallelParts: 8)
        defer { w.close() }
        for n in [1, 2, 3, 999, 1000, 1001, 1002, 1999, 2000, 2001, 2999, 3000, 3001, 9999, 10000] {
            let (a, b) = w.partBounds(n)
            XCTAssertEqual(w.partIndex(containing: a), n)
            XCTAssertEqual(w.partIndex(containing: b - 1), n)
            XCTAssertEqual(w.partIndex(containing: b), n + 1)
            XCTAssertEqual(w.partCount(for: b), n, "an object ending exactly at part \(n)'s end")
            XCTAssertEqual(w.partCount(for: b + 1), n + 1)
        }
        XCTAssertEqual(w.partCount(for: 0), 1)
        XCTAssertEqual(w.partCount(for: 1), 1)
        // 10,000 parts reach past S3's 5 TiB object limit.
        XCTAssertGreaterThan(w.partBounds(10000).1, 5 << 40)
    }
}
