import XCTest
@testable import S3

/// Inputs the fuzz targets (FuzzTargets/, scripts/fuzz.sh) found crashing a parser, each kept
/// here once fixed.
final class FuzzRegressionTests: XCTestCase {
    /// fuzz-s3xml: an element name that is not UTF-8 made FoundationXML trap (SIGILL) inside
    /// XMLParser.parse(): any ListObjectsV2 page, error body or STS answer could end the mount.
    func testXMLElementNameNotUTF8() {
        let bodies: [[UInt8]] = [
            [0x3C, 0xFF, 0x01, 0x00, 0x00],
            Array("<ListBucketResult><Contents><Key>a</Key></Contents>".utf8) + [0x3C, 0xC3, 0xA9, 0xFF, 0x3E],
        ]
        for b in bodies {
            XCTAssertNil(S3XML.parseListObjectsV2(b))
            XCTAssertNil(S3XML.parseError(b))
            XCTAssertNil(S3XML.firstValue(b, "Code"))
            XCTAssertNil(S3XML.parseSTSCredentials(b))
            XCTAssertTrue(S3XML.parseDeleteErrors(b).isEmpty)
        }
        // UTF-8 names beyond ASCII still read.
        let page = S3XML.parseListObjectsV2(Array("<ListBucketResult><Contents><Key>é</Key><Size>1</Size><LastModified>2024-01-02T03:04:05Z</LastModified></Contents></ListBucketResult>".utf8))
        XCTAssertEqual(page?.objects.map { $0.key }, [Array("é".utf8)])
    }
}
