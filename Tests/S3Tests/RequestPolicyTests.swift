import XCTest
@testable import S3

/// Which headers each kind of request carries under a RequestPolicy, seen by a transport that
/// records every request instead of sending it.
final class RequestPolicyTests: XCTestCase {
    final class Recorder: HTTPTransport, @unchecked Sendable {
        var requests: [HTTPRequest] = []
        /// Answers by method: a multipart creation gets an UploadId, a copy its result.
        func perform(_ request: HTTPRequest, sink: BodySink?) throws -> HTTPResponse {
            requests.append(request)
            var body: [UInt8] = []
            if request.url.hasSuffix("?uploads=") { body = Array("<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>".utf8) }
            if request.headers.contains(where: { $0.0 == "x-amz-copy-source" }) { body = Array("<CopyObjectResult><ETag>\"e\"</ETag></CopyObjectResult>".utf8) }
            if request.url.contains("list-type=2") { body = Array("<ListBucketResult></ListBucketResult>".utf8) }
            return HTTPResponse(status: 200, headers: ["etag": "\"e\"", "content-length": "0"], body: body, bytesReceived: 0)
        }
        func headers(_ i: Int) -> [String: String] {
            Dictionary(requests[i].headers.map { ($0.0.lowercased(), $0.1) }, uniquingKeysWith: { a, _ in a })
        }
    }

    static let key = CustomerKey(raw: Array(repeating: 7, count: 32))!

    func client(_ t: Recorder, _ policy: RequestPolicy) -> S3Client {
        var c = S3Config(bucket: "b", endpoint: "http://127.0.0.1:9", region: "us-east-1", forcePathStyle: true, maxAttempts: 1)
        c.policy = policy
        return S3Client(config: c, credentials: CredentialsProvider(source: StaticCredentialsSource(Credentials(accessKeyId: "AK", secretAccessKey: "SK", source: "t"))),
                        transport: t)
    }

    /// Every request kind the client sends, in order, with its name.
    func everyRequest(_ c: S3Client) throws -> [String] {
        let k = Array("k".utf8)
        _ = try c.listObjectsV2(prefix: [])
        _ = try c.headObject(k)
        _ = try c.getObjectBytes(k)
        _ = try c.getObjectBytes(k, range: 0..<10)
        try c.putObject(k, body: .bytes([1]))
        let up = try c.createMultipartUpload(k)
        _ = try c.uploadPart(k, upload: up, partNumber: 1, body: .bytes([1]))
        try c.completeMultipartUpload(k, uploadId: up.id, parts: [CompletedPart(partNumber: 1, etag: "\"e\"")])
        try c.abortMultipartUpload(k, uploadId: "u1")
        try c.copyObject(from: k, to: Array("k2".utf8))
        _ = try c.uploadPartCopy(k, uploadId: "u1", partNumber: 1, source: Array("k2".utf8), range: 0..<5)
        try c.deleteObject(k)
        try c.deleteObjects([k])
        _ = try c.restoreObject(k, days: 1, tier: "Bulk")
        return ["ListObjectsV2", "HeadObject", "GetObject", "GetObject(range)", "PutObject", "CreateMultipartUpload", "UploadPart",
                "CompleteMultipartUpload", "AbortMultipartUpload", "CopyObject", "UploadPartCopy", "DeleteObject", "DeleteObjects", "RestoreObject"]
    }

    func testNoPolicyAddsNothing() throws {
        let t = Recorder()
        _ = try everyRequest(client(t, RequestPolicy()))
        for r in t.requests {
            XCTAssertFalse(r.headers.contains { $0.0.hasPrefix("x-amz-server-side") || $0.0 == "x-amz-storage-class" || $0.0 == "x-amz-request-payer" || $0.0.contains("bucket-owner") }, r.url)
        }
    }

