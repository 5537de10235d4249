import XCTest
@testable import S3

/// `--as-of`: ListObjectVersions answers read, and the bucket chosen as of a moment.
final class VersionsTests: XCTestCase {
    func version(_ key: String, _ id: String, _ date: String, size: Int = 3, deleteMarker: Bool = false) -> String {
        deleteMarker
            ? "<DeleteMarker><Key>\(key)</Key><VersionId>\(id)</VersionId><IsLatest>false</IsLatest><LastModified>\(date)</LastModified></DeleteMarker>"
            : "<Version><Key>\(key)</Key><VersionId>\(id)</VersionId><LastModified>\(date)</LastModified><ETag>\"e\(id)\"</ETag><Size>\(size)</Size><StorageClass>STANDARD</StorageClass></Version>"
    }

    func page(_ body: String, truncated: Bool = false) -> VersionsPage? {
        S3XML.parseListObjectVersions(Array("<ListVersionsResult><EncodingType>url</EncodingType><IsTruncated>\(truncated)</IsTruncated><NextKeyMarker>b%20c</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker>\(body)<CommonPrefixes><Prefix>dir%2F</Prefix></CommonPrefixes></ListVersionsResult>".utf8))
    }

    func testChoosesEachKeysNewestVersionNotLaterThanTheMoment() throws {
        let p = try XCTUnwrap(page(
            version("a", "a3", "2026-01-03T00:00:00Z") + version("a", "a2", "2026-01-02T00:00:00Z") + version("a", "a1", "2026-01-01T00:00:00Z")
            + version("b%20c", "b2", "2026-01-02T00:00:00Z", deleteMarker: true) + version("b%20c", "b1", "2026-01-01T00:00:00Z")
            + version("d", "d1", "2026-01-03T00:00:00Z"), truncated: true))
        XCTAssertEqual(p.nextKeyMarker, Array("b c".utf8))
        XCTAssertEqual(p.nextVersionIdMarker, "v9")
        XCTAssertEqual(p.commonPrefixes, [Array("dir/".utf8)])
        XCTAssertTrue(p.isTruncated)
        let day2 = try XCTUnwrap(AmzDate.parseISO8601("2026-01-02T12:00:00Z"))
        let at2 = p.asOf(day2, decided: nil)
        XCTAssertEqual(at2.objects.map { String(decoding: $0.0.key, as: UTF8.self) }, ["a"], "b c is deleted, d comes later")
        XCTAssertEqual(at2.objects.first?.1, "a2")
        XCTAssertEqual(at2.objects.first?.0.etag, "\"ea2\"")
        let day1 = try XCTUnwrap(AmzDate.parseISO8601("2026-01-01T00:00:00Z"))
        XCTAssertEqual(p.asOf(day1, decided: nil).objects.map { $0.1 }, ["a1", "b1"], "a version dated exactly at the moment counts")
        XCTAssertEqual(p.asOf(day1 - 1, decided: nil).objects.count, 0)
        XCTAssertEqual(p.asOf(day2, decided: Array("a".utf8)).objects.count, 0, "a key chosen on an earlier page is not chosen again")
    }

    func testDeleteMarkersListedAfterTheVersionsCountByDate() throws {
        // moto lists every version first, then every delete marker.
        let p = try XCTUnwrap(page(version("b", "b1", "2026-01-01T00:00:00Z") + version("b", "m", "2026-01-02T00:00:00Z", deleteMarker: true)))
        XCTAssertEqual(p.asOf(try XCTUnwrap(AmzDate.parseISO8601("2026-01-03T00:00:00Z")), decided: nil).objects.count, 0)
        XCTAssertEqual(p.asOf(try XCTUnwrap(AmzDate.parseISO8601("2026-01-01T10:00:00Z")), decided: nil).objects.map { $0.1 }, ["b1"])
    }

    func testUnreadableAnswersAreNotEmptyListings() {
        for bad in ["", "<ListBucketResult></ListBucketResult>", "<Error><Code>AccessDenied</Code></Error>",
                    "<ListVersionsResult><Version><Key>a</Key><LastModified>2026-01-01T00:00:00Z</LastModified><Size>1</Size></Version></ListVersionsResult>",
                    "<ListVersionsResult><Version><Key>a</Key><VersionId>v</VersionId><LastModified>soon</LastModified><Size>1</Size></Version></ListVersionsResult>",
                    "<ListVersionsResult><Version><Key>a</Key><VersionId>v</VersionId><LastModified>2026-01-01T00:00:00Z</LastModified><Size>-1</Size></Version></ListVersionsResult>",
                    "<ListVersionsResult><Version><VersionId>v</VersionId><LastModified>2026-01-01T00:00:00Z</LastModified><Size>1</Size></Version></ListVersionsResult>"] {
            XCTAssertNil(S3XML.parseListObjectVersions(Array(bad.utf8)), bad)
        }
    }

    func testContinuationTokenCarriesAnyKey() {
        for t in [VersionsToken(keyMarker: Array("a b\n%/x".utf8), versionIdMarker: "v 1", decided: Array("a b\n%/x".utf8)),
                  VersionsToken(keyMarker: [], versionIdMarker: "", decided: nil)] {
            XCTAssertEqual(VersionsToken(t.text), t)
        }
        for bad in ["", "v1", "v2 a b -", "v1 a b x", "v1 a b"] { XCTAssertNil(VersionsToken(bad), bad) }
    }

    /// A versioned view lists versions and reads the version it listed.
    func testListsVersionsAndReadsByVersionId() throws {
        final class Store: HTTPTransport, @unchecked Sendable {
            var urls: [String] = []
            func perform(_ request: HTTPRequest, sink: BodySink?) throws -> HTTPResponse {
                urls.append(request.url)
                if request.url.contains("versions") {
                    let xml = "<ListVersionsResult><IsTruncated>false</IsTruncated><Version><Key>k</Key><VersionId>v1</VersionId><LastModified>2026-01-01T00:00:00Z</LastModified><ETag>\"e\"</ETag><Size>2</Size></Version></ListVersionsResult>"
                    return HTTPResponse(status: 200, headers: [:], body: Array(xml.utf8), bytesReceived: 0)
                }
                _ = sink?(UnsafeRawBufferPointer(start: nil, count: 0))
                return HTTPResponse(status: 200, headers: ["content-length": "2", "etag": "\"e\""], body: [], bytesReceived: 0)
            }
        }
        let t = Store()
        var c = S3Config(bucket: "b", endpoint: "http://127.0.0.1:9", region: "us-east-1", forcePathStyle: true, maxAttempts: 1)
        c.asOf = AmzDate.parseISO8601("2026-06-01T00:00:00Z")
        let client = S3Client(config: c, credentials: CredentialsProvider(source: StaticCredentialsSource(Credentials(accessKeyId: "AK", secretAccessKey: "SK", source: "t"))), transport: t)
        // A read of a key no listing showed yet lists its versions first.
        _ = try client.headObject(Array("k".utf8))
        XCTAssertTrue(t.urls[0].contains("versions") && t.urls[0].contains("prefix=k"), t.urls[0])
        XCTAssertTrue(t.urls[1].hasSuffix("/b/k?versionId=v1"), t.urls[1])
        let page = try client.listObjectsV2(prefix: [])
        XCTAssertEqual(page.objects.map(\.key), [Array("k".utf8)])
        XCTAssertFalse(t.urls.contains { $0.contains("list-type=2") })
        XCTAssertThrowsError(try client.headObject(Array("other".utf8))) { e in XCTAssertEqual((e as? S3Error)?.kind, .noSuchKey) }
    }
}
