import XCTest
@testable import S3FSCore

/// The handle table: one number space for files being read, written and directories.
final class HandleTests: XCTestCase {
    func testHandlesOfEachKindAreFoundOnlyAsThatKind() {
        let t = HandleTable()
        let d = t.add(.dir(DirHandle(ino: 1, parent: 1, dirPath: [], job: nil, walkParent: nil)))
        let d2 = t.add(.dir(DirHandle(ino: 2, parent: 1, dirPath: Array("a/".utf8), job: nil, walkParent: nil)))
        XCTAssertNotEqual(d, d2)
        XCTAssertNotNil(t.dir(d))
        XCTAssertNil(t.reader(d))
        XCTAssertNil(t.writer(d))
        XCTAssertEqual(t.counts.dir, 2)
        var changed = t.dir(d2)!
        changed.walkParent = []
        t.update(d2, changed)
        XCTAssertEqual(t.dir(d2)?.walkParent, [])
        guard case .dir? = t.remove(d) else { return XCTFail("removed a directory handle") }
        XCTAssertNil(t.dir(d))
        XCTAssertNil(t.remove(d), "a handle goes once")
        t.update(d, changed)
        XCTAssertNil(t.dir(d), "an update does not bring a closed handle back")
        XCTAssertFalse(t.isWriting(key: Array("a".utf8)))
    }
}
