import XCTest
@testable import S3

/// Vectors from the AWS SigV4 test suite and the examples in the S3 API documentation
/// ("Signature Calculations for the Authorization Header").
final class SigV4Tests: XCTestCase {
    let docCreds = Credentials(accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", source: "test")

    func signature(_ auth: String) -> String { String(auth.split(separator: "=").last!) }

    func testS3DocGetObjectWithRange() {
        let r = SigningRequest(method: "GET", encodedPath: "/test.txt", query: [], headers: [
            ("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", emptyPayloadSHA256), ("x-amz-date", "20130524T000000Z"),
        ], payloadHash: emptyPayloadSHA256)
        let auth = SigV4Signer(region: "us-east-1").authorization(r, amzDate: "20130524T000000Z", credentials: docCreds)
        XCTAssertEqual(auth, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    func testS3DocPutObject() {
        let payload = hexString(Crypto.sha256("Welcome to Amazon S3."))
        XCTAssertEqual(payload, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let r = SigningRequest(method: "PUT", encodedPath: "/" + URIEncoding.encode("test$file.text", keepSlash: true), query: [], headers: [
            ("Host", "examplebucket.s3.amazonaws.com"), ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-date", "20130524T000000Z"), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", payload),
        ], payloadHash: payload)
        let auth = SigV4Signer(region: "us-east-1").authorization(r, amzDate: "20130524T000000Z", credentials: docCreds)
        XCTAssertEqual(signature(auth), "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    func testS3DocGetBucketLifecycle() {
        let r = SigningRequest(method: "GET", encodedPath: "/", query: SigV4Signer.encodeQuery([("lifecycle", "")]), headers: [
            ("Host", "examplebucket.s3.amazonaws.com"), ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", emptyPayloadSHA256),
        ], payloadHash: emptyPayloadSHA256)
        let auth = SigV4Signer(region: "us-east-1").authorization(r, amzDate: "20130524T000000Z", credentials: docCreds)
        XCTAssertEqual(signature(auth), "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    func testS3DocListObjects() {
        let r = SigningRequest(method: "GET", encodedPath: "/", query: SigV4Signer.encodeQuery([("prefix", "J"), ("max-keys", "2")]), headers: [
            ("Host", "examplebucket.s3.amazonaws.com"), ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", emptyPayloadSHA256),
        ], payloadHash: emptyPayloadSHA256)
        let auth = SigV4Signer(region: "us-east-1").authorization(r, amzDate: "20130524T000000Z", credentials: docCreds)
        XCTAssertEqual(signature(auth), "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    /// aws-sig-v4-test-suite "get-vanilla" and "get-vanilla-query-order-key-case".
    func testSuiteGetVanilla() {
        let creds = Credentials(accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", source: "test")
        let signer = SigV4Signer(region: "us-east-1", service: "service")
        let r = SigningRequest(method: "GET", encodedPath: "/", query: [], headers: [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")], payloadHash: emptyPayloadSHA256)
        XCTAssertEqual(signature(signer.authorization(r, amzDate: "20150830T123600Z", credentials: creds)), "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        var r2 = r
        r2.query = SigV4Signer.encodeQuery([("Param2", "value2"), ("Param1", "value1")])
        XCTAssertEqual(signature(signer.authorization(r2, amzDate: "20150830T123600Z", credentials: creds)), "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
    }

    func testKeyEncoding() {
        XCTAssertEqual(URIEncoding.encode("a b+c@d%e/f~g.h_i-j", keepSlash: true), "a%20b%2Bc%40d%25e/f~g.h_i-j")
        XCTAssertEqual(URIEncoding.encode("a/b", keepSlash: false), "a%2Fb")
        XCTAssertEqual(URIEncoding.encode("//./../x", keepSlash: true), "//./../x")
        // NFC "é" (C3 A9) and NFD "e" + U+0301 (65 CC 81) stay distinct.
        XCTAssertEqual(URIEncoding.encode([0xC3, 0xA9]), "%C3%A9")
        XCTAssertEqual(URIEncoding.encode([0x65, 0xCC, 0x81]), "e%CC%81")
        XCTAssertEqual(URIEncoding.decode("e%CC%81"), [0x65, 0xCC, 0x81])
        XCTAssertEqual(URIEncoding.decodeForm("a+b%2Bc"), Array("a b+c".utf8))
    }

    func testCanonicalQuerySortsByEncodedName() {
        let q = SigV4Signer.canonicalQuery(SigV4Signer.encodeQuery([("prefix", "a b"), ("list-type", "2"), ("delimiter", "/")]))
        XCTAssertEqual(q, "delimiter=%2F&list-type=2&prefix=a%20b")
    }

    func testCredentialsDescriptionRedactsSecrets() {
        let c = Credentials(accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", sessionToken: "TOKENSECRET", source: "env")
        let d = "\(c)"
        XCTAssertFalse(d.contains("wJalr"))
        XCTAssertFalse(d.contains("TOKENSECRET"))
        XCTAssertFalse(d.contains("AKIAIOSFODNN7EXAMPLE"))
    }

    func testDates() {
        XCTAssertEqual(AmzDate.format(1369353600), "20130524T000000Z")
        XCTAssertEqual(AmzDate.parseISO8601("2013-05-24T00:00:00.000Z"), 1369353600)
        XCTAssertEqual(AmzDate.parseHTTPDate("Fri, 24 May 2013 00:00:00 GMT"), 1369353600)
    }
}
