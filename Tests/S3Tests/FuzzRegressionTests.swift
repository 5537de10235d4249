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

    /// fuzz-s3xml: a processing instruction without data (`<?x?>`) made FoundationXML call
    /// strlen(NULL) (SIGSEGV). Processing instructions, DOCTYPEs and entity declarations (which S3
    /// never sends) are refused before the parser; the declaration and comments still read.
    func testXMLProcessingInstructionAndDoctype() {
        let page = "<ListBucketResult><Contents><Key>k</Key><Size>1</Size><LastModified>2024-01-02T03:04:05Z</LastModified></Contents></ListBucketResult>"
        for bad in ["<?omion?>\n" + page, page + "<?x?>", "<!DOCTYPE x [<!ENTITY a \"aaaa\">]>" + page,
                    "<ListBucketResult><![CDATA[x]]></ListBucketResult>", "<?xml-stylesheet?>" + page,
                    "<?xml nTo><L<?xm?>\"\"l-\nn", "<?xml a>" + page + "<?x?>"] {
            XCTAssertNil(S3XML.parseListObjectsV2(Array(bad.utf8)), bad)
            XCTAssertNil(S3XML.parseError(Array(bad.utf8)), bad)
        }
        for good in [page, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + page, "\u{FEFF}<?xml version=\"1.0\"?><!-- c -->" + page] {
            XCTAssertEqual(S3XML.parseListObjectsV2(Array(good.utf8))?.objects.count, 1, good)
        }
        XCTAssertEqual(S3XML.parseError(Array("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code></Error>".utf8))?.code, "NoSuchKey")
    }

    /// fuzz-events: a DeleteMessageBatch answer naming a failed entry "m-1" made `delete` index
    /// the batch at -1 (a trap): whatever answers at the queue's URL could end the mount.
    func testSQSDeleteFailedIdOutsideTheBatch() throws {
        let body = #"{"Successful":[{"Id":"m0"}],"Failed":[{"Id":"m1"},{"Id":"m-1"},{"Id":"m10"},{"Id":"m99999999999999999999"},{"Id":""},{"Id":7}]}"#
        let sqs = try SQSClient(queueURL: "https://sqs.us-east-1.amazonaws.com/123456789012/q", region: "us-east-1",
                                credentials: CredentialsProvider(source: nil), transport: CannedAnswer(body: Array(body.utf8)))
        XCTAssertEqual(try sqs.delete(["h0", "h1"]), ["h1"])
    }
    /// fuzz-metadata, fuzz-http: a Last-Modified year of -2147483648 overflowed `year - 1900`
    /// (a trap) in AmzDate.parseHTTPDate: one HeadObject or GetObject answer could end the mount.
    func testHTTPDateYearAtInt32Bounds() throws {
        XCTAssertEqual(AmzDate.parseHTTPDate("Tue, 02 Jan 2024 03:04:05 GMT"), 1_704_164_645)
        for year in ["-2147483648", "-2147481749", "2147483647", "9223372036854775807", "-9223372036854775808"] {
            _ = AmzDate.parseHTTPDate("Tue, 02 Jan \(year) 03:04:05 GMT") // no trap; nil or some date
        }
        XCTAssertNil(AmzDate.parseHTTPDate("Tue, 02 Jan 99999999999999999999 03:04:05 GMT"))
        let info = try S3Client.objectInfo(["last-modified": "Tue, 02 Jan -2147483648 03:04:05 GMT", "content-length": "1"], operation: "HeadObject")
        XCTAssertEqual(info.size, 1)
    }

    /// Found writing fuzz-journal's invariant (not by a run): bytesOfHex read "+f" and "-0" as hex bytes (UInt8(_:radix:) takes a sign),
    /// so a journal's key (or an ETag read as an MD5) of such digits stood for other bytes.
    func testHexDigitsOnly() {
        XCTAssertNil(bytesOfHex("+f"))
        XCTAssertNil(bytesOfHex("-0"))
        XCTAssertNil(bytesOfHex("0g"))
        XCTAssertNil(bytesOfHex("abc"))
        XCTAssertEqual(bytesOfHex("0aFf"), [0x0A, 0xFF])
        XCTAssertEqual(bytesOfHex(""), [])
    }
}

/// Answers every request with 200 and the same body.
private struct CannedAnswer: HTTPTransport {
    var body: [UInt8]
    func perform(_ request: HTTPRequest, sink: BodySink?) throws -> HTTPResponse {
        HTTPResponse(status: 200, headers: [:], body: body, bytesReceived: Int64(body.count))
    }
}
