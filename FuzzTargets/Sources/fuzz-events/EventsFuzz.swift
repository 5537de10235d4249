import FuzzSupport
@testable import S3

/// S3 event notifications (S3's JSON, or inside an SNS envelope) and the SQS answers the poller
/// reads (ReceiveMessage, DeleteMessageBatch, JSON errors), through the real client with a
/// transport that answers the input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEvents(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = quietLogs
    let b = input(data, size)
    let text = String(decoding: b, as: UTF8.self)
    if case .events(let events) = S3EventParser.parse(text) {
        for e in events {
            if case .created(let size, _) = e.change { check(size >= 0, "an event size of \(size)") }
            check(e.time.isFinite, "an event time of \(e.time)")
            if let s = e.sequencer { _ = ObjectEvent.sequencer(s, isAfter: "0055AED6DCD90281E5") }
        }
    }
    // The same bytes as the queue's answer, with a success and with an error status.
    for status in [200, 400] {
        let transport = CannedTransport(status: status, body: b)
        guard let sqs = try? SQSClient(queueURL: "https://sqs.us-east-1.amazonaws.com/123456789012/q", region: "us-east-1",
                                       credentials: CredentialsProvider(source: nil), transport: transport) else { continue }
        if let messages = try? sqs.receive(waitSeconds: 0) {
            for m in messages { _ = S3EventParser.parse(m.body) }
        }
        _ = try? sqs.delete((0..<12).map { "handle-\($0)" })
    }
    return 0
}
