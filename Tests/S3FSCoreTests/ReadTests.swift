import Foundation
import XCTest
import S3
@testable import S3FSCore

/// The read part: parallel parts, the data cache and walks that read ahead, on the in-memory store.
final class ReadTests: XCTestCase {

    func make(_ objects: [String: [UInt8]], configure: (inout FSOptions) -> Void = { _ in }, cache: DataCache? = nil) -> (Filesystem, InMemoryStore) {
        let store = InMemoryStore()
        for (k, v) in objects { store.put(Array(k.utf8), v) }
        var o = FSOptions()
        o.sweepCaches = false
        configure(&o)
        return (Filesystem(store: store, options: o, cache: cache), store)
    }

    func random(_ n: Int, seed: UInt64 = 1) -> [UInt8] {
        var x = seed &* 0x9E3779B97F4A7C15
        return (0..<n).map { _ in x ^= x << 13; x ^= x >> 7; x ^= x << 17; return UInt8(truncatingIfNeeded: x) }
    }

    func ino(_ fs: Filesystem, _ path: String) -> UInt64 {
        var parent = Filesystem.rootIno
        for part in path.split(separator: "/") { parent = try! fs.lookup(parent: parent, name: b(String(part))).get()!.ino }
        return parent
    }

    /// Reads the whole file in `block`-sized reads, in the order `order` gives the block numbers.
    func readFile(_ fs: Filesystem, _ path: String, block: Int = 128 << 10, size: Int, order: ((Int) -> [Int])? = nil) -> [UInt8] {
        let h = try! fs.open(ino: ino(fs, path), flags: O_RDONLY).get()
        defer { fs.release(handle: h) }
        let blocks = (size + block - 1) / block
        var out = [UInt8](repeating: 0, count: size)
        for i in order?(blocks) ?? Array(0..<blocks) {
            let got = try! fs.read(handle: h, offset: Int64(i * block), size: block).get()
            out.replaceSubrange(i * block..<i * block + got.count, with: got)
        }
        return out
    }

    func testSlowLinkSwitchesToParallelPartsAndBytesStayInOrder() {
        let data = random(40 << 20)
        let (fs, store) = make(["big.bin": data]) { o in
            o.parallelBelowBytesPerSecond = .infinity  // every link counts as slow
            o.readPartSize = 2 << 20
            o.readConcurrency = 4
        }
        XCTAssertEqual(readFile(fs, "big.bin", size: data.count), data)
        let gets = store.gets
        XCTAssertEqual(gets.filter { $0.openEnded }.count, 1, "one stream measured the link")
        let parts = gets.filter { !$0.openEnded }
        XCTAssertGreaterThan(parts.count, 10, "the rest came in ranged parts")
        XCTAssertTrue(parts.allSatisfy { $0.hi - $0.lo <= 2 << 20 }, "no part over the part size")
        // The stream and the parts cover the file once, without overlap.
        var covered = [Bool](repeating: false, count: data.count >> 16)
        for g in parts { for i in (g.lo >> 16)..<(g.hi >> 16) { XCTAssertFalse(covered[i]); covered[i] = true } }
        XCTAssertEqual(fs.reads.memory.inUse, 0, "buffers returned at close")
        // The next reader starts with parts at once: the link is known to be slow.
        let before = store.gets.count
        XCTAssertEqual(readFile(fs, "big.bin", block: 1 << 20, size: data.count), data)
        XCTAssertEqual(store.gets[before...].filter { $0.openEnded }.count, 0)
    }

    func testFastLinkKeepsOneStream() {
        let data = random(24 << 20)
        let (fs, store) = make(["big.bin": data]) { $0.parallelBelowBytesPerSecond = 0 }
        XCTAssertEqual(readFile(fs, "big.bin", size: data.count), data)
        XCTAssertEqual(store.gets.count, 1)
    }

    func testPartsServeReadsArrivingOutOfOrder() {
        let data = random(32 << 20, seed: 7)
        let (fs, _) = make(["f.bin": data]) { o in
            o.parallelBelowBytesPerSecond = .infinity
            o.readPartSize = 1 << 20
        }
        var rng = SystemRandomNumberGenerator()
        // The kernel's read-ahead: blocks shuffled within groups of 8.
        let shuffled: (Int) -> [Int] = { n in stride(from: 0, to: n, by: 8).flatMap { Array($0..<min(n, $0 + 8)).shuffled(using: &rng) } }
        XCTAssertEqual(readFile(fs, "f.bin", size: data.count, order: shuffled), data)
    }

