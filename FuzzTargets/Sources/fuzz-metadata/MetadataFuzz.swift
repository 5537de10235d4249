import FuzzSupport
@testable import S3
@testable import S3FSCore

/// The per-directory metadata index object (`DIR/.s3mount-meta`, any bytes another tool or mount
/// may have written), and the POSIX metadata an object's headers carry (x-amz-meta-mode, uid, gid,
/// mtime, ctime, atime, rdev, xattr), with the rest of a HeadObject answer.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMetadata(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = quietLogs
    let b = input(data, size)
    if let records = MetaIndexCodec.decode(b) {
        // What was read is written back as it was read (the writer puts local changes on top of it).
        let again = MetaIndexCodec.decode(MetaIndexCodec.encode(records))
        check(again == records, "the index does not read back as written")
    }
    // s3fs's x-amz-meta-xattr (percent-encoded JSON of base64 values), from any writer of the bucket.
    if let x = XattrCodec.decode(String(decoding: b, as: UTF8.self)) {
        check(XattrCodec.decode(XattrCodec.encode(x)) == x, "the xattrs do not read back as written")
    }
    let h = headerLines(b)
    var meta: [String: String] = [:]
    for (k, v) in h where k.hasPrefix("x-amz-meta-") { meta[String(k.dropFirst(11))] = v }
    let defaults = PosixMeta(mode: 0o100644, uid: 1000, gid: 1000)
    if let m = PosixMeta.from(headers: meta, defaults: defaults, type: 0o100000) {
        _ = m.headers(mtimeIfUnset: Timestamp(sec: 0))
        if let t = m.mtime { check(Timestamp(text: t.text) == t, "the mtime \(t) does not read back") }
    }
    // A size no object can have is a bad answer (thrown); any size given back is in 0...1 PiB.
    if let info = try? S3Client.objectInfo(h, operation: "HeadObject") {
        check((0...ObjectSize.maxListed).contains(info.size), "objectInfo gave the size \(info.size)")
    }
    return 0
}
