import FuzzSupport
@testable import S3
@testable import S3FSCore

/// The multipart upload journal and the write-back journal an earlier run left in the spool
/// directory (read at mount to abort that run's uploads, and to send what it owed), and the data cache's map files (read at mount from the cache folder).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJournal(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = quietLogs
    let bytes = input(data, size)
    let text = String(decoding: bytes, as: UTF8.self)
    for u in UploadJournal.unfinished(in: text) {
        if let key = UploadJournal.decode(u.key) { check(UploadJournal.encode(key) == u.key.lowercased() || key.isEmpty, "key \(u.key)") }
        check(UploadJournal.isUploadId(u.uploadId), "upload id \(u.uploadId)")
    }
    // The write-back journal a run that died left: what the next mount uploads from it.
    for o in WriteBackJournal.owed(in: bytes) {
        check(WriteBackJournal.isSpoolName(o.spool) && !o.spool.contains("/"), "spool name \(o.spool)")
        check(o.size >= 0 && (o.inline == nil || o.inline!.count == Int(o.size)), "inline bytes of \(o.size)")
    }
    if let e = DataCache.parseMap(bytes, maxBytes: 64 << 20) {
        check(e.size > 0 && e.size <= 64 << 20 && e.present.count == DataCache.blocks(e.size) && e.bytes <= e.size, "map of \(e.size) bytes")
    }
    return 0
}
