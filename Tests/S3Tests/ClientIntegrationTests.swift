import Foundation
import XCTest
@testable import S3

/// The real client against a real S3 implementation (moto_server on loopback).
final class ClientIntegrationTests: XCTestCase {
    static var moto: Helper?
    var client: S3Client!

    override class func setUp() { moto = Helper.moto() }
    override class func tearDown() { moto?.stop() }

    override func setUpWithError() throws {
        guard let moto = Self.moto else { throw XCTSkip("!!! moto_server could not start; integration tests skipped") }
        let bucket = "c-" + UUID().uuidString.lowercased().prefix(12)
        let creds = CredentialsProvider(source: StaticCredentialsSource(Credentials(accessKeyId: "testing", secretAccessKey: "testing", source: "test")))
        client = S3Client(config: S3Config(bucket: String(bucket), endpoint: moto.endpoint, region: "us-east-1", forcePathStyle: true),
                          credentials: creds, transport: CurlTransport())
        _ = try client.send("CreateBucket", method: "PUT", key: nil)
    }

    func k(_ s: String) -> [UInt8] { Array(s.utf8) }

    func testPutHeadGetAndRanges() throws {
        let body = Array((0..<100_000).map { UInt8($0 % 251) })
        let etag = try client.putObject(k("dir/file.bin"), body: .bytes(body))
        XCTAssertFalse(etag.isEmpty)
        let info = try client.headObject(k("dir/file.bin"))
        XCTAssertEqual(info.size, 100_000)
        XCTAssertEqual(info.etag, etag)
        XCTAssertGreaterThan(info.lastModified, 1_600_000_000)
        let (_, all) = try client.getObjectBytes(k("dir/file.bin"))
        XCTAssertEqual(all, body)
        let (rinfo, part) = try client.getObjectBytes(k("dir/file.bin"), range: 10..<20)
        XCTAssertEqual(part, Array(body[10..<20]))
        XCTAssertEqual(rinfo.size, 100_000, "total size from Content-Range")
        // Streaming: bytes arrive in chunks through the sink.
        var chunks = 0
        var streamed = [UInt8]()
        try client.getObject(k("dir/file.bin"), from: 50_000) { b in chunks += 1; streamed += b; return true }
        XCTAssertEqual(streamed, Array(body[50_000...]))
        XCTAssertGreaterThan(chunks, 0)
        // If-Match with a stale ETag fails with PreconditionFailed, mapped to ESTALE.
        XCTAssertThrowsError(try client.getObjectBytes(k("dir/file.bin"), ifMatch: "\"0000\"")) { e in
            XCTAssertEqual((e as? S3Error)?.kind, .preconditionFailed)
            XCTAssertEqual((e as? S3Error)?.errno, ESTALE)
        }
    }

    func testOddKeysRoundTripAsBytes() throws {
        let keys: [[UInt8]] = [k("a b+c@d%e.txt"), k("plus+sign"), k("a//b"), k("./dot"), k("../up"), k("x/../y"),
                               [0x63, 0x61, 0x66, 0xC3, 0xA9], [0x63, 0x61, 0x66, 0x65, 0xCC, 0x81], k("tilde~and=eq&amp;"),
                               k(String(repeating: "L", count: 300))]
        for (i, key) in keys.enumerated() { try client.putObject(key, body: .bytes([UInt8(i)])) }
        let page = try client.listObjectsV2(prefix: [], delimiter: nil)
        XCTAssertEqual(Set(page.objects.map { $0.key }), Set(keys))
        for (i, key) in keys.enumerated() {
            XCTAssertEqual(try client.getObjectBytes(key).1, [UInt8(i)], Names(key))
        }
    }

