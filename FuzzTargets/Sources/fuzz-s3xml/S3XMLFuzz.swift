import FuzzSupport
@testable import S3

/// ListObjectsV2 and ListObjectVersions pages, error bodies (S3, STS), STS credentials and DeleteObjects results: every
/// XML document the client reads from the endpoint.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzS3XML(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = quietLogs
    let b = input(data, size)
    if let page = S3XML.parseListObjectsV2(b) {
        for o in page.objects {
            // What the parser hands on is a real size and date, never a negative size or NaN.
            check(o.size >= 0, "a listed size of \(o.size)")
            check(o.lastModified.isFinite, "a listed date of \(o.lastModified)")
            // The class is kept per entry: bounded, never empty.
            if let c = o.storageClass { check(!c.isEmpty && c.utf8.count <= 64, "a listed storage class of \(c.utf8.count) bytes") }
        }
        _ = page.lastListed
    }
    // One more parser per input, by its length: FoundationXML leaks a little on every document
    // it cannot parse (an error message it keeps), and five parses per input reach libFuzzer's
    // memory limit in a few minutes.
    switch b.count % 5 {
    case 4:
        // ListObjectVersions (--as-of): real sizes and dates, and a choice that picks each key once.
        if let versions = S3XML.parseListObjectVersions(b) {
            for v in versions.versions { check(v.size >= 0 && v.lastModified.isFinite && !v.versionId.isEmpty, "a version \(v)") }
            let chosen = versions.asOf(2e9, decided: nil).objects.map { $0.0.key }
            check(Set(chosen).count == chosen.count, "a key chosen twice")
        }
    case 0:
        let err = S3XML.parseError(b)
        for status in [301, 403, 404, 500, 503] {
            _ = S3Error.from(status: status, body: err, operation: "GetObject", headers: [:]).description
        }
    case 1: _ = S3XML.firstValue(b, "Code")
    case 2: if let c = S3XML.parseSTSCredentials(b) { _ = c.description }
    default: _ = S3XML.parseDeleteErrors(b)
    }
    return 0
}
