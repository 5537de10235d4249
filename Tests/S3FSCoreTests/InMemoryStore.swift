import Foundation
import S3
@testable import S3FSCore

/// An object store in memory with S3's listing semantics (byte order, prefix, delimiter,
/// continuation), counting calls. For unit tests of the core only; the integration tests use moto.
final class InMemoryStore: ObjectStore, @unchecked Sendable {
    private let lock = NSLock()
    private var objects: [[UInt8]: (data: [UInt8], etag: String, mtime: Double)] = [:] { didSet { sortedKeys = nil } }
    /// Keys in byte order, rebuilt after a change: listing 100,000 keys page by page stays fast.
    private var sortedKeys: [[UInt8]]? = nil
    private(set) var listCalls = 0
    /// The prefix of every listing, in order ("p (flat)" without a delimiter).
    private(set) var listed: [String] = []
    private(set) var flatListCalls = 0
    private(set) var getCalls = 0
    /// Every GET: key, first and end offset, open-ended (a stream).
    private(set) var getRanges: [(key: String, lo: Int, hi: Int, openEnded: Bool)] = []
    var gets: [(key: String, lo: Int, hi: Int, openEnded: Bool)] { lock.lock(); defer { lock.unlock() }; return getRanges }
    var listDelay: useconds_t = 0
    var requestStats: RequestStats? { nil }

    func put(_ key: String, _ data: String = "x") { put(Array(key.utf8), Array(data.utf8)) }
    func put(_ key: [UInt8], _ data: [UInt8]) {
        lock.lock()
        // Like S3's ETag of a single-part upload (its MD5): the same bytes give the same ETag.
        var h: UInt64 = 0xcbf29ce484222325
        for c in data { h = (h ^ UInt64(c)) &* 0x100000001b3 }
        objects[key] = (data, "\"\(String(h, radix: 16))\"", 1_700_000_000)
        logEvent(key)
        lock.unlock()
    }

    /// With `recordEvents`, every change as the S3 event it would send (in order; a counter as the
    /// sequencer), for the notification tests to deliver.
    var recordEvents = false
    private var eventLog: [ObjectEvent] = []
    private var sequence = 0
    private func logEvent(_ key: [UInt8]) {
        guard recordEvents else { return }
        sequence += 1
        let change: ObjectEvent.Change = objects[key].map { .created(size: Int64($0.data.count), etag: $0.etag) } ?? .removed
        eventLog.append(ObjectEvent(bucket: "mem", key: key, change: change, name: change == .removed ? "ObjectRemoved:Delete" : "ObjectCreated:Put",
                                    time: Double(time(nil)), sequencer: String(format: "%016X", sequence)))
    }
    /// The events logged since the last call.
    func takeEvents() -> [ObjectEvent] { lock.lock(); defer { lock.unlock() }; defer { eventLog = [] }; return eventLog }
    func etag(_ key: String) -> String? { lock.lock(); defer { lock.unlock() }; return objects[Array(key.utf8)]?.etag }
    func remove(_ key: String) { lock.lock(); objects[Array(key.utf8)] = nil; logEvent(Array(key.utf8)); lock.unlock() }
    var lists: Int { lock.lock(); defer { lock.unlock() }; return listCalls }
    /// The keys under `prefix`, in byte order.
    func keys(prefix: String) -> [String] {
        lock.lock(); defer { lock.unlock() }
        return objects.keys.filter { $0.starts(with: Array(prefix.utf8)) }.sorted { $0.lexicographicallyPrecedes($1) }.map { String(decoding: $0, as: UTF8.self) }
    }

