import XCTest
@testable import S3

final class AMQPTests: XCTestCase {
    func testQueueURLsParse() throws {
        func ok(_ url: String) throws -> AMQPEndpoint { try AMQPEndpoint.parse(url).get() }
        XCTAssertEqual(try ok("amqp://s3m@rabbit.example/%2F?queue=host1"),
                       AMQPEndpoint(tls: false, user: "s3m", host: "rabbit.example", port: 5672, vhost: "/", queue: "host1"))
        XCTAssertEqual(try ok("amqps://s3m@rabbit.example:5999/prod%2Fa?queue=q%20one"),
                       AMQPEndpoint(tls: true, user: "s3m", host: "rabbit.example", port: 5999, vhost: "prod/a", queue: "q one"))
        // No path: the default vhost, as the AMQP URI spec says; amqps' port is 5671.
        XCTAssertEqual(try ok("AMQPS://a%40b@[::1]?queue=q"), AMQPEndpoint(tls: true, user: "a@b", host: "::1", port: 5671, vhost: "/", queue: "q"))
        XCTAssertEqual(try ok("amqp://u@127.0.0.1:1/v?queue=q").display, "amqp://u@127.0.0.1:1/v?queue=q")
        XCTAssertEqual(try ok("amqp://u@h/%2F?queue=a.b").display, "amqp://u@h:5672/%2F?queue=a.b")
        XCTAssertTrue(AMQPEndpoint.isAMQP("amqp://x") && AMQPEndpoint.isAMQP("AMQPS://x") && !AMQPEndpoint.isAMQP("https://sqs.x/1/q"))
    }

    func testBadQueueURLsSayWhy() {
        func why(_ url: String) -> String {
            switch AMQPEndpoint.parse(url) {
            case .success(let e): return "accepted \(e)"
            case .failure(let e): return e.message
            }
        }
        XCTAssertTrue(why("amqp://u:secret@h/%2F?queue=q").contains("holds a password"), why("amqp://u:secret@h/%2F?queue=q"))
        XCTAssertFalse(why("amqp://u:secret@h/%2F?queue=q").contains("secret"))
        XCTAssertTrue(why("amqp://h/%2F?queue=q").contains("no user"))
        XCTAssertTrue(why("amqp://u@h/%2F").contains("queue is missing"))
        XCTAssertTrue(why("amqp://u@h/%2F?queue=").contains("queue name is empty"))
        XCTAssertTrue(why("amqp://u@h/%2F?queue=a&queue=b").contains("twice"))
        XCTAssertTrue(why("amqp://u@h/%2F?queue=a&x=1").contains("unknown query parameter"))
        XCTAssertTrue(why("amqp://u@h:0/?queue=a").contains("port"))
        XCTAssertTrue(why("amqp://u@h:65536/%2F?queue=a").contains("port"))
        XCTAssertTrue(why("amqp://u@h:12x/%2F?queue=a").contains("port"))
        XCTAssertTrue(why("amqp://u@h/a/b?queue=a").contains("one path segment"))
        XCTAssertTrue(why("amqp://u@h/?queue=a").contains("vhost is empty"))
        XCTAssertTrue(why("amqp://u@h/%ZZ?queue=a").contains("badly percent-encoded"))
        XCTAssertTrue(why("amqp://u@h/%0A?queue=a").contains("badly percent-encoded"))
        XCTAssertTrue(why("amqp://u@/%2F?queue=a").contains("host"))
        XCTAssertTrue(why("amqp://u@h/%2F?queue=a#f").contains("fragment"))
        XCTAssertTrue(why("http://u@h/%2F?queue=a").contains("scheme"))
        XCTAssertTrue(why("amqp://u@h/%2F?queue=a\"b").contains("U+22 must be percent-encoded"))
        XCTAssertTrue(why("amqp://u@h/%2F?queue=a b").contains("U+20 must be percent-encoded"))
        XCTAssertTrue(why("amqp://u@h/%2F?queue=é").contains("percent-encoded"))
        XCTAssertEqual(try? AMQPEndpoint.parse("amqp://u@h/%2F?queue=a%22b").get().queue, "a\"b")
        XCTAssertTrue(why("amqp://u@h/%2F?queue=" + String(repeating: "q", count: 256)).contains("255"))
    }

