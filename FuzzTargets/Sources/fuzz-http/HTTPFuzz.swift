import FuzzSupport
@testable import S3
@testable import S3FSCore

/// Small text formats from the endpoint, a queue or the command line: Last-Modified and ISO 8601
/// dates, endpoint and queue URLs, percent-encoded keys, hex, event sequencers, timestamps.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = quietLogs
    let b = input(data, size)
    let s = String(decoding: b, as: UTF8.self)
    if let t = AmzDate.parseISO8601(s) { _ = Timestamp(seconds: t) }
    if let t = AmzDate.parseHTTPDate(s) { _ = Timestamp(seconds: t) }
    if S3Client.endpointProblem(s) == nil { check(S3Client.parseEndpoint(s) != nil, "an endpoint accepted but not split: \(s)") }
    _ = SQSClient.urlProblem(s)
    _ = SQSClient.region(ofQueueURL: s)
    _ = URIEncoding.decode(s)
    let listed: [UInt8] = URIEncoding.decodeForm(s)   // a listing's keys (lenient)
    let event: [UInt8]? = URIEncoding.decodeForm(s)   // an event's key (strict)
    if let event { check(event == listed, "an event key and a listed key decode differently: \(s)") }
    if let b = bytesOfHex(s) { check(hexString(b) == s.lowercased(), "hex \(s) read as \(b)") }
    _ = FileReader.md5OfETag(s)
    _ = Timestamp(text: s)
    _ = MetaIndexCodec.unpercent(s)
    let half = s.split(separator: " ", maxSplits: 1).map(String.init)
    if half.count == 2 { _ = ObjectEvent.sequencer(half[0], isAfter: half[1]) }
    _ = Log.escapingControls(s)
    // A versions listing's continuation token reads back as written.
    if let t = VersionsToken(s) { check(VersionsToken(t.text) == t, "a versions token \(s)") }
    // x-amz-restore: a restored copy is claimed only by an answer that says ongoing-request (names in any case).
    if RestoreStatus.parse(s) != .none { check(s.lowercased().contains("ongoing-request"), "a restore status from \(s)") }
    // The SSE-C key file: a key is exactly 32 bytes, and its description never holds it.
    if let k = CustomerKey(fileContents: b) { check(!k.description.contains(k.keyBase64), "a key in its description") }
    return 0
}