    func list(prefix: [UInt8], delimiter: String?, continuationToken: String?, startAfter: [UInt8]?, maxKeys: Int?) throws -> ListPage {
        lock.lock()
        listCalls += 1
        listed.append(String(decoding: prefix, as: UTF8.self) + (delimiter == nil ? " (flat)" : ""))
        if delimiter == nil { flatListCalls += 1 }
        let snapshot = objects
        let classes = storageClasses
        if sortedKeys == nil { sortedKeys = objects.keys.sorted { $0.lexicographicallyPrecedes($1) } }
        let sorted = sortedKeys!
        lock.unlock()
        if listDelay > 0 { usleep(listDelay) }
        // Like S3, a continuation token remembers where the last page stopped (here: that key).
        let after = continuationToken.map { Array($0.utf8) } ?? startAfter
        let max = maxKeys ?? 1000
        // First key at or after the prefix (and past `after`), by binary search.
        let from = after.map { $0.lexicographicallyPrecedes(prefix) ? prefix : $0 } ?? prefix
        var lo = 0, hi = sorted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sorted[mid].lexicographicallyPrecedes(from) { lo = mid + 1 } else { hi = mid }
        }
        var items: [(key: [UInt8], isPrefix: Bool)] = []
        var seenPrefixes = Set<[UInt8]>()
        var i = lo
        while i < sorted.count && items.count <= max + 1 {
            let k = sorted[i]
            i += 1
            guard k.starts(with: prefix) else { break }
            if let a = after, !a.lexicographicallyPrecedes(k) { continue }
            if let d = delimiter?.utf8.first, let j = k[prefix.count...].firstIndex(of: d) {
                let p = Array(k[...j])
                if seenPrefixes.insert(p).inserted { items.append((p, true)) }
            } else {
                items.append((k, false))
            }
        }
        // A rolled-up prefix that the token (or start-after) points inside is not repeated.
        if let a = after, let first = items.first, first.isPrefix, a.starts(with: first.key) { items.removeFirst() }
        let slice = items[0..<min(max, items.count)]
        var page = ListPage()
        for it in slice {
            if it.isPrefix { page.commonPrefixes.append(it.key) } else {
                let o = snapshot[it.key]!
                page.objects.append(ListedObject(key: it.key, size: Int64(o.data.count), lastModified: o.mtime, etag: o.etag,
                                                 storageClass: classes[it.key] ?? "STANDARD"))
            }
        }
        page.isTruncated = max < items.count
        if page.isTruncated, let last = slice.last {
            // The last key listed; for a rolled-up prefix, past everything under it.
            page.nextContinuationToken = String(decoding: last.isPrefix ? last.key + [0xFF] : last.key, as: UTF8.self)
        }
        return page
    }

    func get(_ key: [UInt8], range: Range<Int64>?, from: Int64?, ifMatch: String?, sink: @escaping BodySink) throws -> ObjectInfo {
        lock.lock()
        getCalls += 1
        let o = objects[key]
        let frozen = StorageClass.isArchived(storageClasses[key]) && restored[key] == nil
        lock.unlock()
        guard let o else { throw S3Error(kind: .noSuchKey, status: 404, code: "NoSuchKey", message: "", operation: "GetObject") }
        if frozen { throw S3Error(kind: .accessDenied, status: 403, code: "InvalidObjectState", message: "", operation: "GetObject") }
        if let m = ifMatch, m != o.etag { throw S3Error(kind: .preconditionFailed, status: 412, code: "PreconditionFailed", message: "", operation: "GetObject") }
        let lo = Int(range?.lowerBound ?? from ?? 0), hi = Int(range?.upperBound ?? Int64(o.data.count))
        lock.lock()
        getRanges.append((String(decoding: key, as: UTF8.self), lo, min(hi, o.data.count), range == nil))
        lock.unlock()
        // In pieces, as a network delivers them; a sink that says stop ends the transfer.
        var at = lo
        while at < min(hi, o.data.count) {
            let n = min(256 << 10, min(hi, o.data.count) - at)
            let go = o.data[at..<at + n].withUnsafeBytes { sink($0) }
            at += n
            if !go { throw S3Error(kind: .transport, status: 0, code: "Aborted", message: "stopped by sink", operation: "GetObject") }
        }
        return ObjectInfo(size: Int64(o.data.count), etag: o.etag, lastModified: o.mtime)
    }

    private var uploads: [String: [Int: [UInt8]]] = [:]
    private(set) var putCalls = 0

    func data(_ key: String) -> [UInt8]? { lock.lock(); defer { lock.unlock() }; return objects[Array(key.utf8)]?.data }
    var allKeys: [String] { lock.lock(); defer { lock.unlock() }; return objects.keys.map { String(decoding: $0, as: UTF8.self) }.sorted() }

    static func read(_ body: HTTPBody) -> [UInt8] {
        switch body {
        case .none: return []
        case .bytes(let b): return b
        case .file(let fd, let off, let len):
            var out = [UInt8](repeating: 0, count: Int(len))
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, Int(len), off_t(off)) }
            return Array(out[0..<max(0, n)])
        }
    }

    /// Storage classes by key (none: STANDARD), restores asked for, and the class each copy was asked to keep.
    private var storageClasses: [[UInt8]: String] = [:]
    private var restored: [[UInt8]: RestoreStatus] = [:]
    private(set) var copyClasses: [String?] = []
    private(set) var restoreCalls = 0
    /// What a restore makes: a copy at once, or one still on its way.
    var restoreCompletes = true
    func setStorageClass(_ key: String, _ c: String) { lock.lock(); storageClasses[Array(key.utf8)] = c; lock.unlock() }
    func clearRestore(_ key: String) { lock.lock(); restored[Array(key.utf8)] = nil; lock.unlock() }
    func storageClass(_ key: String) -> String? { lock.lock(); defer { lock.unlock() }; return storageClasses[Array(key.utf8)] }
    func restore(_ key: [UInt8], days: Int, tier: String) throws -> RestoreStarted {
        lock.lock(); defer { lock.unlock() }
        restoreCalls += 1
        guard objects[key] != nil else { throw S3Error(kind: .noSuchKey, status: 404, code: "NoSuchKey", message: "", operation: "RestoreObject") }
        if restored[key] == .ongoing { return .alreadyInProgress }
        restored[key] = restoreCompletes ? .restored(expiry: nil) : .ongoing
        return .started
    }

    /// User metadata by key, as the last PUT, copy or multipart creation set it.
    private(set) var userMeta: [[UInt8]: [String: String]] = [:]
    private var uploadMeta: [String: [String: String]] = [:]
    private(set) var copyCalls = 0
    private(set) var headCalls = 0
    /// Conditional PUTs refused (412).
    private(set) var preconditionFailures = 0

    func meta(_ key: String) -> [String: String]? { lock.lock(); defer { lock.unlock() }; return userMeta[Array(key.utf8)] }
    func setMeta(_ key: String, _ m: [String: String]) { lock.lock(); userMeta[Array(key.utf8)] = m; lock.unlock() }

    func put(_ key: [UInt8], body: HTTPBody, metadata: [(String, String)]) throws -> String {
        let d = Self.read(body)
        put(key, d)
        lock.lock(); defer { lock.unlock() }
        putCalls += 1
        userMeta[key] = Dictionary(metadata, uniquingKeysWith: { _, b in b })
        return objects[key]!.etag
    }
    func put(_ key: [UInt8], body: HTTPBody, condition: WriteCondition) throws -> String {
        lock.lock()
        let current = objects[key]?.etag
        let holds: Bool
        switch condition {
        case .absent: holds = current == nil
        case .etag(let e): holds = current == e
        }
        if !holds { preconditionFailures += 1 }
        lock.unlock()
        if !holds { throw S3Error(kind: .preconditionFailed, status: 412, code: "PreconditionFailed", message: "", operation: "PutObject") }
        return try put(key, body: body, metadata: [])
    }
    func head(_ key: [UInt8]) throws -> ObjectInfo {
        lock.lock(); defer { lock.unlock() }
        headCalls += 1
        guard let o = objects[key] else { throw S3Error(kind: .notFound, status: 404, code: "NotFound", message: "", operation: "HeadObject") }
        var info = ObjectInfo(size: Int64(o.data.count), etag: o.etag, lastModified: o.mtime, metadata: userMeta[key] ?? [:])
        info.storageClass = storageClasses[key]
        info.restore = restored[key] ?? .none
        return info
    }
    func createMultipart(_ key: [UInt8], metadata: [(String, String)]) throws -> MultipartUpload {
        lock.lock(); defer { lock.unlock() }
        let id = UUID().uuidString
        uploads[id] = [:]
        uploadMeta[id] = Dictionary(metadata, uniquingKeysWith: { _, b in b })
        return MultipartUpload(id: id, checksummed: true)
    }
    /// Runs first in every UploadPart (on the part's thread): a test may block it or throw an S3 error.
    var beforeUploadPart: ((Int) throws -> Void)? = nil

    func uploadPart(_ key: [UInt8], upload: MultipartUpload, partNumber: Int, body: HTTPBody) throws -> CompletedPart {
        try beforeUploadPart?(partNumber)
        let d = Self.read(body)
        lock.lock(); defer { lock.unlock() }
        // Like S3: a part for an upload completed or aborted meanwhile (a stale part still in flight).
        guard uploads[upload.id] != nil else {
            throw S3Error(kind: .notFound, status: 404, code: "NoSuchUpload", message: "", operation: "UploadPart")
        }
        uploads[upload.id]![partNumber] = d
        return CompletedPart(partNumber: partNumber, etag: "\"p\(partNumber)\"", checksumCRC32: upload.checksummed ? CRC32.base64(CRC32.of(.bytes(d))!) : nil)
    }
    func completeMultipart(_ key: [UInt8], uploadId: String, parts: [CompletedPart]) throws -> String {
        lock.lock()
        let u = uploads.removeValue(forKey: uploadId)!
        lock.unlock()
        // Like S3: each part's checksum must be that of the part's bytes as last uploaded.
        for p in parts where p.checksumCRC32 != CRC32.base64(CRC32.of(.bytes(u[p.partNumber] ?? []))!) {
            throw S3Error(kind: .clientError, status: 400, code: "InvalidPart", message: "checksum of part \(p.partNumber)", operation: "CompleteMultipartUpload")
        }
        put(key, parts.sorted { $0.partNumber < $1.partNumber }.flatMap { u[$0.partNumber]! })
        lock.lock(); defer { lock.unlock() }
        userMeta[key] = uploadMeta.removeValue(forKey: uploadId)
        return objects[key]!.etag
    }
    func abortMultipart(_ key: [UInt8], uploadId: String) throws { lock.lock(); uploads[uploadId] = nil; lock.unlock() }
    func copy(from: [UInt8], to: [UInt8], size: Int64, metadata: [(String, String)]?, sourceETag: String?, storageClass: String?) throws -> String {
        lock.lock()
        guard let o = objects[from] else { lock.unlock(); throw S3Error(kind: .noSuchKey, status: 404, code: "NoSuchKey", message: "", operation: "CopyObject") }
        if let e = sourceETag, e != o.etag { lock.unlock(); throw S3Error(kind: .preconditionFailed, status: 412, code: "PreconditionFailed", message: "", operation: "CopyObject") }
        copyCalls += 1
        copyClasses.append(storageClass)
        storageClasses[to] = storageClass
        let m = metadata.map { Dictionary($0, uniquingKeysWith: { _, b in b }) } ?? userMeta[from]
        lock.unlock()
        put(to, o.data)
        lock.lock(); defer { lock.unlock() }
        userMeta[to] = m
        return objects[to]!.etag
    }
    /// Deletes sent alone and DeleteObjects requests; keys for which `refuseDelete` is true are
    /// refused (AccessDenied) by both.
    private(set) var singleDeletes = 0, batchDeletes = 0
    var refuseDelete: ([UInt8]) -> Bool = { _ in false }
    func delete(_ key: [UInt8]) throws {
        lock.lock(); singleDeletes += 1; lock.unlock()
        if refuseDelete(key) { throw S3Error(kind: .accessDenied, status: 403, code: "AccessDenied", message: "refused", operation: "DeleteObject") }
        remove(key)
    }
    private func remove(_ key: [UInt8]) { lock.lock(); objects[key] = nil; userMeta[key] = nil; logEvent(key); lock.unlock() }
    func deleteMany(_ keys: [[UInt8]]) throws -> [[UInt8]] { try deleteManyReporting(keys).map { $0.key } }
    func deleteManyReporting(_ keys: [[UInt8]]) throws -> [(key: [UInt8], code: String)] {
        lock.lock(); batchDeletes += 1; lock.unlock()
        var refused: [(key: [UInt8], code: String)] = []
        for k in keys { if refuseDelete(k) { refused.append((k, "AccessDenied")) } else { remove(k) } }
        return refused
    }
}

/// Reads a whole directory the way the kernel does, with readdirplus.
func readDirectory(_ fs: Filesystem, _ ino: UInt64, plus: Bool = true) -> [(String, Attributes?)] {
    let h = try! fs.opendir(ino: ino).get()
    defer { fs.releasedir(handle: h) }
    var out: [(String, Attributes?)] = []
    var off: Int64 = 0
    while true {
        var got = 0
        _ = fs.readdir(handle: h, offset: off, plus: plus) { e in
            out.append((String(decoding: e.name, as: UTF8.self), e.attributes))
            off = e.nextOffset
            got += 1
            return true
        }
        if got == 0 { break }
    }
    return out
}
