import Glibc
import S3

/// What the filesystem core needs from object storage. S3Client is the real one; unit tests use
/// an in-memory store. Keys are raw bytes.
public protocol ObjectStore: Sendable {
    func list(prefix: [UInt8], delimiter: String?, continuationToken: String?, startAfter: [UInt8]?, maxKeys: Int?) throws -> ListPage
    /// Streams bytes from `range` (half-open) or from `from` to the end into `sink`.
    @discardableResult
    func get(_ key: [UInt8], range: Range<Int64>?, from: Int64?, ifMatch: String?, sink: @escaping BodySink) throws -> ObjectInfo
    var requestStats: RequestStats? { get }

    /// Returns the new object's ETag. `metadata`: user metadata headers (name without `x-amz-meta-`).
    func put(_ key: [UInt8], body: HTTPBody, metadata: [(String, String)]) throws -> String
    /// A PutObject that only succeeds while `condition` holds (S3Error .preconditionFailed otherwise).
    func put(_ key: [UInt8], body: HTTPBody, condition: WriteCondition) throws -> String
    func createMultipart(_ key: [UInt8], metadata: [(String, String)]) throws -> MultipartUpload
    /// The part's ETag, and its checksum when the upload is checksummed.
    func uploadPart(_ key: [UInt8], upload: MultipartUpload, partNumber: Int, body: HTTPBody) throws -> CompletedPart
    func completeMultipart(_ key: [UInt8], uploadId: String, parts: [CompletedPart]) throws -> String
    func abortMultipart(_ key: [UInt8], uploadId: String) throws
    /// Server-side copy; `size` lets the store pick a multipart copy for objects over 5 GiB.
    /// `metadata` nil keeps the source's user metadata, else replaces it; `sourceETag` fails the
    /// copy if the source changed. `storageClass`: the source's, which the copy keeps (nil: the
    /// mount's class for new objects).
    func copy(from: [UInt8], to: [UInt8], size: Int64, metadata: [(String, String)]?, sourceETag: String?, storageClass: String?) throws -> String
    /// Size, ETag and user metadata of one object (HeadObject).
    func head(_ key: [UInt8]) throws -> ObjectInfo
    func delete(_ key: [UInt8]) throws
    /// Returns the keys that could not be deleted.
    func deleteMany(_ keys: [[UInt8]]) throws -> [[UInt8]]
    /// The same, with S3's error code for each key refused (for the log).
    func deleteManyReporting(_ keys: [[UInt8]]) throws -> [(key: [UInt8], code: String)]
    /// Starts restoring an archived object (RestoreObject).
    func restore(_ key: [UInt8], days: Int, tier: String) throws -> RestoreStarted
}

extension ObjectStore {
    func list(prefix: [UInt8], delimiter: String?, continuationToken: String?, maxKeys: Int?) throws -> ListPage {
        try list(prefix: prefix, delimiter: delimiter, continuationToken: continuationToken, startAfter: nil, maxKeys: maxKeys)
    }
    func copy(from: [UInt8], to: [UInt8], size: Int64, metadata: [(String, String)]?, sourceETag: String?) throws -> String {
        try copy(from: from, to: to, size: size, metadata: metadata, sourceETag: sourceETag, storageClass: nil)
    }
    /// A store that does not say why a key was refused.
    public func deleteManyReporting(_ keys: [[UInt8]]) throws -> [(key: [UInt8], code: String)] {
        try deleteMany(keys).map { ($0, "") }
    }
    /// A store without archive classes has nothing to restore.
    public func restore(_ key: [UInt8], days: Int, tier: String) throws -> RestoreStarted { throw FSError(EOPNOTSUPP) }
}

extension S3Client: ObjectStore {
    public func list(prefix: [UInt8], delimiter: String?, continuationToken: String?, startAfter: [UInt8]?, maxKeys: Int?) throws -> ListPage {
        try listObjectsV2(prefix: prefix, delimiter: delimiter, continuationToken: continuationToken, startAfter: startAfter, maxKeys: maxKeys)
    }

