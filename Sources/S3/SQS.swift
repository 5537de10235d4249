import Foundation
import Glibc

/// One message taken from an SQS queue: its body, and the handle that deletes it.
public struct QueueMessage: Sendable {
    public var id: String
    public var body: String
    public var receiptHandle: String
    /// How often SQS has handed this message out (1 the first time).
    public var receiveCount: Int
    public init(id: String, body: String, receiptHandle: String, receiveCount: Int = 1) {
        self.id = id
        self.body = body
        self.receiptHandle = receiptHandle
        self.receiveCount = receiveCount
    }
}

/// What the notification poller needs of a queue (an SQS client, or a queue in memory in tests).
public protocol EventQueue: Sendable {
    /// Waits up to `waitSeconds` for up to 10 messages (SQS long polling).
    func receive(waitSeconds: Int) throws -> [QueueMessage]
    /// Deletes messages once applied; returns the receipt handles SQS refused to delete.
    func delete(_ receiptHandles: [String]) throws -> [String]
    /// Sends a message to the queue itself (the mount's probes).
    func send(_ body: String) throws
    /// Messages waiting in the queue, as the queue estimates it (nil: it cannot tell).
    func backlog() throws -> Int?
}

public struct QueueCannotSend: Error, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String = "this queue takes no messages from its reader") { self.reason = reason }
    public var description: String { reason }
}

extension EventQueue {
    public func send(_ body: String) throws { throw QueueCannotSend() }
    public func backlog() throws -> Int? { nil }
}

public struct SQSError: Error, CustomStringConvertible, Sendable {
    public var status: Int
    public var code: String
    public var message: String
    public var description: String { status > 0 ? "\(code) (HTTP \(status)): \(message)" : "\(code): \(message)" }
}

/// A minimal SQS client for one queue (AWS JSON 1.0 protocol, SigV4 for the `sqs` service, the
/// mount's credentials chain and curl pool): ReceiveMessage with long polling and
/// DeleteMessageBatch, the two calls the notification poller makes.
public final class SQSClient: EventQueue, @unchecked Sendable {
    public let queueURL: String
    public let region: String
    private let endpoint: (scheme: String, host: String)
    private let credentials: CredentialsProvider
    private let transport: HTTPTransport

    /// Why `url` cannot be a queue URL, or nil: http(s)://host[:port]/ACCOUNT/NAME, checked as an
    /// S3 endpoint is (no query, fragment or credentials), with that path.
    public static func urlProblem(_ url: String) -> String? {
        if let why = S3Client.endpointProblem(url) {
            return "\(why) (expected http(s)://HOST/ACCOUNT/QUEUE, the queue's URL as `aws sqs get-queue-url` prints it)"
        }
        let path = S3Client.parseEndpoint(url)!.basePath
        if path.split(separator: "/").count != 2 { return "expected the path /ACCOUNT/QUEUE, got \"\(path)\"" }
        return nil
    }

    /// The region an AWS queue URL names (sqs.REGION.amazonaws.com, or the legacy
    /// REGION.queue.amazonaws.com); nil for other hosts.
    public static func region(ofQueueURL url: String) -> String? {
        guard let host = S3Client.parseEndpoint(url)?.host.lowercased() else { return nil }
        let labels = host.split(separator: ".").map(String.init)
        if labels.count >= 4, labels[0] == "sqs", host.contains(".amazonaws.com") { return labels[1] }
        if labels.count >= 4, labels[1] == "queue", host.contains(".amazonaws.com") { return labels[0] }
        return nil
    }

    /// `region`: the queue's, when its URL does not say (a custom endpoint).
    public init(queueURL: String, region: String, credentials: CredentialsProvider, transport: HTTPTransport) throws {
        if let why = Self.urlProblem(queueURL) { throw SQSError(status: 0, code: "InvalidQueueURL", message: why) }
        self.queueURL = queueURL
        let parts = S3Client.parseEndpoint(queueURL)!
        self.endpoint = (parts.scheme, parts.host)
        self.region = Self.region(ofQueueURL: queueURL) ?? region
        self.credentials = credentials
        self.transport = transport
    }

