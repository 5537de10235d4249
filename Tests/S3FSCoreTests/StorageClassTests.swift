import Foundation
import XCTest
import S3
@testable import S3FSCore

/// Storage classes in the core: archived objects refused at open without a GET, restores, and
/// copies (renames, metadata changes) that keep an object's class.
final class StorageClassTests: XCTestCase {

    func make(_ configure: (InMemoryStore) -> Void) -> (Filesystem, InMemoryStore) {
        let store = InMemoryStore()
        configure(store)
        var o = FSOptions()
        o.sweepCaches = false
        o.metadataDebounce = 0
        return (Filesystem(store: store, options: o), store)
    }

    func testArchivedOpenIsRefusedWithoutAGetAndReadsOnceRestored() throws {
        let (fs, store) = make { s in
            s.put("cold.bin", "frozen bytes")
            s.setStorageClass("cold.bin", "DEEP_ARCHIVE")
            s.put("warm.txt", "warm")
        }
        store.restoreCompletes = false
        let cold = try XCTUnwrap(fs.lookup(parent: 1, name: b("cold.bin")).get())
        XCTAssertEqual(cold.size, 12, "listed and stat'ed like any file")
        try LogTap.during { log in
            for _ in 0..<3 { XCTAssertEqual(fs.open(ino: cold.ino, flags: O_RDONLY).failureErrno, EACCES) }
            XCTAssertEqual(store.getCalls, 0, "no GET of an archived object")
            XCTAssertEqual(store.headCalls, 3, "one HeadObject per open, for archived objects only")
            let lines = log.take().split(separator: "\n").filter { $0.contains("\"cold.bin\"") }
            XCTAssertEqual(lines.count, 1, "\(lines)")
            XCTAssertTrue(lines.first?.contains("DEEP_ARCHIVE") == true && lines.first?.contains("s3mount restore") == true)
            // A restore that runs: still refused (one line saying so); one that completed reads.
            XCTAssertEqual(try fs.restore(dirIno: 1, name: b("cold.bin"), days: 2, tier: "Bulk").get(), .started)
            XCTAssertEqual(try fs.restore(dirIno: 1, name: b("cold.bin"), days: 2, tier: "Bulk").get(), .alreadyInProgress)
            _ = log.take()
            XCTAssertEqual(fs.open(ino: cold.ino, flags: O_RDONLY).failureErrno, EACCES)
            XCTAssertEqual(fs.open(ino: cold.ino, flags: O_RDONLY).failureErrno, EACCES)
            XCTAssertEqual(log.take().split(separator: "\n").filter { $0.contains("\"cold.bin\"") && $0.contains("still running") }.count, 1)
        }
        store.restoreCompletes = true
        store.clearRestore("cold.bin")
        let (restored, log) = try capturingLog { try fs.restore(dirIno: 1, name: b("cold.bin"), days: 2, tier: "Bulk").get() }
        XCTAssertEqual(restored, .started)
        XCTAssertTrue(log.contains("restore of \"cold.bin\" (Bulk, 2 days): started"), log)
        let h = try fs.open(ino: cold.ino, flags: O_RDONLY).get()
        XCTAssertEqual(try fs.read(handle: h, offset: 0, size: 100).get(), b("frozen bytes"))
        fs.release(handle: h)
        // A STANDARD object opens with no HeadObject.
        let heads = store.headCalls
        let warm = try XCTUnwrap(fs.lookup(parent: 1, name: b("warm.txt")).get())
        let w = try fs.open(ino: warm.ino, flags: O_RDONLY).get()
        fs.release(handle: w)
        XCTAssertEqual(store.headCalls, heads)
        let counters = fs.stats().archive
        XCTAssertEqual(counters.refusedOpens >= 4, true)
        XCTAssertEqual(counters.restoringSeen >= 1, true)
        XCTAssertEqual(fs.restore(dirIno: 1, name: b("nothing"), days: 1, tier: "Bulk").failureErrno, ENOENT)
        XCTAssertEqual(fs.restore(dirIno: 1, name: b("cold.bin"), days: 0, tier: "Bulk").failureErrno, EINVAL)
        XCTAssertEqual(fs.restore(dirIno: 1, name: b("cold.bin"), days: 1, tier: "Soon").failureErrno, EINVAL)
    }

    func testRenameAndMetadataCopyKeepTheListedClass() throws {
        let (fs, store) = make { s in
            s.put("ia.txt", "one")
            s.setStorageClass("ia.txt", "ONEZONE_IA")
            s.put("d/a", "a")
            s.setStorageClass("d/a", "GLACIER_IR")
        }
        _ = readDirectory(fs, 1)
        XCTAssertNil(fs.rename(parent: 1, name: b("ia.txt"), newParent: 1, newName: b("moved.txt"), flags: 0))
        XCTAssertEqual(store.storageClass("moved.txt"), "ONEZONE_IA")
        let moved = try XCTUnwrap(fs.lookup(parent: 1, name: b("moved.txt")).get())
        _ = try fs.setattr(ino: moved.ino, size: nil, mode: 0o600, uid: nil, gid: nil, handle: nil).get()
        XCTAssertTrue(fs.meta.flush())
        XCTAssertEqual(store.storageClass("moved.txt"), "ONEZONE_IA", "a chmod's copy onto itself keeps the class")
        XCTAssertNil(fs.rename(parent: 1, name: b("d"), newParent: 1, newName: b("e"), flags: 0))
        XCTAssertEqual(store.storageClass("e/a"), "GLACIER_IR")
        XCTAssertTrue(store.copyClasses.allSatisfy { $0 != nil }, "\(store.copyClasses)")
    }
}

extension Result {
    var failureErrno: Int32? { if case .failure(let e as FSError) = self { return e.errno }; return nil }
}
