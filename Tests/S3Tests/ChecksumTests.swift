import Foundation
import XCTest
@testable import S3

final class ChecksumTests: XCTestCase {
    func testCRC32MatchesTheStandardCheckValue() {
        // The CRC-32 check value (IEEE 802.3, zlib, S3's x-amz-checksum-crc32).
        XCTAssertEqual(CRC32.of(.bytes(Array("123456789".utf8))), 0xCBF4_3926)
        XCTAssertEqual(CRC32.base64(0xCBF4_3926), "y/Q5Jg==")
        XCTAssertEqual(CRC32.of(.bytes([])), 0)
    }

    func testCRC32OfAFileRegionEqualsThatOfItsBytes() throws {
        // Larger than the read buffer, at an odd offset: the CRC continues across reads.
        let data = (0..<(700 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
        let path = NSTemporaryDirectory() + "/s3mount-crc-\(UUID().uuidString)"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(data)))
        defer { unlink(path) }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        XCTAssertEqual(CRC32.of(.file(fd: fd, offset: 12_345, length: 600 << 10)), CRC32.of(.bytes(Array(data[12_345..<(12_345 + (600 << 10))]))))
        // A region past the end of the file cannot be read whole: no checksum rather than a wrong one.
        XCTAssertNil(CRC32.of(.file(fd: fd, offset: 600 << 10, length: 200 << 10)))
    }
}