    func testReadMemoryBoundHoldsAcrossReaders() {
        var objects: [String: [UInt8]] = [:]
        for i in 0..<4 { objects["f\(i)"] = random(12 << 20, seed: UInt64(i + 1)) }
        let (fs, _) = make(objects) { o in
            o.parallelBelowBytesPerSecond = .infinity
            o.readPartSize = 1 << 20
            o.maxReadMemory = 6 << 20
        }
        var peak = 0
        let handles = (0..<4).map { try! fs.open(ino: ino(fs, "f\($0)"), flags: O_RDONLY).get() }
        for block in 0..<(12 << 20) / (256 << 10) {
            for (i, h) in handles.enumerated() {
                let got = try! fs.read(handle: h, offset: Int64(block * (256 << 10)), size: 256 << 10).get()
                XCTAssertEqual(got, Array(objects["f\(i)"]![block * (256 << 10)..<(block + 1) * (256 << 10)]))
                peak = max(peak, fs.reads.memory.inUse)
            }
        }
        for h in handles { fs.release(handle: h) }
        // Each reader may always keep one part beyond the bound (so that every reader moves on).
        XCTAssertLessThanOrEqual(peak, (6 << 20) + 4 * (1 << 20) + (4 << 20))
        XCTAssertEqual(fs.reads.memory.inUse, 0)
    }

