import Foundation

/// A versioned bucket read as it was at one moment (`--as-of`): listings come from
/// ListObjectVersions, each key shown in its newest version not later than the moment (or not at
/// all when that is a delete marker, or it came later), and reads of a key ask for exactly that
/// version (`versionId`). The client keeps the version each listed key was shown in (`pins`),
/// so that a read gets the bytes the listing described.
public final class VersionedView: Sendable {
    /// Seconds since 1970.
    public let asOf: Double
    private let pins = Locked([[UInt8]: String]())

    public init(asOf: Double) { self.asOf = asOf }

    func pin(_ key: [UInt8], _ versionId: String) { pins.withLock { $0[key] = versionId } }
    func pinned(_ key: [UInt8]) -> String? { pins.withLock { $0[key] } }
}

/// One `<Version>` or `<DeleteMarker>` of a ListObjectVersions answer.
public struct ObjectVersion: Sendable, Equatable {
    public var key: [UInt8]
    public var versionId: String
    public var isDeleteMarker: Bool
    public var lastModified: Double
    public var size: Int64
    public var etag: String
    public var storageClass: String?
}

public struct VersionsPage: Sendable {
    /// In the answer's order: by key, and newest first within a key.
    public var versions: [ObjectVersion] = []
    public var commonPrefixes: [[UInt8]] = []
    public var isTruncated = false
    public var nextKeyMarker: [UInt8]? = nil
    public var nextVersionIdMarker: String? = nil

    /// The keys as they were at `asOf`: each key's newest version not later than it, unless that
    /// is a delete marker. `decided`: a key whose version an earlier page already chose (its
    /// versions may run on into this page). Returns the objects with their version ids, and the
    /// last key this page decided.
    /// By date, not by place in the answer: S3 lists a key's versions and delete markers newest
    /// first together, moto lists all versions before all delete markers. At equal dates the one
    /// listed first wins (S3's newest).
    public func asOf(_ asOf: Double, decided: [UInt8]?) -> (objects: [(ListedObject, String)], lastDecided: [UInt8]?) {
        var chosen: [[UInt8]: ObjectVersion] = [:]
        for v in versions where v.lastModified <= asOf && v.key != decided {
            if let c = chosen[v.key], c.lastModified >= v.lastModified { continue }
            chosen[v.key] = v
        }
        let keys = chosen.keys.sorted { $0.lexicographicallyPrecedes($1) }
        let out = keys.compactMap { k -> (ListedObject, String)? in
            let v = chosen[k]!
            if v.isDeleteMarker { return nil }
            return (ListedObject(key: v.key, size: v.size, lastModified: v.lastModified, etag: v.etag, storageClass: v.storageClass), v.versionId)
        }
        return (out, keys.last ?? decided)
    }
}

extension S3XML {
    /// A ListObjectVersions answer; nil when it is not one, or a version lacks a key, a version
    /// id or a date, or a (non-delete-marker) version a size from 0 to 1 PiB.
    public static func parseListObjectVersions(_ body: [UInt8]) -> VersionsPage? {
        var page = VersionsPage()
        var urlEncoded = false
        var root: String? = nil
        var cur = ObjectVersion(key: [], versionId: "", isDeleteMarker: false, lastModified: .nan, size: -1, etag: "")
        var rawKey: String? = nil
        var rawPrefixes: [String] = []
        var rawNextKey: String? = nil
        var bad = false
        let ok = XMLWalker.walk(body, onStart: { path in
            if path.count == 1 { root = path[0] }
            if path.count == 2 && (path[1] == "Version" || path[1] == "DeleteMarker") {
                cur = ObjectVersion(key: [], versionId: "", isDeleteMarker: path[1] == "DeleteMarker", lastModified: .nan, size: -1, etag: "")
                rawKey = nil
            }
        }) { path, text in
            guard path.count >= 2 else { return }
            if path.count == 2 {
                switch path[1] {
                case "IsTruncated": page.isTruncated = text == "true"
                case "NextKeyMarker": rawNextKey = text
                case "NextVersionIdMarker": page.nextVersionIdMarker = text
                case "EncodingType": urlEncoded = text == "url"
                case "Version", "DeleteMarker":
                    guard let k = rawKey, !cur.versionId.isEmpty, cur.lastModified.isFinite, cur.isDeleteMarker || cur.size >= 0 else { bad = true; return }
                    if cur.isDeleteMarker { cur.size = 0 }
                    cur.key = Array(k.utf8) // decoded below, once the encoding is known
                    page.versions.append(cur)
                default: break
                }
            } else if path.count == 3 && (path[1] == "Version" || path[1] == "DeleteMarker") {
                switch path[2] {
                case "Key": rawKey = text
                case "VersionId": cur.versionId = text.utf8.count <= 1024 ? text : ""
                case "LastModified": cur.lastModified = AmzDate.parseISO8601(text) ?? .nan
                case "Size": cur.size = ObjectSize.listed(text) ?? -1
                case "ETag": cur.etag = text
                case "StorageClass": cur.storageClass = text.isEmpty || text.utf8.count > 64 ? nil : text
                default: break
                }
            } else if path.count == 3 && path[1] == "CommonPrefixes" && path[2] == "Prefix" {
                rawPrefixes.append(text)
            }
        }
        guard ok, !bad, root == "ListVersionsResult" else { return nil }
        func decode(_ s: String) -> [UInt8] { urlEncoded ? URIEncoding.decodeForm(s) : Array(s.utf8) }
        for i in page.versions.indices { page.versions[i].key = decode(String(decoding: page.versions[i].key, as: UTF8.self)) }
        page.commonPrefixes = rawPrefixes.map(decode)
        page.nextKeyMarker = rawNextKey.map(decode)
        return page
    }
}

