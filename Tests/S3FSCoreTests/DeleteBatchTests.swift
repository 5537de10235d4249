import Foundation
import XCTest
import S3
@testable import S3FSCore

/// The decisions behind batched unlinks (DeleteBatch, tested directly with given times), and the
/// filesystem's use of them on an in-memory store.
final class DeleteBatchTests: XCTestCase {
    func k(_ s: String) -> [UInt8] { Array(s.utf8) }

    func testTheFirstUnlinkIsSentAloneAndABurstLastsWhileUnlinksKeepComing() {
        var b = DeleteBatch()
        XCTAssertFalse(b.answersAtOnce(at: 0), "no delete has succeeded: the first unlink asks S3")
        b.succeeded(at: 10)
        XCTAssertTrue(b.answersAtOnce(at: 10.1))
        XCTAssertFalse(b.answersAtOnce(at: 10.3), "200 ms without an unlink: the burst is over")
        b.succeeded(at: 20)
        for i in 1...50 {
            let t = 20 + Double(i) * 0.1
            XCTAssertTrue(b.answersAtOnce(at: t), "unlinks 100 ms apart keep the burst going (\(i))")
            b.queue(k("d/f\(i)"), at: t)
        }
        XCTAssertFalse(b.answersAtOnce(at: 25.25))
    }

    func testABatchIsDueAtAThousandKeysOrWhenIdleOrOld() {
        var b = DeleteBatch()
        b.queue(k("a"), at: 0)
        XCTAssertFalse(b.isDue(at: 0.01))
        XCTAssertTrue(b.isDue(at: 0.021), "20 ms without another unlink")
        XCTAssertEqual(b.deadline!, 0.02, accuracy: 1e-9)
        XCTAssertTrue(b.isDue(at: 0, flush: true), "someone waits for it")
        // Unlinks every 10 ms: never idle, due once the oldest waited 100 ms.
        var b2 = DeleteBatch()
        for i in 0..<10 { b2.queue(k("f\(i)"), at: Double(i) * 0.01) }
        XCTAssertFalse(b2.isDue(at: 0.095))
        XCTAssertTrue(b2.isDue(at: 0.1))
        // A thousand keys go at once, in the order of their unlinks; the rest wait for the next batch.
        var b3 = DeleteBatch()
        for i in 0..<1500 { b3.queue(k(String(format: "k%04d", i)), at: 0) }
        XCTAssertTrue(b3.isDue(at: 0))
        let first = b3.take(at: 0)
        XCTAssertEqual(first.count, 1000)
        XCTAssertEqual(first.first, k("k0000"))
        XCTAssertEqual(first.last, k("k0999"))
        XCTAssertFalse(b3.isDue(at: 5), "one batch on the wire at a time")
        XCTAssertEqual(b3.pendingCount, 1500)
        XCTAssertEqual(b3.finish(refused: [], at: 0.05), [])
        XCTAssertEqual(b3.take(at: 0.2).count, 500)
        _ = b3.finish(refused: [], at: 0.25)
        XCTAssertTrue(b3.isIdle)
        XCTAssertEqual(b3.batched, 1500)
        XCTAssertEqual(b3.batches, 2)
        XCTAssertEqual(b3.pendingCount, 0)
    }