    // MARK: - data cache

    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "s3mcache-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    func testDataCacheServesSecondReadAndSurvivesARestart() throws {
        let dir = tempDir()
        let data = random(5 << 20 + 777)
        let cache = try DataCache(root: dir, maxBytes: 64 << 20, namespace: "t/b")
        let (fs, store) = make(["d/f.bin": data], configure: { $0.parallelBelowBytesPerSecond = 0 }, cache: cache)
        XCTAssertEqual(readFile(fs, "d/f.bin", size: data.count), data)
        let afterFirst = store.gets.count
        XCTAssertEqual(readFile(fs, "d/f.bin", size: data.count), data)
        XCTAssertEqual(store.gets.count, afterFirst, "the second read costs no GET")
        XCTAssertGreaterThan(cache.counters.hits, 0)
        // A second mount on the folder while this one runs is refused (they would evict each
        // other's blocks and serve holes).
        XCTAssertThrowsError(try DataCache(root: dir, maxBytes: 64 << 20, namespace: "t/b")) { e in
            XCTAssertTrue("\(e)".contains("in use by another running mount"), "\(e)")
        }
        cache.close()
        // A new mount over the same directory knows the blocks.
        let again = try DataCache(root: dir, maxBytes: 64 << 20, namespace: "t/b")
        XCTAssertTrue(again.contains(key: b("d/f.bin"), etag: store.etag("d/f.bin")!, size: Int64(data.count)))
        again.close()
        // Another bucket sharing the directory does not see them.
        let other = try DataCache(root: dir, maxBytes: 64 << 20, namespace: "t/other")
        XCTAssertFalse(other.contains(key: b("d/f.bin"), etag: store.etag("d/f.bin")!, size: Int64(data.count)))
    }

    func testChangedObjectIsNeverServedFromTheCache() throws {
        let cache = try DataCache(root: tempDir(), maxBytes: 64 << 20, namespace: "t/b")
        let (fs, store) = make(["f.txt": b("version one")], cache: cache)
        XCTAssertEqual(readFile(fs, "f.txt", size: 11), b("version one"))
        store.put(b("f.txt"), b("version two!"))
        // The listing (here: a new mount's first lookup) shows the new ETag.
        var o = FSOptions()
        o.sweepCaches = false
        let fs2 = Filesystem(store: store, options: o, cache: cache)
        XCTAssertEqual(readFile(fs2, "f.txt", size: 12), b("version two!"))
        XCTAssertFalse(cache.contains(key: b("f.txt"), etag: "\"old\"", size: 11))
    }

    func testCacheEvictsLeastRecentlyUsedWithinItsBound() throws {
        let cache = try DataCache(root: tempDir(), maxBytes: 8 << 20, namespace: "t/b")
        var objects: [String: [UInt8]] = [:]
        for i in 0..<6 { objects["f\(i)"] = random(2 << 20, seed: UInt64(i + 10)) }
        let (fs, store) = make(objects, configure: { $0.parallelBelowBytesPerSecond = 0 }, cache: cache)
        for i in 0..<6 {
            XCTAssertEqual(readFile(fs, "f\(i)", size: 2 << 20), objects["f\(i)"]!)
            XCTAssertLessThanOrEqual(cache.bytesCached, 8 << 20)
        }
        XCTAssertGreaterThan(cache.counters.evictions, 0)
        XCTAssertTrue(cache.contains(key: b("f5"), etag: store.etag("f5")!, size: 2 << 20), "the newest stays")
        XCTAssertFalse(cache.contains(key: b("f0"), etag: store.etag("f0")!, size: 2 << 20), "the oldest went")
        XCTAssertEqual(readFile(fs, "f0", size: 2 << 20), objects["f0"]!, "an evicted object is read from S3 again")
    }

    // MARK: - walks

    /// A filesystem over `count` objects named by `format` (one %03d) in directory `dir`, listed
    /// once the way `ls` does, with the walk window `window`.
    func listedDirectory(_ dir: String, _ count: Int, name format: (Int) -> String, size: (Int) -> Int, window: Int)
        -> (Filesystem, InMemoryStore, [String: [UInt8]]) {
        var objects: [String: [UInt8]] = [:]
        for i in 0..<count { objects[format(i)] = random(size(i), seed: UInt64(i + 100)) }
        let (fs, store) = make(objects) { $0.walkReadAhead = window }
        let h = try! fs.opendir(ino: ino(fs, dir)).get()
        _ = fs.readdir(handle: h, offset: 0, plus: true) { _ in true }
        fs.releasedir(handle: h)
        return (fs, store, objects)
    }

    func testWalkInListingOrderFetchesAheadWithinItsWindow() {
        let (fs, store, objects) = listedDirectory("w", 40, name: { String(format: "w/f%03d", $0) }, size: { 3000 + $0 }, window: 4)
        // Ten files in order, then the walk stops.
        for i in 0..<10 {
            let name = String(format: "w/f%03d", i)
            XCTAssertEqual(readFile(fs, name, size: objects[name]!.count), objects[name]!)
        }
        usleep(200_000)
        let keys = store.gets.map { $0.key }
        XCTAssertEqual(Set(keys).count, keys.count, "no file fetched twice")
        XCTAssertLessThanOrEqual(keys.count, 10 + 4, "nothing beyond the window ahead of the walk")
        XCTAssertGreaterThanOrEqual(fs.walkPrefetch.used, 7, "files after the first two came from the read-ahead")
    }

    func testSniffingWalkFetchesOnlyHeadsAhead() {
        let (fs, store, objects) = listedDirectory("s", 30, name: { String(format: "s/f%03d", $0) }, size: { 200_000 + $0 }, window: 6)
        // A file manager guessing types: the first 16 KiB of each file, in listing order.
        for i in 0..<30 {
            let name = String(format: "s/f%03d", i)
            let fh = try! fs.open(ino: ino(fs, name), flags: O_RDONLY).get()
            XCTAssertEqual(try! fs.read(handle: fh, offset: 0, size: 16 << 10).get(), Array(objects[name]![0..<(16 << 10)]))
            fs.release(handle: fh)
        }
        usleep(200_000)
        let gets = store.gets
        let bytes = gets.reduce(0) { $0 + $1.hi - $1.lo }
        XCTAssertLessThanOrEqual(gets.count, 30 + 6, "one GET per file, and at most the window beyond")
        XCTAssertLessThanOrEqual(bytes, 200_000 + 35 * (64 << 10), "heads only, once the walk showed it sniffs")
        XCTAssertGreaterThanOrEqual(fs.walkPrefetch.used, 25)
        // A reader that goes on past the head gets the rest, right.
        let name = "s/f029"
        XCTAssertEqual(readFile(fs, name, size: objects[name]!.count), objects[name]!)
    }

    func testReverseWalkOfOneTypeFetchesAheadOnlyThatType() {
        // Thunar goes through a folder from its end and opens only what it cannot tell by name.
        let (fs, store, objects) = listedDirectory("t", 60, name: { String(format: "t/f%03d.%@", $0, $0 % 3 == 0 ? "py" : "txt") },
                                                   size: { 2000 + $0 }, window: 4)
        let pys = (0..<60).filter { $0 % 3 == 0 }.reversed().map { String(format: "t/f%03d.py", $0) }
        for name in pys { XCTAssertEqual(readFile(fs, name, size: objects[name]!.count), objects[name]!) }
        usleep(200_000)
        let keys = store.gets.map { $0.key }
        XCTAssertTrue(keys.allSatisfy { $0.hasSuffix(".py") }, "no .txt fetched: \(keys.filter { !$0.hasSuffix(".py") })")
        XCTAssertEqual(Set(keys).count, keys.count, "no file fetched twice")
        XCTAssertGreaterThanOrEqual(fs.walkPrefetch.used, pys.count - 3)
    }
}
