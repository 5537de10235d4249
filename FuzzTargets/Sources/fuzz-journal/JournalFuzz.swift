import FuzzSupport
@testable import S3
@testable import S3FSCore

/// The multipart upload journal an earlier run left in the spool directory (read at mount to abort
/// that run's uploads).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJournal(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = quietLogs
    let text = String(decoding: input(data, size), as: UTF8.self)
    for u in UploadJournal.unfinished(in: text) {
        if let key = UploadJournal.decode(u.key) { check(UploadJournal.encode(key) == u.key.lowercased() || key.isEmpty, "key \(u.key)") }
    }
    return 0
}