    func testRequesterPaysAndExpectedOwnerOnEveryRequest() throws {
        var p = RequestPolicy()
        p.requesterPays = true
        p.expectedBucketOwner = "111122223333"
        let t = Recorder()
        let names = try everyRequest(client(t, p))
        XCTAssertEqual(t.requests.count, names.count)
        for (i, name) in names.enumerated() {
            let h = t.headers(i)
            XCTAssertEqual(h["x-amz-request-payer"], "requester", name)
            XCTAssertEqual(h["x-amz-expected-bucket-owner"], "111122223333", name)
            XCTAssertEqual(h["x-amz-source-expected-bucket-owner"], ["CopyObject", "UploadPartCopy"].contains(name) ? "111122223333" : nil, name)
            // Signed, so that nobody between can drop them.
            let auth = h["authorization"] ?? ""
            XCTAssertTrue(auth.contains("x-amz-request-payer") && auth.contains("x-amz-expected-bucket-owner"), name)
        }
    }

    func testKMSAndStorageClassOnRequestsThatWriteAnObjectOnly() throws {
        var p = RequestPolicy()
        p.encryption = .kms(keyID: "arn:aws:kms:us-east-1:111122223333:key/k1", bucketKey: true)
        p.storageClass = "STANDARD_IA"
        let t = Recorder()
        let names = try everyRequest(client(t, p))
        for (i, name) in names.enumerated() {
            let h = t.headers(i)
            let writes = ["PutObject", "CreateMultipartUpload", "CopyObject"].contains(name)
            XCTAssertEqual(h["x-amz-server-side-encryption"], writes ? "aws:kms" : nil, name)
            XCTAssertEqual(h["x-amz-server-side-encryption-aws-kms-key-id"], writes ? "arn:aws:kms:us-east-1:111122223333:key/k1" : nil, name)
            XCTAssertEqual(h["x-amz-server-side-encryption-bucket-key-enabled"], writes ? "true" : nil, name)
            XCTAssertEqual(h["x-amz-storage-class"], writes ? "STANDARD_IA" : nil, name)
        }
    }

    func testSSES3WithoutKeyIdOrBucketKey() throws {
        var p = RequestPolicy()
        p.encryption = .s3
        let t = Recorder()
        try client(t, p).putObject(Array("k".utf8), body: .bytes([1]))
        XCTAssertEqual(t.headers(0)["x-amz-server-side-encryption"], "AES256")
        XCTAssertNil(t.headers(0)["x-amz-server-side-encryption-aws-kms-key-id"])
        XCTAssertNil(t.headers(0)["x-amz-server-side-encryption-bucket-key-enabled"])
    }

    func testCopyKeepsTheSourceClassOverTheMountsClass() throws {
        var p = RequestPolicy()
        p.storageClass = "STANDARD_IA"
        let t = Recorder()
        let c = client(t, p)
        try c.copyObject(from: Array("a".utf8), to: Array("b".utf8), storageClass: "GLACIER_IR")
        try c.copyObject(from: Array("a".utf8), to: Array("b".utf8), size: 10, storageClass: "ONEZONE_IA", partSize: 5, multipartAbove: 5)
        XCTAssertEqual(t.headers(0)["x-amz-storage-class"], "GLACIER_IR")
        XCTAssertEqual(t.headers(1)["x-amz-storage-class"], "ONEZONE_IA", "a multipart copy's upload is created in the source's class")
    }

    func testCustomerKeyOnEveryRequestThatTouchesObjectBytes() throws {
        var p = RequestPolicy()
        p.customerKey = Self.key
        let t = Recorder()
        let names = try everyRequest(client(t, p))
        let keyB64 = Crypto.base64(Array(repeating: 7, count: 32))
        let md5 = Crypto.base64(Crypto.md5(Array(repeating: 7, count: 32)))
        let needsKey: Set = ["HeadObject", "GetObject", "GetObject(range)", "PutObject", "CreateMultipartUpload", "UploadPart",
                             "CompleteMultipartUpload", "CopyObject", "UploadPartCopy"]
        for (i, name) in names.enumerated() {
            let h = t.headers(i)
            let carries = needsKey.contains(name)
            XCTAssertEqual(h["x-amz-server-side-encryption-customer-algorithm"], carries ? "AES256" : nil, name)
            XCTAssertEqual(h["x-amz-server-side-encryption-customer-key"], carries ? keyB64 : nil, name)
            XCTAssertEqual(h["x-amz-server-side-encryption-customer-key-md5"], carries ? md5 : nil, name)
            let copies = ["CopyObject", "UploadPartCopy"].contains(name)
            XCTAssertEqual(h["x-amz-copy-source-server-side-encryption-customer-algorithm"], copies ? "AES256" : nil, name)
            XCTAssertEqual(h["x-amz-copy-source-server-side-encryption-customer-key"], copies ? keyB64 : nil, name)
            XCTAssertEqual(h["x-amz-copy-source-server-side-encryption-customer-key-md5"], copies ? md5 : nil, name)
        }
    }

