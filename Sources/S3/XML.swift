import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// Streams an XML document and reports each element's text with its path ("A/B/C").
/// FoundationXML on Linux may return true from parse() on bad XML: `parserError` is checked too.
final class XMLWalker: NSObject, XMLParserDelegate {
    private var stack: [String] = []
    private var text = ""
    private let onEnd: (_ path: [String], _ text: String) -> Void
    private let onStart: ((_ path: [String]) -> Void)?

    init(onStart: ((_ path: [String]) -> Void)? = nil, onEnd: @escaping (_ path: [String], _ text: String) -> Void) {
        self.onStart = onStart
        self.onEnd = onEnd
    }

    static func walk(_ data: [UInt8], onStart: ((_ path: [String]) -> Void)? = nil, onEnd: @escaping (_ path: [String], _ text: String) -> Void) -> Bool {
        // FoundationXML traps (a force unwrap in its start-element callback) on an element name
        // that is not UTF-8, e.g. the 5 bytes "<\u{FF}\u{1}\0\0", and crashes on `<?x?>` (see
        // `plain`): one response body from the endpoint (or anything between) would end the mount.
        // S3 answers UTF-8 only, and none of that: such a body is unreadable, and never reaches
        // the parser.
        guard String(validating: data, as: UTF8.self) != nil, plain(data) else { return false }
        let parser = XMLParser(data: Data(data))
        let w = XMLWalker(onStart: onStart, onEnd: onEnd)
        parser.delegate = w
        parser.shouldProcessNamespaces = false
        let ok = parser.parse()
        return ok && parser.parserError == nil
    }

    /// Whether the document holds only what S3 and STS send: elements, text, character and
    /// predefined entity references, comments, after an optional XML declaration. No processing
    /// instruction: FoundationXML crashes (strlen of NULL) on one without data, `<?x?>`. No
    /// DOCTYPE, entity declaration or CDATA (`<!` other than a comment): no entity expansion to
    /// blow up memory, no external entity to read.
    static func plain(_ d: [UInt8]) -> Bool {
        var i = 0
        if d.starts(with: [0xEF, 0xBB, 0xBF]) { i = 3 } // a UTF-8 byte order mark
        // "<?xml" and a space: the declaration, up to its "?>".
        if d.count > i + 5, d[i..<i + 5].elementsEqual("<?xml".utf8), [0x20, 0x09, 0x0D, 0x0A].contains(d[i + 5]) {
            i += 5
            while i + 1 < d.count, !(d[i] == 0x3F && d[i + 1] == 0x3E) {
                // Not a declaration that swallows markup: "<?xml a><x<?y?>" hides a "<?y?>".
                if d[i] == 0x3C || d[i] == 0x3E { return false }
                i += 1
            }
            i += 2
        }
        while i + 1 < d.count {
            if d[i] == 0x3C {
                if d[i + 1] == 0x3F { return false }
                if d[i + 1] == 0x21 && !(i + 3 < d.count && d[i + 2] == 0x2D && d[i + 3] == 0x2D) { return false }
            }
            i += 1
        }
        return true
    }

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
        stack.append(elementName)
        text = ""
        onStart?(stack)
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
        onEnd(stack, text)
        text = ""
        if !stack.isEmpty { stack.removeLast() }
    }
}

public struct ListedObject: Sendable {
    public var key: [UInt8]
    public var size: Int64
    public var lastModified: Double
    public var etag: String
    /// The listing's `StorageClass` (nil when the store sends none).
    public var storageClass: String? = nil

    public init(key: [UInt8], size: Int64, lastModified: Double, etag: String, storageClass: String? = nil) {
        self.key = key
        self.size = size
        self.lastModified = lastModified
        self.etag = etag
        self.storageClass = storageClass
    }
}

public struct ListPage: Sendable {
    public init() {}
    public var objects: [ListedObject] = []
    /// Common prefixes, each ending in the delimiter.
    public var commonPrefixes: [[UInt8]] = []
    public var isTruncated = false
    public var nextContinuationToken: String?

    /// The greatest key or common prefix in the page (keys and prefixes come sorted, each list
    /// on its own).
    public var lastListed: [UInt8] {
        let key = objects.last?.key ?? [], prefix = commonPrefixes.last ?? []
        return key.lexicographicallyPrecedes(prefix) ? prefix : key
    }
}

public struct S3ErrorBody: Sendable {
    public var code: String
    public var message: String
    public var region: String?
}