    func Names(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

    func testListDelimiterPagingAndStartAfter() throws {
        for n in ["a/1", "a/2", "b", "c/d/e", "f", "g", "h"] { try client.putObject(k(n), body: .bytes([])) }
        let top = try client.listObjectsV2(prefix: [], delimiter: "/")
        XCTAssertEqual(top.objects.map { Names($0.key) }, ["b", "f", "g", "h"])
        XCTAssertEqual(top.commonPrefixes.map(Names), ["a/", "c/"])
        var all: [String] = []
        var token: String? = nil
        var pages = 0
        repeat {
            let p = try client.listObjectsV2(prefix: [], delimiter: nil, continuationToken: token, maxKeys: 2)
            all += p.objects.map { Names($0.key) }
            token = p.isTruncated ? p.nextContinuationToken : nil
            pages += 1
        } while token != nil
        XCTAssertEqual(all, ["a/1", "a/2", "b", "c/d/e", "f", "g", "h"])
        XCTAssertEqual(pages, 4)
        let after = try client.listObjectsV2(prefix: [], delimiter: nil, startAfter: k("f"))
        XCTAssertEqual(after.objects.map { Names($0.key) }, ["g", "h"])
    }

    func testMultipartUploadFromFileAndAbort() throws {
        let part = 5 * 1024 * 1024
        let data = (0..<(2 * part + 1234)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let path = NSTemporaryDirectory() + "/s3mount-mpu-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: path, contents: Data(data))
        defer { unlink(path) }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        let id = try client.createMultipartUpload(k("mpu/big"))
        var parts: [CompletedPart] = []
        var off = 0
        var n = 1
        while off < data.count {
            let len = min(part, data.count - off)
            parts.append(try client.uploadPart(k("mpu/big"), upload: id, partNumber: n, body: .file(fd: fd, offset: Int64(off), length: Int64(len))))
            off += len
            n += 1
        }
        try client.completeMultipartUpload(k("mpu/big"), uploadId: id.id, parts: parts)
        XCTAssertEqual(try client.getObjectBytes(k("mpu/big")).1, data)
        // The upload was checksummed: the store's composite CRC-32 (the CRC of the parts' CRCs,
        // which moto computes from the bytes it received) is the one the parts we sent add up to.
        XCTAssertTrue(id.checksummed)
        let partCRCs = parts.flatMap { p -> [UInt8] in
            XCTAssertEqual(p.checksumCRC32, CRC32.base64(CRC32.of(.bytes(Array(data[(p.partNumber - 1) * part..<min(data.count, p.partNumber * part)])))!))
            return Array(Data(base64Encoded: p.checksumCRC32 ?? "") ?? Data())
        }
        let head = try client.send("HeadObject", method: "HEAD", key: k("mpu/big"), headers: [("x-amz-checksum-mode", "ENABLED")])
        // (S3 appends "-3", the part count; some moto versions do not.)
        XCTAssertEqual(head.headers["x-amz-checksum-crc32"]?.split(separator: "-").first.map(String.init), CRC32.base64(CRC32.of(.bytes(partCRCs))!))
        let id2 = try client.createMultipartUpload(k("mpu/aborted"))
        _ = try client.uploadPart(k("mpu/aborted"), upload: id2, partNumber: 1, body: .bytes([1, 2, 3]))
        try client.abortMultipartUpload(k("mpu/aborted"), uploadId: id2.id)
        XCTAssertThrowsError(try client.headObject(k("mpu/aborted")))
        // A single PUT straight from a file region, without reading it into memory first.
        try client.putObject(k("fromfile"), body: .file(fd: fd, offset: 100, length: 1000))
        XCTAssertEqual(try client.getObjectBytes(k("fromfile")).1, Array(data[100..<1100]))
    }

    func testCopyAndPartCopyAndDelete() throws {
        let data = (0..<(6 * 1024 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try client.putObject(k("src/obj"), body: .bytes(data))
        try client.copyObject(from: k("src/obj"), to: k("dst/copy"))
        XCTAssertEqual(try client.getObjectBytes(k("dst/copy")).1, data)
        // The path taken above 5 GiB (UploadPartCopy parts), exercised with a lower threshold.
        try client.copyObject(from: k("src/obj"), to: k("dst/partcopy"), size: Int64(data.count), partSize: 5 * 1024 * 1024, multipartAbove: 1024)
        XCTAssertEqual(try client.getObjectBytes(k("dst/partcopy")).1, data)
        try client.deleteObject(k("dst/copy"))
        XCTAssertThrowsError(try client.headObject(k("dst/copy"))) { e in XCTAssertEqual((e as? S3Error)?.errno, ENOENT) }
        for i in 0..<5 { try client.putObject(k("del/\(i)"), body: .bytes([])) }
        let failed = try client.deleteObjects((0..<5).map { k("del/\($0)") })
        XCTAssertTrue(failed.isEmpty)
        XCTAssertEqual(try client.listObjectsV2(prefix: k("del/"), delimiter: nil).objects.count, 0)
    }

    func testTypedErrorsAndCounting() throws {
        XCTAssertThrowsError(try client.getObjectBytes(k("missing"))) { e in
            let s = e as? S3Error
            XCTAssertEqual(s?.kind, .noSuchKey)
            XCTAssertEqual(s?.errno, ENOENT)
            XCTAssertEqual(s?.status, 404)
        }
        let other = S3Client(config: S3Config(bucket: "no-such-bucket-xyz", endpoint: client.config.endpoint, region: "us-east-1", forcePathStyle: true),
                             credentials: client.credentials, transport: client.transport)
        XCTAssertThrowsError(try other.listObjectsV2(prefix: [])) { e in XCTAssertEqual((e as? S3Error)?.kind, .noSuchBucket) }
        let snap = client.stats.snapshot()
        XCTAssertEqual(snap.requests["GetObject"]?["404"], 1)
        XCTAssertEqual(snap.requests["CreateBucket"]?["ok"], 1)
        XCTAssertEqual(snap.retries, 0, "4xx are never retried")
    }

    func testAnonymousRequestsCarryNoSignature() throws {
        _ = try client.send("PutObject", method: "PUT", key: k("public.txt"), headers: [("x-amz-acl", "public-read")], body: .bytes(Array("hi".utf8)))
        try client.putObject(k("private.txt"), body: .bytes(Array("no".utf8)))
        let anon = S3Client(config: client.config, credentials: CredentialsProvider(source: nil), transport: client.transport)
        XCTAssertEqual(try anon.getObjectBytes(k("public.txt")).1, Array("hi".utf8))
        XCTAssertThrowsError(try anon.getObjectBytes(k("private.txt"))) { e in XCTAssertEqual((e as? S3Error)?.errno, EACCES) }
    }
}
