import XCTest
@testable import S3

/// Retry policy, with a scripted transport standing in for the network.
final class RetryTests: XCTestCase {
    final class Scripted: HTTPTransport, @unchecked Sendable {
        var replies: [Result<HTTPResponse, TransportError>]
        var calls = 0
        var lastHeaders: [(String, String)] = []
        init(_ r: [Result<HTTPResponse, TransportError>]) { replies = r }
        func perform(_ request: HTTPRequest, sink: BodySink?) throws -> HTTPResponse {
            calls += 1
            lastHeaders = request.headers
            let r = replies.isEmpty ? .success(HTTPResponse(status: 200, headers: [:], body: [], bytesReceived: 0)) : replies.removeFirst()
            return try r.get()
        }
    }

    static func error(_ status: Int, _ code: String) -> Result<HTTPResponse, TransportError> {
        .success(HTTPResponse(status: status, headers: [:], body: Array("<Error><Code>\(code)</Code><Message>m</Message></Error>".utf8), bytesReceived: 0))
    }

    func client(_ t: Scripted, attempts: Int = 4) -> S3Client {
        S3Client(config: S3Config(bucket: "b", endpoint: "http://127.0.0.1:9", region: "us-east-1", forcePathStyle: true, maxAttempts: attempts),
                 credentials: CredentialsProvider(source: StaticCredentialsSource(Credentials(accessKeyId: "AKIDSECRETLESS", secretAccessKey: "topsecret", sessionToken: "sess", source: "t"))),
                 transport: t)
    }

    func testRetriesThrottlingServerErrorsAndResets() throws {
        let t = Scripted([Self.error(503, "SlowDown"), Self.error(500, "InternalError"),
                          .failure(TransportError(curlCode: 56, message: "Connection reset by peer"))])
        let c = client(t)
        _ = try c.send("GetObject", method: "GET", key: Array("k".utf8))
        XCTAssertEqual(t.calls, 4)
        XCTAssertEqual(c.stats.snapshot().retries, 3)
        XCTAssertEqual(c.stats.snapshot().requests["GetObject"]?["5xx"], 2)
        XCTAssertEqual(c.stats.snapshot().requests["GetObject"]?["error"], 1)
        XCTAssertEqual(c.stats.snapshot().requests["GetObject"]?["ok"], 1)
    }

    func testNeverRetriesOtherClientErrors() {
        for (status, code, kind) in [(403, "AccessDenied", S3Error.Kind.accessDenied), (404, "NoSuchKey", .noSuchKey),
                                     (403, "SignatureDoesNotMatch", .signatureDoesNotMatch), (400, "InvalidArgument", .clientError)] {
            let t = Scripted([Self.error(status, code)])
            XCTAssertThrowsError(try client(t).send("GetObject", method: "GET", key: [0x6B])) { e in
                XCTAssertEqual((e as? S3Error)?.kind, kind)
            }
            XCTAssertEqual(t.calls, 1, code)
        }
    }

    func testGivesUpAfterMaxAttempts() {
        let t = Scripted(Array(repeating: Self.error(503, "SlowDown"), count: 10))
        XCTAssertThrowsError(try client(t, attempts: 3).send("PutObject", method: "PUT", key: [0x6B])) { e in
            XCTAssertEqual((e as? S3Error)?.errno, EIO, "never EAGAIN: a close cannot be tried again")
        }
        XCTAssertEqual(t.calls, 3)
    }

    func testSessionTokenSentAndSecretNeverInHeaders() throws {
        let t = Scripted([])
        _ = try client(t).send("HeadObject", method: "HEAD", key: [0x6B])
        XCTAssertTrue(t.lastHeaders.contains { $0.0 == "x-amz-security-token" && $0.1 == "sess" })
        XCTAssertFalse(t.lastHeaders.contains { $0.1.contains("topsecret") })
        let auth = t.lastHeaders.first { $0.0 == "Authorization" }?.1 ?? ""
        XCTAssertTrue(auth.contains("x-amz-security-token"), "the token is signed")
    }

    func testErrnoMapping() {
        let m: [(String, Int, Int32)] = [("NoSuchKey", 404, ENOENT), ("AccessDenied", 403, EACCES), ("SlowDown", 503, EIO),
                                         ("InternalError", 500, EIO), ("EntityTooLarge", 400, EFBIG), ("PreconditionFailed", 412, ESTALE)]
        for (code, status, errno) in m {
            XCTAssertEqual(S3Error.from(status: status, body: S3ErrorBody(code: code, message: "", region: nil), operation: "X", headers: [:]).errno, errno, code)
        }
    }

    func testMalformedListingIsAnErrorNotACrash() {
        let t = Scripted([.success(HTTPResponse(status: 200, headers: [:], body: Array("<ListBucketResult><Contents><Key>a".utf8), bytesReceived: 0))])
        XCTAssertThrowsError(try client(t).listObjectsV2(prefix: [])) { e in XCTAssertEqual((e as? S3Error)?.kind, .badResponse) }
    }
}