    @discardableResult
    public func get(_ key: [UInt8], range: Range<Int64>?, from: Int64?, ifMatch: String?, sink: @escaping BodySink) throws -> ObjectInfo {
        if let from { return try getObject(key, from: from, ifMatch: ifMatch, sink: sink) }
        return try getObject(key, range: range, ifMatch: ifMatch, sink: sink)
    }

    public var requestStats: RequestStats? { stats }

    public func put(_ key: [UInt8], body: HTTPBody, metadata: [(String, String)]) throws -> String {
        try putObject(key, body: body, metadata: metadata)
    }
    public func put(_ key: [UInt8], body: HTTPBody, condition: WriteCondition) throws -> String {
        // The metadata index is read by every listing: never put in a class that must be restored first.
        let indexClass = StorageClass.isArchived(config.policy.storageClass) ? "STANDARD" : nil
        return try putObject(key, body: body, contentType: "text/plain; charset=utf-8", condition: condition, storageClass: indexClass)
    }
    public func createMultipart(_ key: [UInt8], metadata: [(String, String)]) throws -> MultipartUpload {
        try createMultipartUpload(key, metadata: metadata)
    }
    public func completeMultipart(_ key: [UInt8], uploadId: String, parts: [CompletedPart]) throws -> String {
        try completeMultipartUpload(key, uploadId: uploadId, parts: parts)
    }
    public func abortMultipart(_ key: [UInt8], uploadId: String) throws { try abortMultipartUpload(key, uploadId: uploadId) }
    public func copy(from: [UInt8], to: [UInt8], size: Int64, metadata: [(String, String)]?, sourceETag: String?, storageClass: String?) throws -> String {
        try copyObject(from: from, to: to, size: size, metadata: metadata, sourceETag: sourceETag, storageClass: storageClass)
    }
    public func head(_ key: [UInt8]) throws -> ObjectInfo { try headObject(key) }
    public func restore(_ key: [UInt8], days: Int, tier: String) throws -> RestoreStarted { try restoreObject(key, days: days, tier: tier) }
    public func delete(_ key: [UInt8]) throws { try deleteObject(key) }
    public func deleteMany(_ keys: [[UInt8]]) throws -> [[UInt8]] { try deleteObjects(keys).map { $0.key } }
    public func deleteManyReporting(_ keys: [[UInt8]]) throws -> [(key: [UInt8], code: String)] { try deleteObjects(keys) }
}

/// Guards a listing that follows continuation tokens against a store that never stops: a token
/// seen before, a truncated page without one, or keys that do not move forward end it with an
/// error (EIO, logged) instead of a loop; a cap on pages is the last guard.
struct PageGuard {
    static let maxPages = 200_000
    private var tokens = Set<String>()
    private var last: [UInt8]? = nil
    private var pages = 0

    mutating func check(_ page: ListPage, prefix: [UInt8]) throws {
        pages += 1
        func fail(_ why: String) -> S3Error {
            Log.error("listing \"\(Names.display(prefix))\" stopped: \(why)")
            return S3Error(kind: .badResponse, status: 200, code: "EndlessListing", message: why, operation: "ListObjectsV2")
        }
        let lastListed = page.lastListed
        if let l = last, !lastListed.isEmpty, !l.lexicographicallyPrecedes(lastListed) {
            throw fail("the store answered a page that does not move forward")
        }
        if !lastListed.isEmpty { last = lastListed }
        guard page.isTruncated else { return }
        guard let t = page.nextContinuationToken, !t.isEmpty else { throw fail("a truncated page came without a continuation token") }
        if !tokens.insert(t).inserted { throw fail("the store repeated a continuation token") }
        if pages >= Self.maxPages { throw fail("more than \(Self.maxPages) pages") }
    }
}
