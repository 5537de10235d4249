import FuzzSupport
@testable import S3
@testable import S3FSCore

/// The multipart upload journal an earlier run left in the spool directory (read at mount to abort
/// that run's uploads), and the data cache's map files (read at mount from the cache folder).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJournal(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = quietLogs
    let bytes = input(data, size)
    let text = String(decoding: bytes, as: UTF8.self)
    for u in UploadJournal.unfinished(in: text) {
        if let key = UploadJournal.decode(u.key) { check(UploadJournal.encode(key) == u.key.lowercased() || key.isEmpty, "key \(u.key)") }
        check(UploadJournal.isUploadId(u.uploadId), "upload id \(u.uploadId)")
    }
    if let e = DataCache.parseMap(bytes, maxBytes: 64 << 20) {
        check(e.size > 0 && e.size <= 64 << 20 && e.present.count == DataCache.blocks(e.size) && e.bytes <= e.size, "map of \(e.size) bytes")
    }
    return 0
}