public enum S3XML {
    public static func parseListObjectsV2(_ body: [UInt8]) -> ListPage? {
        var page = ListPage()
        var urlEncoded = false
        var cur = ListedObject(key: [], size: 0, lastModified: 0, etag: "")
        var rawKeys: [String] = []
        var rawPrefixes: [String] = []
        // Objects whose size or date cannot be read: an error for that entry, never "0 bytes, 1970".
        var unreadable = Set<Int>()
        var root: String? = nil
        let ok = XMLWalker.walk(body, onStart: { path in
            if path.count == 1 { root = path[0] }
            if path.count == 2 && path[1] == "Contents" { cur = ListedObject(key: [], size: -1, lastModified: .nan, etag: "") }
        }) { path, text in
            guard path.count >= 2 else { return }
            if path.count == 2 {
                switch path[1] {
                case "IsTruncated": page.isTruncated = text == "true"
                case "NextContinuationToken": page.nextContinuationToken = text
                case "EncodingType": urlEncoded = text == "url"
                case "Contents":
                    if cur.size < 0 || cur.lastModified.isNaN { unreadable.insert(page.objects.count) }
                    page.objects.append(cur)
                default: break
                }
            } else if path.count == 3 && path[1] == "Contents" {
                switch path[2] {
                case "Key": rawKeys.append(text)
                case "Size": cur.size = ObjectSize.listed(text) ?? -1
                case "LastModified": cur.lastModified = AmzDate.parseISO8601(text) ?? .nan
                case "ETag": cur.etag = text
                case "StorageClass": cur.storageClass = text.isEmpty || text.utf8.count > 64 ? nil : text
                default: break
                }
            } else if path.count == 3 && path[1] == "CommonPrefixes" && path[2] == "Prefix" {
                rawPrefixes.append(text)
            }
        }
        // An HTML page, an empty body or an <Error> answered with 200 is not an empty listing.
        guard ok, root == "ListBucketResult", rawKeys.count == page.objects.count else { return nil }
        func decode(_ s: String) -> [UInt8] { urlEncoded ? URIEncoding.decodeForm(s) : Array(s.utf8) }
        for i in page.objects.indices { page.objects[i].key = decode(rawKeys[i]) }
        if !unreadable.isEmpty {
            for i in unreadable.sorted() {
                Log.shared.once(.warning, key: "unreadable:" + rawKeys[i], "skipping key \"\(String(decoding: page.objects[i].key, as: UTF8.self))\": the listing gave no readable size (0 to 1 PiB) or date")
            }
            page.objects = page.objects.enumerated().filter { !unreadable.contains($0.offset) }.map { $0.element }
        }
        page.commonPrefixes = rawPrefixes.map(decode)
        return page
    }

    public static func parseError(_ body: [UInt8]) -> S3ErrorBody? {
        guard !body.isEmpty else { return nil }
        var code: String?
        var message = ""
        var region: String?
        let ok = XMLWalker.walk(body) { path, text in
            switch path.last {
            case "Code": code = text
            case "Message": message = text
            case "Region": region = text
            default: break
            }
        }
        guard ok, let c = code else { return nil }
        return S3ErrorBody(code: c, message: message, region: region)
    }

    /// Returns the text of the first element named `name` anywhere in the document.
    public static func firstValue(_ body: [UInt8], _ name: String) -> String? {
        var found: String?
        _ = XMLWalker.walk(body) { path, text in if found == nil && path.last == name { found = text } }
        return found
    }

    public static func parseSTSCredentials(_ body: [UInt8]) -> Credentials? {
        var v: [String: String] = [:]
        let ok = XMLWalker.walk(body) { path, text in
            if path.count >= 2 && path[path.count - 2] == "Credentials", let l = path.last { v[l] = text }
        }
        guard ok, let ak = v["AccessKeyId"], let sk = v["SecretAccessKey"] else { return nil }
        return Credentials(accessKeyId: ak, secretAccessKey: sk, sessionToken: v["SessionToken"],
                           expiration: v["Expiration"].flatMap { AmzDate.parseISO8601($0) }, source: "sts")
    }

    /// DeleteObjects result: keys that failed, with their error codes.
    public static func parseDeleteErrors(_ body: [UInt8]) -> [(key: [UInt8], code: String)] {
        var out: [(key: [UInt8], code: String)] = []
        var key: [UInt8] = []
        var code = ""
        _ = XMLWalker.walk(body) { path, text in
            guard path.count >= 2, path[1] == "Error" else { return }
            if path.count == 3 && path[2] == "Key" { key = Array(text.utf8) }
            if path.count == 3 && path[2] == "Code" { code = text }
            if path.count == 2 { out.append((key, code)); key = []; code = "" }
        }
        return out
    }

    static func escape(_ bytes: [UInt8]) -> String {
        var s = ""
        for ch in String(decoding: bytes, as: UTF8.self).unicodeScalars {
            switch ch {
            case "&": s += "&amp;"
            case "<": s += "&lt;"
            case ">": s += "&gt;"
            case "\"": s += "&quot;"
            case "'": s += "&apos;"
            default:
                if ch.value < 0x20 { s += "&#\(ch.value);" } else { s.unicodeScalars.append(ch) }
            }
        }
        return s
    }
}

extension URIEncoding {
    /// S3's `encoding-type=url` is form encoding: `+` stands for a space (a literal plus is %2B).
    public static func decodeForm(_ string: String) -> [UInt8] {
        decode(String(decoding: string.utf8.map { $0 == 0x2B ? 0x20 : $0 }, as: UTF8.self))
    }
}
