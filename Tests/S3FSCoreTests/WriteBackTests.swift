import Glibc
import XCTest
@testable import S3
@testable import S3FSCore

/// `--write-back`: the books that bound what is owed, and the journal a later mount reads.
final class WriteBackTests: XCTestCase {
    func testBooksAdmitWithinTheBoundsAndAFileLargerThanTheByteBoundAlone() {
        var b = WriteBackBooks(maxFiles: 2, maxBytes: 100)
        XCTAssertTrue(b.admits(1_000), "nothing owed: even a file past the byte bound goes (alone)")
        b.admit(1, size: 60)
        XCTAssertTrue(b.admits(40))
        XCTAssertFalse(b.admits(41), "60 + 41 bytes pass the bound")
        b.admit(2, size: 10)
        XCTAssertFalse(b.admits(1), "two files owed: the count bound")
        b.admit(2, size: 30) // closed again after more writes: its size changes, not the count
        XCTAssertEqual(b.pending, 2)
        XCTAssertEqual(b.owedBytes, 90)
        b.landed(1)
        XCTAssertEqual(b.uploaded, 1)
        XCTAssertTrue(b.admits(70))
        // A failure leaves the bound (writers never wait for what may fail for hours) and is kept.
        b.fail(2)
        XCTAssertTrue(b.idle)
        XCTAssertEqual(b.failures, 1)
        XCTAssertEqual(b.failed, [2])
        b.fail(2)
        XCTAssertEqual(b.failures, 1, "counted once")
        b.landed(2) // sent again at the next fsync
        XCTAssertTrue(b.failed.isEmpty)
        XCTAssertEqual(b.uploaded, 1, "a retried failure was not owed any more")
        b.admit(3, size: 5)
        b.drop(3)
        XCTAssertTrue(b.idle)
        XCTAssertEqual(b.owedBytes, 0)
    }

    private func spool() -> String {
        let dir = NSTemporaryDirectory() + "wb-\(UUID().uuidString)"
        mkdir(dir, 0o700)
        return dir
    }

    private func segments(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix("s3mount-writeback-") }.sorted()
    }

    func testTheJournalKeepsWhatIsOwedWithItsLastKeyAndMetadata() throws {
        let dir = spool()
        let j = try XCTUnwrap(WriteBackJournal(spoolDir: dir, store: "http://x/b"))
        let small = Array("hello\n".utf8)
        let a = try XCTUnwrap(j.begin(key: Array("d/a".utf8), meta: [("mode", "33188")], size: 6, inline: small, spool: dir + "/s3mount-spool-AAAAAA"))
        let b = try XCTUnwrap(j.begin(key: Array("d/b".utf8), meta: [], size: 1 << 20, inline: nil, spool: dir + "/s3mount-spool-BBBBBB"))
        let c = try XCTUnwrap(j.begin(key: Array("d/c".utf8), meta: [], size: 0, inline: [], spool: dir + "/s3mount-spool-CCCCCC"))
        j.note(a, key: Array("d/renamed".utf8), meta: [("mode", "33152"), ("mtime", "1.5")])
        j.end(b)
        XCTAssertEqual(j.openRecords, 2)
        let seg = try XCTUnwrap(segments(dir).first)
        let bytes = Array(try XCTUnwrap(FileManager.default.contents(atPath: dir + "/" + seg)))
        let owed = WriteBackJournal.owed(in: bytes)
        XCTAssertEqual(owed.map(\.id), [a, c])
        XCTAssertEqual(owed[0].key, Array("d/renamed".utf8))
        XCTAssertEqual(owed[0].inline, small)
        XCTAssertEqual(owed[0].meta.map { $0.0 + "=" + $0.1 }, ["mode=33152", "mtime=1.5"])
        XCTAssertEqual(owed[0].spool, "s3mount-spool-AAAAAA")
        XCTAssertEqual(owed[1].inline, [], "an empty file is owed too (touch)")
        // A record cut short by the crash (its close never returned) ends the reading, and what was
        // complete before it is still owed.
        let cut = bytes + Array("+ 9 \(UploadJournal.encode(Array("http://x/b".utf8))) 61 - 100 s3mount-spool-DDDDDD inline\nshort".utf8)
        XCTAssertEqual(WriteBackJournal.owed(in: cut).map(\.id), [a, c])
        // A spool name that is a path is not read.
        let planted = Array("+ 5 s - 10 ../../etc/passwd spooled\n".utf8)
        XCTAssertTrue(WriteBackJournal.owed(in: planted).isEmpty)
        j.end(a)
        j.end(c)
        j.close()
        XCTAssertEqual(segments(dir), [], "a journal with nothing owed goes at a clean exit")
    }

    func testAnEarlierRunsJournalIsFoundOnlyOnceItsProcessIsGone() throws {
        let dir = spool()
        let j = try XCTUnwrap(WriteBackJournal(spoolDir: dir, store: "s"))
        _ = j.begin(key: [0x61], meta: [], size: 1, inline: [0x61], spool: dir + "/s3mount-spool-AAAAAA")
        // A segment of another process, still locked by it, is not an earlier run's.
        let other = dir + "/s3mount-writeback-999999-0.journal"
        let fd = open(other, O_WRONLY | O_CREAT, 0o600)
        XCTAssertEqual(flock(fd, LOCK_EX), 0)
        // (flock locks belong to the open file: this process's second open is another owner.)
        XCTAssertTrue(WriteBackJournal.earlierRuns(in: dir).allSatisfy { !$0.paths.contains(other) })
        close(fd)
        let runs = WriteBackJournal.earlierRuns(in: dir)
        XCTAssertTrue(runs.contains { $0.paths == [other] }, "unlocked: its process is gone")
        for r in runs { r.fds.forEach { close($0) } }
        XCTAssertFalse(runs.contains { $0.paths.contains { $0.contains("-\(getpid())-") } }, "this process's own journal is no earlier run")
        // A second journal of this process never takes the first one's file.
        XCTAssertNil(WriteBackJournal(spoolDir: dir, store: "s"))
        j.close()
    }
}