    /// One call: POST / with the target's JSON body, signed. `waitSeconds`: how long SQS may hold it.
    func call(_ target: String, _ body: [String: Any], waitSeconds: Int = 0) throws -> [String: Any] {
        let payload = try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
        let bytes = [UInt8](payload)
        let hash = hexString(Crypto.sha256(bytes))
        let amzDate = AmzDate.now()
        var headers: [(String, String)] = [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("X-Amz-Target", "AmazonSQS.\(target)"),
            ("x-amz-date", amzDate),
        ]
        let creds: Credentials?
        do { creds = try credentials.credentials() } catch {
            throw SQSError(status: 0, code: "NoCredentials", message: "\(error)")
        }
        if let c = creds {
            if let tok = c.sessionToken { headers.append(("x-amz-security-token", tok)) }
            let sreq = SigningRequest(method: "POST", encodedPath: "/", query: [], headers: headers + [("host", endpoint.host)], payloadHash: hash)
            headers.append(("Authorization", SigV4Signer(region: region, service: "sqs").authorization(sreq, amzDate: amzDate, credentials: c)))
        }
        var request = HTTPRequest(method: "POST", url: "\(endpoint.scheme)://\(endpoint.host)/", headers: headers, body: .bytes(bytes),
                                  timeoutMs: (waitSeconds + 15) * 1000)
        // A long poll is quiet until a message comes: the transport's stall limit must not end it.
        request.stallSeconds = waitSeconds + 10
        let resp: HTTPResponse
        do { resp = try transport.perform(request) } catch let e as TransportError {
            throw SQSError(status: 0, code: "Unreachable", message: e.description)
        }
        let json = (try? JSONSerialization.jsonObject(with: Data(resp.body))) as? [String: Any]
        guard (200..<300).contains(resp.status) else {
            // AWS JSON errors: {"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "..."}.
            let type = (json?["__type"] as? String).map { String($0.split(separator: "#").last ?? "") } ?? "HTTP\(resp.status)"
            let message = (json?["message"] as? String) ?? (json?["Message"] as? String)
                ?? String(decoding: resp.body.prefix(200), as: UTF8.self)
            throw SQSError(status: resp.status, code: type, message: message)
        }
        guard let json else { throw SQSError(status: resp.status, code: "BadResponse", message: "the answer to \(target) is not JSON") }
        return json
    }

    public func receive(waitSeconds: Int) throws -> [QueueMessage] {
        let r = try call("ReceiveMessage", ["QueueUrl": queueURL, "MaxNumberOfMessages": 10, "WaitTimeSeconds": waitSeconds,
                                             "AttributeNames": ["ApproximateReceiveCount"]], waitSeconds: waitSeconds)
        guard let list = r["Messages"] as? [[String: Any]] else { return [] }
        return list.compactMap { m in
            guard let body = m["Body"] as? String, let handle = m["ReceiptHandle"] as? String else { return nil }
            let count = ((m["Attributes"] as? [String: Any])?["ApproximateReceiveCount"] as? String).flatMap { Int($0) } ?? 1
            return QueueMessage(id: m["MessageId"] as? String ?? "", body: body, receiptHandle: handle, receiveCount: count)
        }
    }

    public func send(_ body: String) throws {
        _ = try call("SendMessage", ["QueueUrl": queueURL, "MessageBody": body])
    }

    public func backlog() throws -> Int? {
        let r = try call("GetQueueAttributes", ["QueueUrl": queueURL, "AttributeNames": ["ApproximateNumberOfMessages"]])
        return ((r["Attributes"] as? [String: Any])?["ApproximateNumberOfMessages"] as? String).flatMap { Int($0) }
    }

    public func delete(_ receiptHandles: [String]) throws -> [String] {
        var refused: [String] = []
        var i = 0
        while i < receiptHandles.count {
            let batch = Array(receiptHandles[i..<min(receiptHandles.count, i + 10)])
            let entries = batch.enumerated().map { ["Id": "m\($0.offset)", "ReceiptHandle": $0.element] }
            let r = try call("DeleteMessageBatch", ["QueueUrl": queueURL, "Entries": entries])
            for f in (r["Failed"] as? [[String: Any]]) ?? [] {
                // The Ids are ours ("m0".."m9"); another answer ("m-1") must not index outside the batch.
                if let id = f["Id"] as? String, let n = Int(id.dropFirst()), batch.indices.contains(n) { refused.append(batch[n]) }
            }
            i += 10
        }
        return refused
    }
}