    /// What Ceph RGW 16 published to RabbitMQ for a put and a delete of "dir/a+b %41 é.txt" (the
    /// key as it is), then a put of "x1" a moment later.
    static let rgwPut = #"{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3","awsRegion":"","eventTime":"2026-12-08T00:25:41.611265Z","eventName":"ObjectCreated:Put","userIdentity":{"principalId":"s3mount"},"requestParameters":{"sourceIPAddress":""},"responseElements":{"x-amz-request-id":"caf50f32.4119.17804172503582042420","x-amz-id-2":"1017-default-default"},"s3":{"s3SchemaVersion":"1.0","configurationId":"s3mount","bucket":{"name":"nb1","ownerIdentity":{"principalId":"s3mount"},"arn":"arn:aws:s3:::nb1","id":"caf50f32.4121.1"},"object":{"key":"dir/a+b %41 é.txt","size":5,"eTag":"5d41402abc4b2a76b9719d911017c592","versionId":"","sequencer":"854E176B274D8724","metadata":[{"key":"x-amz-date","val":"20261208T002540Z"}],"tags":[]}},"eventId":"1796689541.612846.5d41402abc4b2a76b9719d911017c592","opaqueData":""}]}"#
    static let rgwDelete = #"{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3","awsRegion":"","eventTime":"2026-12-08T00:25:41.617394Z","eventName":"ObjectRemoved:Delete","userIdentity":{"principalId":"s3mount"},"requestParameters":{"sourceIPAddress":""},"responseElements":{"x-amz-request-id":"caf50f32.4119.16970062752383911987","x-amz-id-2":"1017-default-default"},"s3":{"s3SchemaVersion":"1.0","configurationId":"s3mount","bucket":{"name":"nb1","ownerIdentity":{"principalId":"s3mount"},"arn":"arn:aws:s3:::nb1","id":"caf50f32.4121.1"},"object":{"key":"dir/a+b %41 é.txt","size":5,"eTag":"5d41402abc4b2a76b9719d911017c592","versionId":"","sequencer":"854E176B46B9CC24","metadata":[],"tags":[]}},"eventId":"1796689541.617396.5d41402abc4b2a76b9719d911017c592","opaqueData":""}]}"#

    func testRGWBodiesParse() throws {
        guard case .events(let put) = S3EventParser.parse(Self.rgwPut), put.count == 1 else { return XCTFail("\(S3EventParser.parse(Self.rgwPut))") }
        let p = put[0]
        XCTAssertEqual(p.bucket, "nb1")
        XCTAssertEqual(String(decoding: p.key, as: UTF8.self), "dir/a+b %41 é.txt")
        XCTAssertEqual(p.change, .created(size: 5, etag: "\"5d41402abc4b2a76b9719d911017c592\""))
        XCTAssertEqual(p.name, "ObjectCreated:Put")
        XCTAssertEqual(p.time, 1796689541.611265, accuracy: 0.000001)
        // 0x6B174E85 s, then 0x24874D27 ns: big-endian, so that it orders as time does.
        XCTAssertEqual(p.sequencer, "6B174E8524874D27")
        guard case .events(let del) = S3EventParser.parse(Self.rgwDelete), del.count == 1 else { return XCTFail() }
        XCTAssertEqual(del[0].change, .removed)
        XCTAssertEqual(del[0].name, "ObjectRemoved:Delete")
        XCTAssertTrue(ObjectEvent.sequencer(del[0].sequencer!, isAfter: p.sequencer!))
        // A second later (0x6B174F00 s after 0x6B174EFF s): as RGW writes them the later one would
        // not come after, its first byte being the seconds' lowest.
        XCTAssertFalse(ObjectEvent.sequencer("004F176B00000000", isAfter: "FF4E176B00000000"))
        XCTAssertTrue(ObjectEvent.sequencer(S3EventParser.cephSequencer("004F176B00000000")!, isAfter: S3EventParser.cephSequencer("FF4E176B00000000")!))
        // Within a second, by the nanoseconds (0x100 ns after 0xFF ns).
        XCTAssertTrue(ObjectEvent.sequencer(S3EventParser.cephSequencer("004F176B00010000")!, isAfter: S3EventParser.cephSequencer("004F176BFF000000")!))
    }

    func testRGWVariants() {
        // "s3:" before the name, as the configuration writes it; a sequencer of another form is dropped.
        let body = Self.rgwPut.replacingOccurrences(of: "\"ObjectCreated:Put\"", with: "\"s3:ObjectCreated:Copy\"")
            .replacingOccurrences(of: "854E176B274D8724", with: "0055AED6DCD90281E5")
        guard case .events(let evs) = S3EventParser.parse(body), evs.count == 1 else { return XCTFail() }
        XCTAssertEqual(evs[0].name, "ObjectCreated:Copy")
        XCTAssertNil(evs[0].sequencer)
        // Nanoseconds past a second: not a time.
        XCTAssertNil(S3EventParser.cephSequencer("854E176BFFFFFFFF"))
        XCTAssertNil(S3EventParser.cephSequencer("854E176B274D87"))
        // S3's own records still have their keys form-decoded.
        let aws = Self.rgwPut.replacingOccurrences(of: "\"ceph:s3\"", with: "\"aws:s3\"")
        guard case .events(let a) = S3EventParser.parse(aws) else { return XCTFail() }
        XCTAssertEqual(String(decoding: a[0].key, as: UTF8.self), "dir/a b A é.txt")
    }

    /// Nothing listens there: the queue throws (the listener then falls back to the TTL), and
    /// again on the next call, without hanging.
    func testAnUnreachableBrokerThrowsPromptly() throws {
        let q = AMQPQueue(endpoint: AMQPEndpoint(tls: false, user: "u", host: "127.0.0.1", port: 1, vhost: "/", queue: "q"), password: "pw", timeoutSeconds: 2)
        let start = monotonicSeconds()
        XCTAssertThrowsError(try q.receive(waitSeconds: 5)) { e in
            XCTAssertTrue("\(e)".contains("connecting to 127.0.0.1:1"), "\(e)")
            XCTAssertFalse("\(e)".contains("pw"), "\(e)")
        }
        XCTAssertThrowsError(try q.receive(waitSeconds: 0))
        XCTAssertLessThan(monotonicSeconds() - start, 5)
        // Acks of deliveries no connection holds are dropped.
        XCTAssertEqual(try q.delete(["1.1", "junk"]), [])
    }
}