/// Where a listing of versions goes on: S3's two markers, and the key whose version is chosen
/// already, in one continuation token (each part percent-encoded, so any key fits).
struct VersionsToken: Equatable {
    var keyMarker: [UInt8]
    var versionIdMarker: String
    var decided: [UInt8]?

    var text: String {
        ["v1", URIEncoding.encode(keyMarker), URIEncoding.encode(Array(versionIdMarker.utf8)), decided.map { "k" + URIEncoding.encode($0) } ?? "-"]
            .joined(separator: " ")
    }

    init(keyMarker: [UInt8], versionIdMarker: String, decided: [UInt8]?) {
        self.keyMarker = keyMarker
        self.versionIdMarker = versionIdMarker
        self.decided = decided
    }

    /// Only tokens this client made come back, but a token is checked like any outside text.
    init?(_ text: String) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, parts[0] == "v1" else { return nil }
        keyMarker = URIEncoding.decode(parts[1])
        versionIdMarker = String(decoding: URIEncoding.decode(parts[2]), as: UTF8.self)
        if parts[3] == "-" { decided = nil } else if parts[3].hasPrefix("k") { decided = URIEncoding.decode(String(parts[3].dropFirst())) } else { return nil }
    }
}

extension S3Client {
    /// ListObjectVersions as a ListPage of the bucket at `view.asOf` (see VersionedView); pins
    /// the version of each key listed.
    func listAsOf(_ view: VersionedView, prefix: [UInt8], delimiter: String?, continuationToken: String?, startAfter: [UInt8]?,
                  maxKeys: Int?, retrySeconds: Double?) throws -> ListPage {
        let prefixText = String(decoding: prefix, as: UTF8.self)
        if !prefixText.utf8.elementsEqual(prefix) { return ListPage() }
        var q: [(String, String)] = [("versions", ""), ("encoding-type", "url"), ("prefix", prefixText)]
        if let d = delimiter { q.append(("delimiter", d)) }
        var decided: [UInt8]? = nil
        if let t = continuationToken {
            guard let token = VersionsToken(t) else {
                throw S3Error(kind: .badResponse, status: 0, code: "BadToken", message: "not a versions listing token", operation: "ListObjectVersions")
            }
            q.append(("key-marker", String(decoding: token.keyMarker, as: UTF8.self)))
            if !token.versionIdMarker.isEmpty { q.append(("version-id-marker", token.versionIdMarker)) }
            decided = token.decided
        } else if let s = startAfter {
            // After every version of `s`: key-marker alone starts with the next key.
            q.append(("key-marker", String(decoding: s, as: UTF8.self)))
        }
        if let m = maxKeys { q.append(("max-keys", String(m))) }
        let r = try send("ListObjectVersions", method: "GET", key: nil, query: q, retrySeconds: retrySeconds)
        guard let versions = S3XML.parseListObjectVersions(r.body) else {
            throw S3Error(kind: .badResponse, status: r.status, code: "MalformedXML", message: "unreadable ListObjectVersions response", operation: "ListObjectVersions")
        }
        let chosen = versions.asOf(view.asOf, decided: decided)
        var page = ListPage()
        for (o, v) in chosen.objects {
            view.pin(o.key, v)
            page.objects.append(o)
        }
        page.commonPrefixes = versions.commonPrefixes
        page.isTruncated = versions.isTruncated
        if versions.isTruncated, let km = versions.nextKeyMarker {
            page.nextContinuationToken = VersionsToken(keyMarker: km, versionIdMarker: versions.nextVersionIdMarker ?? "", decided: chosen.lastDecided).text
        }
        return page
    }

    /// The version of `key` a read asks for in an as-of view: the one its listing showed, else
    /// found by listing the key's versions. nil: not a versioned view. NoSuchKey when the key
    /// did not exist at that moment.
    func versionToRead(_ key: [UInt8], operation: String) throws -> String? {
        guard let view = versionedView else { return nil }
        if let v = view.pinned(key) { return v }
        var token: String? = nil
        var guardPages = 0
        repeat {
            let page = try listAsOf(view, prefix: key, delimiter: nil, continuationToken: token, startAfter: nil, maxKeys: 1000, retrySeconds: nil)
            if page.objects.contains(where: { $0.key == key }) || page.objects.contains(where: { !$0.key.starts(with: key) }) { break }
            token = page.nextContinuationToken
            guardPages += 1
        } while token != nil && guardPages < 100
        guard let v = view.pinned(key) else {
            throw S3Error(kind: .noSuchKey, status: 404, code: "NoSuchKey", message: "no version at the --as-of time", operation: operation)
        }
        return v
    }
}