    func testPendingKeysStayHiddenUntilSettledUnlessWrittenAgain() {
        var b = DeleteBatch()
        b.queue(k("d/a"), at: 0)
        b.queue(k("d/b"), at: 0)
        b.queue(k("d/c"), at: 0)
        XCTAssertTrue(b.hides(k("d/a"), listingStartedAt: 0))
        XCTAssertFalse(b.withdraw(k("d/c")), "pending only: nothing on the wire to wait for")
        XCTAssertFalse(b.hides(k("d/c"), listingStartedAt: 0))
        XCTAssertEqual(b.take(at: 1), [k("d/a"), k("d/b")], "a key written again is not deleted")
        XCTAssertTrue(b.hides(k("d/a"), listingStartedAt: 1))
        XCTAssertTrue(b.withdraw(k("d/b")), "on the wire: its upload waits for the batch")
        XCTAssertFalse(b.hides(k("d/b"), listingStartedAt: 1))
        XCTAssertTrue(b.inFlight(k("d/b")))
        XCTAssertEqual(b.hiddenKeys(listingStartedAt: 1), [k("d/a")])
        XCTAssertEqual(b.finish(refused: [], at: 1.05), [])
        XCTAssertFalse(b.inFlight(k("d/b")))
        // Deleted: hidden from a listing begun before the batch landed (its pages may predate the
        // delete), not from one begun after (another client may have written the name since).
        XCTAssertTrue(b.hides(k("d/a"), listingStartedAt: 1.01))
        XCTAssertFalse(b.hides(k("d/a"), listingStartedAt: 1.06))
        XCTAssertFalse(b.hides(k("d/b"), listingStartedAt: 1.01), "written again while the batch was on the wire")
        b.sweep(at: 3.1)
        XCTAssertEqual(b.hiddenKeys(listingStartedAt: 0), [], "forgotten after a while")
        // Written again after its batch landed: shown at once.
        b.queue(k("d/x"), at: 4)
        _ = b.take(at: 4.1)
        _ = b.finish(refused: [], at: 4.2)
        XCTAssertTrue(b.hides(k("d/x"), listingStartedAt: 4.15))
        XCTAssertFalse(b.withdraw(k("d/x")))
        XCTAssertFalse(b.hides(k("d/x"), listingStartedAt: 4.15))
    }

    func testRefusedKeysShowAgainAndABatchThatDeletesNothingEndsTheBurst() {
        var b = DeleteBatch()
        b.succeeded(at: 0)
        for n in ["d/a", "d/b", "d/c"] { b.queue(k(n), at: 0.01) }
        _ = b.take(at: 0.05)
        XCTAssertEqual(b.finish(refused: [k("d/b")], at: 0.06), [k("d/b")])
        XCTAssertEqual(b.failed, 1)
        XCTAssertFalse(b.hides(k("d/b"), listingStartedAt: 0))
        XCTAssertTrue(b.answersAtOnce(at: 0.07), "the batch deleted the others: the burst goes on")
        b.queue(k("d/e"), at: 0.08)
        b.queue(k("d/f"), at: 0.08)
        _ = b.take(at: 0.1)
        XCTAssertTrue(b.withdraw(k("d/f")))
        XCTAssertEqual(b.finish(refused: [k("d/e"), k("d/f")], at: 0.11), [k("d/e")], "d/f was written again: nothing to show")
        XCTAssertEqual(b.failed, 3)
        XCTAssertFalse(b.answersAtOnce(at: 0.12), "nothing deleted: the next unlink asks S3 alone")
    }

    func testBusyUnderAPrefixWhileADeleteThereIsPendingOrOnTheWire() {
        var b = DeleteBatch()
        b.queue(k("a/b/x"), at: 0)
        XCTAssertTrue(b.busy(under: k("a/")))
        XCTAssertTrue(b.busy(under: k("a/b/")))
        XCTAssertTrue(b.busy(under: []))
        XCTAssertFalse(b.busy(under: k("c/")))
        _ = b.take(at: 1)
        XCTAssertTrue(b.busy(under: k("a/b/")))
        _ = b.withdraw(k("a/b/x"))
        XCTAssertFalse(b.busy(under: k("a/b/")), "written again: rmdir has nothing to wait for")
        _ = b.finish(refused: [], at: 1.1)
        XCTAssertFalse(b.busy(under: []))
    }

    // MARK: - through the filesystem

    func make(_ keys: [String]) -> (Filesystem, InMemoryStore) {
        let store = InMemoryStore()
        for key in keys { store.put(key) }
        var o = FSOptions()
        o.metadataTTL = 60
        return (Filesystem(store: store, options: o), store)
    }