    func testCustomerKeyFileFormsAndItsDescriptionHidesTheKey() {
        let raw = [UInt8](repeating: 7, count: 32)
        XCTAssertEqual(CustomerKey(fileContents: raw), Self.key)
        XCTAssertEqual(CustomerKey(fileContents: Array((Crypto.base64(raw) + "\n").utf8)), Self.key)
        XCTAssertNil(CustomerKey(fileContents: Array(repeating: 7, count: 31)))
        XCTAssertNil(CustomerKey(fileContents: Array("not a key at all, but forty-four chars long!".utf8)))
        XCTAssertNil(CustomerKey(fileContents: Array((Crypto.base64(Array(repeating: 7, count: 24)) + "\n").utf8)), "base64 of 24 bytes is not an AES-256 key")
        XCTAssertFalse("\(Self.key)".contains(Crypto.base64(raw)))
        var p = RequestPolicy()
        p.customerKey = Self.key
        XCTAssertFalse("\(p)".contains(Crypto.base64(raw)), "a policy printed whole does not show the key either")
    }

    func testRestoreStatusHeader() {
        XCTAssertEqual(RestoreStatus.parse("ongoing-request=\"true\""), .ongoing)
        XCTAssertEqual(RestoreStatus.parse("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""), .restored(expiry: 1356048000))
        XCTAssertEqual(RestoreStatus.parse("ongoing-request=\"false\""), .restored(expiry: nil))
        // Header field names in any case (found by fuzz-http: its check had assumed lower case).
        XCTAssertEqual(RestoreStatus.parse("ongOing-request=\"false\", expiry-date=\"Fgoing-request=\"false\", e GMT\""), .restored(expiry: nil))
        XCTAssertEqual(RestoreStatus.parse("Ongoing-Request=\"true\""), .ongoing)
        XCTAssertEqual(RestoreStatus.parse("ongoing-request=\"false\", expiry-date=\"soon\""), .restored(expiry: nil))
        for junk in ["", "=", "ongoing-request", "ongoing-request=\"tru", "ongoing-request=maybe", "\"\"=\"\"", ",,,,", "expiry-date=\"x\""] {
            XCTAssertEqual(RestoreStatus.parse(junk), .none, junk)
        }
    }

    func testListingKeepsEachEntrysStorageClass() throws {
        let xml = "<ListBucketResult><Contents><Key>a</Key><Size>1</Size><LastModified>2026-01-01T00:00:00Z</LastModified><ETag>\"e\"</ETag><StorageClass>DEEP_ARCHIVE</StorageClass></Contents><Contents><Key>b</Key><Size>1</Size><LastModified>2026-01-01T00:00:00Z</LastModified><ETag>\"e\"</ETag></Contents></ListBucketResult>"
        let page = try XCTUnwrap(S3XML.parseListObjectsV2(Array(xml.utf8)))
        XCTAssertEqual(page.objects.map(\.storageClass), ["DEEP_ARCHIVE", nil])
    }

    func testHeadAnswerGivesClassAndRestore() throws {
        let info = try S3Client.objectInfo(["content-length": "3", "x-amz-storage-class": "GLACIER", "x-amz-restore": "ongoing-request=\"true\""], operation: "HeadObject")
        XCTAssertEqual(info.storageClass, "GLACIER")
        XCTAssertEqual(info.restore, .ongoing)
    }
}
