import Foundation
import Glibc
import XCTest
@testable import S3

/// What reaches the S3 layer from outside (a store's answers, a queue's messages, files in shared
/// folders, credentials variables) at the limits: refused or bounded, never a trap or a hang.
final class TrustTests: XCTestCase {
    func listing(_ sizes: [String]) -> [UInt8] {
        let contents = sizes.enumerated().map { i, s in
            "<Contents><Key>k\(i)</Key><Size>\(s)</Size><LastModified>2026-12-01T00:00:00.000Z</LastModified><ETag>\"e\(i)\"</ETag></Contents>"
        }
        return Array("<?xml version=\"1.0\"?><ListBucketResult>\(contents.joined())<IsTruncated>false</IsTruncated></ListBucketResult>".utf8)
    }

    func testListedSizesOutsideWhatAnObjectCanHaveSkipTheirEntry() {
        let (page, log) = capturingS3Log {
            S3XML.parseListObjectsV2(listing(["7", "9223372036854775807", "99999999999999999999", "-1", "1125899906842625", "1125899906842624"]))
        }
        XCTAssertEqual(page?.objects.map { String(decoding: $0.key, as: UTF8.self) }, ["k0", "k5"])
        XCTAssertEqual(page?.objects.map(\.size), [7, 1 << 50])
        XCTAssertEqual(log.components(separatedBy: "no readable size").count - 1, 4, log)
    }

    func testAHeadOrGetGivingAnImpossibleSizeIsABadAnswer() throws {
        XCTAssertEqual(try S3Client.objectInfo(["content-length": "12"], operation: "HeadObject").size, 12)
        XCTAssertEqual(try S3Client.objectInfo(["content-length": "3", "content-range": "bytes 0-2/5497558138880"], operation: "GetObject").size, 5 << 40)
        for h in [["content-length": "9223372036854775807"], ["content-length": "-4"], ["content-length": "x"],
                  ["content-length": "3", "content-range": "bytes 0-2/18446744073709551615"]] {
            XCTAssertThrowsError(try S3Client.objectInfo(h, operation: "HeadObject"), "\(h)") { e in
                XCTAssertEqual((e as? S3Error)?.kind, .badResponse)
            }
        }
    }

    static func record(size: String, sequencer: String? = nil, key: String = "k") -> String {
        let seq = sequencer.map { ", \"sequencer\": \"\($0)\"" } ?? ""
        return """
        {"eventTime": "2026-12-03T10:00:00.000Z", "eventName": "ObjectCreated:Put",
         "s3": {"bucket": {"name": "bkt"}, "object": {"key": "\(key)", "size": \(size), "eTag": "e"\(seq)}}}
        """
    }

    func testAnEventWithAnImpossibleSizeOrAForgedSequencerIsSkippedAlone() {
        let body = "{\"Records\": [" + [Self.record(size: "9223372036854775807", key: "huge"), Self.record(size: "1e30", key: "float"),
                                        Self.record(size: "-1", key: "neg"), Self.record(size: "5", sequencer: String(repeating: "Z", count: 40), key: "zz"),
                                        Self.record(size: "5", sequencer: String(repeating: "F", count: 40), key: "long"),
                                        Self.record(size: "5", sequencer: "0055AED6DCD90281E5", key: "ok")].joined(separator: ",") + "]}"
        let (parsed, log) = capturingS3Log { S3EventParser.parse(body) }
        guard case .events(let evs) = parsed else { return XCTFail("\(parsed)") }
        XCTAssertEqual(evs.map { String(decoding: $0.key, as: UTF8.self) }, ["ok"])
        XCTAssertTrue(log.contains("\"huge\"") && log.contains("\"zz\"") && log.contains("\"long\""), log)
        // A real sequencer still orders as before; the forged ones could have outranked it.
        XCTAssertTrue(ObjectEvent.isSequencer("0055AED6DCD90281E5"))
        XCTAssertFalse(ObjectEvent.isSequencer(String(repeating: "Z", count: 40)))
    }

    func testAnSNSEnvelopeMustNameItsTopicAndComesOnce() throws {
        let inner = "{\"Records\": [" + Self.record(size: "5") + "]}"
        func envelope(_ fields: [String: String]) -> String {
            String(data: try! JSONSerialization.data(withJSONObject: fields.merging(["Type": "Notification"]) { a, _ in a }), encoding: .utf8)!
        }
        guard case .events(let evs) = S3EventParser.parse(envelope(["TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": inner])) else { return XCTFail() }
        XCTAssertEqual(evs.count, 1)
        for bad in [envelope(["Message": inner]), envelope(["TopicArn": "arn:aws:sqs:us-east-1:1:q", "Message": inner]),
                    envelope(["TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": envelope(["TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": inner])])] {
            guard case .malformed = S3EventParser.parse(bad) else { return XCTFail("accepted: \(bad)") }
        }
    }

