import Foundation
import S3
@testable import S3FSCore

/// An object store in memory with S3's listing semantics (byte order, prefix, delimiter,
/// continuation), counting calls. For unit tests of the core only; the integration tests use moto.
final class InMemoryStore: ObjectStore, @unchecked Sendable {
    private let lock = NSLock()
    private var objects: [[UInt8]: (data: [UInt8], etag: String, mtime: Double)] = [:]
    private(set) var listCalls = 0
    private(set) var getCalls = 0
    var listDelay: useconds_t = 0
    var requestStats: RequestStats? { nil }

    func put(_ key: String, _ data: String = "x") { put(Array(key.utf8), Array(data.utf8)) }
    func put(_ key: [UInt8], _ data: [UInt8]) {
        lock.lock()
        objects[key] = (data, "\"\(UUID().uuidString)\"", 1_700_000_000)
        lock.unlock()
    }
    func remove(_ key: String) { lock.lock(); objects[Array(key.utf8)] = nil; lock.unlock() }
    var lists: Int { lock.lock(); defer { lock.unlock() }; return listCalls }

    func list(prefix: [UInt8], delimiter: String?, continuationToken: String?, maxKeys: Int?) throws -> ListPage {
        lock.lock()
        listCalls += 1
        let snapshot = objects
        lock.unlock()
        if listDelay > 0 { usleep(listDelay) }
        let keys = snapshot.keys.filter { $0.starts(with: prefix) }.sorted { $0.lexicographicallyPrecedes($1) }
        var items: [(key: [UInt8], isPrefix: Bool)] = []
        var seenPrefixes = Set<[UInt8]>()
        for k in keys {
            if let d = delimiter?.utf8.first, let i = k[prefix.count...].firstIndex(of: d) {
                let p = Array(k[...i])
                if seenPrefixes.insert(p).inserted { items.append((p, true)) }
            } else {
                items.append((k, false))
            }
        }
        let start = continuationToken.map { Int($0)! } ?? 0
        let max = maxKeys ?? 1000
        let slice = items[min(start, items.count)..<min(start + max, items.count)]
        var page = ListPage()
        for it in slice {
            if it.isPrefix { page.commonPrefixes.append(it.key) } else {
                let o = snapshot[it.key]!
                page.objects.append(ListedObject(key: it.key, size: Int64(o.data.count), lastModified: o.mtime, etag: o.etag))
            }
        }
        page.isTruncated = start + max < items.count
        page.nextContinuationToken = page.isTruncated ? String(start + max) : nil
        return page
    }

    func get(_ key: [UInt8], range: Range<Int64>?, from: Int64?, ifMatch: String?, sink: @escaping BodySink) throws -> ObjectInfo {
        lock.lock()
        getCalls += 1
        let o = objects[key]
        lock.unlock()
        guard let o else { throw S3Error(kind: .noSuchKey, status: 404, code: "NoSuchKey", message: "", operation: "GetObject") }
        if let m = ifMatch, m != o.etag { throw S3Error(kind: .preconditionFailed, status: 412, code: "PreconditionFailed", message: "", operation: "GetObject") }
        let lo = Int(range?.lowerBound ?? from ?? 0), hi = Int(range?.upperBound ?? Int64(o.data.count))
        _ = o.data[lo..<min(hi, o.data.count)].withUnsafeBytes { sink($0) }
        return ObjectInfo(size: Int64(o.data.count), etag: o.etag, lastModified: o.mtime)
    }
}