    func testABurstOfUnlinksIsDeletedInBatchesAndRmdirWaitsForThem() throws {
        let names = (0..<300).map { String(format: "f%03d", $0) }
        let (fs, store) = make(names.map { "d/\($0)" } + ["keep"])
        let d = try XCTUnwrap(try fs.lookup(parent: 1, name: k("d")).get())
        XCTAssertEqual(readDirectory(fs, d.ino).count, 302)
        for n in names { XCTAssertNil(fs.unlink(parent: d.ino, name: k(n)), n) }
        XCTAssertEqual(store.singleDeletes, 1, "the first unlink is sent alone")
        XCTAssertEqual(readDirectory(fs, d.ino).map { $0.0 }, [".", ".."])
        XCTAssertNil(fs.rmdir(parent: 1, name: k("d")))
        XCTAssertEqual(store.keys(prefix: "d/"), [], "rmdir returns once the deletes under it are done")
        XCTAssertLessThanOrEqual(store.batchDeletes, 10)
        XCTAssertGreaterThanOrEqual(store.batchDeletes, 1)
        let st = fs.stats()
        XCTAssertEqual(st.deletesBatched, 299)
        XCTAssertEqual(st.deletesPending, 0)
        XCTAssertEqual(st.deletesFailed, 0)
    }

    func testARefusedFirstUnlinkFailsAndARefusedBatchedKeyShowsAgain() throws {
        let (fs, store) = make(["d/a", "d/b", "d/c", "d/no-1", "d/z"])
        store.refuseDelete = { String(decoding: $0, as: UTF8.self).contains("no-") }
        let d = try XCTUnwrap(try fs.lookup(parent: 1, name: k("d")).get())
        _ = readDirectory(fs, d.ino)
        XCTAssertEqual(fs.unlink(parent: d.ino, name: k("no-1"))?.errno, EACCES, "sent alone: S3's answer")
        XCTAssertNil(fs.unlink(parent: d.ino, name: k("a")))
        for n in ["b", "c"] { XCTAssertNil(fs.unlink(parent: d.ino, name: k(n))) }
        XCTAssertEqual(store.singleDeletes, 2)
        // A key refused inside a batch: its name shows again, and rmdir finds the directory not empty.
        store.refuseDelete = { String(decoding: $0, as: UTF8.self).hasSuffix("/c") }
        XCTAssertEqual(fs.rmdir(parent: 1, name: k("d"))?.errno, ENOTEMPTY)
        XCTAssertEqual(Set(readDirectory(fs, d.ino).map { $0.0 }), [".", "..", "c", "no-1", "z"])
        XCTAssertEqual(fs.stats().deletesFailed, 1)
    }

    func testANameWrittenAgainDuringABurstKeepsItsNewObject() throws {
        let (fs, store) = make(["d/a", "d/b", "d/c"])
        let d = try XCTUnwrap(try fs.lookup(parent: 1, name: k("d")).get())
        _ = readDirectory(fs, d.ino)
        for n in ["a", "b", "c"] { XCTAssertNil(fs.unlink(parent: d.ino, name: k(n))) }
        let (_, h) = try fs.create(parent: d.ino, name: k("b"), flags: O_WRONLY).get()
        _ = [UInt8]("new".utf8).withUnsafeBytes { fs.write(handle: h, offset: 0, data: $0) }
        XCTAssertNil(fs.flush(handle: h, final: true))
        fs.release(handle: h)
        fs.deletes.flush()
        usleep(50_000)
        XCTAssertEqual(store.keys(prefix: "d/"), ["d/b"])
        XCTAssertEqual(store.data("d/b"), Array("new".utf8))
        XCTAssertEqual(readDirectory(fs, d.ino).map { $0.0 }, [".", "..", "b"])
    }
}