    func testContainerCredentialsAreAskedOnlyOverHTTPSOrOfThisHostOrECSAndEKS() {
        for ok in ["http://169.254.170.2/v2/credentials/x", "http://169.254.170.23/v1/credentials", "http://[fd00:ec2::23]/c", "http://127.0.0.1:9911/creds",
                   "http://localhost:80/c", "https://creds.example.com/c", "http://[::1]:8080/c"] {
            XCTAssertNil(ContainerCredentialsSource.urlProblem(ok), ok)
        }
        for bad in ["http://attacker.example/c", "http://10.0.0.5/c", "file:///etc/shadow", "gopher://127.0.0.1/x", "http://user:pw@127.0.0.1/c",
                    "http://127.0.0.1.attacker.example/c", "http://169.254.169.254/latest"] {
            XCTAssertNotNil(ContainerCredentialsSource.urlProblem(bad), bad)
        }
        let env = ["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://attacker.example/creds", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "secret-token",
                   "AWS_EC2_METADATA_DISABLED": "true"]
        let transport = NoNetwork()
        XCTAssertThrowsError(try CredentialsChain.resolve(.init(), env: env, transport: transport)) { e in
            XCTAssertTrue("\(e)".contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"), "\(e)")
            XCTAssertFalse("\(e)".contains("secret-token"))
        }
        XCTAssertEqual(transport.requests.withLock { $0 }, [], "the token went nowhere")
    }

    func testTheTransportSpeaksHTTPAndHTTPSOnly() {
        CurlTransport.globalInitialize()
        let t = CurlTransport()
        for url in ["file:///etc/hostname", "dict://127.0.0.1:1/x", "gopher://127.0.0.1:1/x"] {
            XCTAssertThrowsError(try t.perform(HTTPRequest(method: "GET", url: url, timeoutMs: 2000)), url) { e in
                XCTAssertTrue("\(e)".lowercased().contains("protocol"), "\(url): \(e)")
            }
        }
    }

    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "s3mtrust-" + UUID().uuidString
        XCTAssertEqual(mkdir(d, 0o700), 0)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    func testFilesFromSharedFoldersNeverBlockAndAreBounded() throws {
        let d = tempDir()
        XCTAssertEqual(mkfifo(d + "/fifo", 0o600), 0)
        let start = monotonicSeconds()
        XCTAssertNil(readTextFile(d + "/fifo"), "a FIFO is no file to read")
        XCTAssertNil(OwnedFile.open(d + "/fifo", O_RDONLY))
        XCTAssertLessThan(monotonicSeconds() - start, 1, "no open blocked on the FIFO")
        // Sparse: a terabyte on paper, nothing on disk; refused without a read.
        let big = open(d + "/big", O_WRONLY | O_CREAT, 0o600)
        XCTAssertEqual(ftruncate(big, 1 << 40), 0)
        close(big)
        XCTAssertNil(readTextFile(d + "/big"))
        XCTAssertEqual(symlink(d + "/big", d + "/link"), 0)
        XCTAssertNil(OwnedFile.open(d + "/link", O_RDONLY), "links are not followed")
        let mine = OwnedFile.open(d + "/new", O_RDWR | O_CREAT)
        XCTAssertNotNil(mine)
        if let fd = mine { close(fd) }
        // Another user's file: not looked at, and O_TRUNC does not reach it.
        let other = d + "/other"
        XCTAssertTrue(FileManager.default.createFile(atPath: other, contents: Data("keep".utf8)))
        XCTAssertEqual(chown(other, 65534, 65534), 0)
        XCTAssertNil(OwnedFile.open(other, O_WRONLY | O_TRUNC))
        XCTAssertEqual(readTextFile(other), "keep")
    }

    func testPrivateFoldersAreThisUsersAndWrittenByNobodyElse() throws {
        XCTAssertNotNil(PrivateFolder.problem("/tmp", what: "spool directory"), "world-writable, even with the sticky bit")
        let d = tempDir()
        XCTAssertNil(PrivateFolder.problem(d, what: "spool directory"))
        XCTAssertEqual(chmod(d, 0o775), 0)
        XCTAssertTrue(PrivateFolder.problem(d, what: "spool directory")?.contains("can be written by other users") ?? false)
        XCTAssertEqual(chmod(d, 0o755), 0)
        XCTAssertEqual(chown(d, 65534, 65534), 0)
        XCTAssertTrue(PrivateFolder.problem(d, what: "spool directory")?.contains("belongs to uid 65534") ?? false)
        XCTAssertNotNil(PrivateFolder.make(d, what: "spool directory"), "a folder someone else made first is not taken over")
        XCTAssertEqual(symlink(NSTemporaryDirectory(), d + "-link"), 0)
        defer { unlink(d + "-link") }
        XCTAssertNotNil(PrivateFolder.problem(d + "-link", what: "cache directory"))
        XCTAssertNotNil(PrivateFolder.make(d + "-link", what: "cache directory"), "not followed")
        // Made fresh: 0700; an own folder left open to others is closed.
        let fresh = tempDir() + "/s3mount-0"
        XCTAssertNil(PrivateFolder.make(fresh, what: "spool directory"))
        var st = stat()
        XCTAssertEqual(stat(fresh, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o700)
        XCTAssertEqual(chmod(fresh, 0o755), 0)
        XCTAssertNil(PrivateFolder.make(fresh, what: "spool directory"))
        XCTAssertEqual(stat(fresh, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o700)
    }
}

/// A transport that records what it was asked and answers nothing.
final class NoNetwork: HTTPTransport, @unchecked Sendable {
    let requests = Locked<[String]>([])
    func perform(_ request: HTTPRequest, sink: BodySink?) throws -> HTTPResponse {
        requests.withLock { $0.append(request.url) }
        throw TransportError(curlCode: 7, message: "no network in this test")
    }
}

/// The log of `body` (warnings provoked on purpose are asserted, not printed).
func capturingS3Log<T>(_ body: () throws -> T) rethrows -> (T, String) {
    guard let file = tmpfile() else { fatalError("tmpfile") }
    defer { fclose(file) }
    Log.shared.setOutput(fd: fileno(file))
    let result: T
    do {
        defer { Log.shared.setOutput(fd: 2) }
        result = try body()
    }
    fflush(file)
    rewind(file)
    var text = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, file)
        if n <= 0 { break }
        text += buf[0..<n]
    }
    return (result, String(decoding: text, as: UTF8.self))
}
