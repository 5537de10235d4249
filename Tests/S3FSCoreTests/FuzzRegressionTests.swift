import XCTest
@testable import S3FSCore

/// Inputs the fuzz targets (FuzzTargets/, scripts/fuzz.sh) found, each kept here once fixed.
final class CoreFuzzRegressionTests: XCTestCase {
    /// fuzz-metadata: an index that did not read back as written. A symlink to a file named "-"
    /// (or an ETag "-") was written as "-", the mark for "none": read back, the link had no target.
    func testIndexFieldThatIsADash() {
        let records: [[UInt8]: MetaRecord] = [
            Array("link".utf8): MetaRecord(etag: "\"e\"", meta: PosixMeta(mode: 0o120777, uid: 1, gid: 2, linkTarget: Array("-".utf8))),
            Array("x".utf8): MetaRecord(etag: "-", meta: PosixMeta(mode: 0o100644, uid: 1, gid: 1)),
            Array("-".utf8): MetaRecord(etag: "", meta: PosixMeta(mode: 0o40755, uid: 0, gid: 0, mtime: Timestamp(sec: -1, nsec: 5))),
        ]
        let bytes = MetaIndexCodec.encode(records)
        XCTAssertEqual(MetaIndexCodec.decode(bytes), records)
        XCTAssertTrue(String(decoding: bytes, as: UTF8.self).contains("link\t%22e%22\t120777\t1\t2\t-\t%2D\n"))
        // What earlier versions wrote for such a link still reads (as no target), and "%2D" as "-".
        XCTAssertNil(MetaIndexCodec.decode(Array("s3mount-meta 1\nl\t-\t120777\t0\t0\t-\t-\n".utf8))?[Array("l".utf8)]?.meta.linkTarget)
        XCTAssertEqual(MetaIndexCodec.decode(Array("s3mount-meta 1\nl\t-\t120777\t0\t0\t-\t%2D\n".utf8))?[Array("l".utf8)]?.meta.linkTarget, [0x2D])
    }
}
