import S3

/// What the filesystem core needs from object storage. S3Client is the real one; unit tests use
/// an in-memory store. Keys are raw bytes.
public protocol ObjectStore: Sendable {
    func list(prefix: [UInt8], delimiter: String?, continuationToken: String?, maxKeys: Int?) throws -> ListPage
    /// Streams bytes from `range` (half-open) or from `from` to the end into `sink`.
    func get(_ key: [UInt8], range: Range<Int64>?, from: Int64?, ifMatch: String?, sink: @escaping BodySink) throws -> ObjectInfo
    var requestStats: RequestStats? { get }
}

extension S3Client: ObjectStore {
    public func list(prefix: [UInt8], delimiter: String?, continuationToken: String?, maxKeys: Int?) throws -> ListPage {
        try listObjectsV2(prefix: prefix, delimiter: delimiter, continuationToken: continuationToken, maxKeys: maxKeys)
    }

    public func get(_ key: [UInt8], range: Range<Int64>?, from: Int64?, ifMatch: String?, sink: @escaping BodySink) throws -> ObjectInfo {
        if let from { return try getObject(key, from: from, ifMatch: ifMatch, sink: sink) }
        return try getObject(key, range: range, ifMatch: ifMatch, sink: sink)
    }

    public var requestStats: RequestStats? { stats }
}
