import Glibc

public struct ObjectInfo: Sendable {
    public var size: Int64
    public var etag: String
    public var lastModified: Double
    public var contentType: String?
    /// User metadata (`x-amz-meta-NAME` headers), by NAME in lower case.
    public var metadata: [String: String]
    /// Whether the ETag is the MD5 of the bytes as far as S3 promises it: not for objects
    /// encrypted with KMS or a customer key (nor multipart uploads, whose ETags say "-N").
    public var etagIsMD5 = true
    /// The CRC-32 of the whole object (base64), when S3 sent it (`x-amz-checksum-mode: ENABLED`
    /// on a GET of the whole object) and it covers the whole object rather than its parts.
    public var checksumCRC32: String? = nil
    /// `x-amz-storage-class` (S3 sends none for STANDARD).
    public var storageClass: String? = nil
    /// What `x-amz-restore` says of an archived object's restored copy.
    public var restore: RestoreStatus = .none

    public init(size: Int64, etag: String, lastModified: Double, contentType: String? = nil, metadata: [String: String] = [:]) {
        self.size = size
        self.etag = etag
        self.lastModified = lastModified
        self.contentType = contentType
        self.metadata = metadata
    }
}

/// The precondition of a conditional PutObject.
public enum WriteCondition: Sendable {
    /// Only if no object has the key (`If-None-Match: *`).
    case absent
    /// Only if the object still has this ETag (`If-Match`).
    case etag(String)
}

public struct S3Config: Sendable {
    public var bucket: String
    /// e.g. "http://127.0.0.1:9000"; nil = AWS.
    public var endpoint: String?
    /// nil = discover from the bucket (AWS) or us-east-1 (custom endpoint).
    public var region: String?
    public var forcePathStyle: Bool
    /// A hard cap on attempts; the time budgets below are what normally ends retrying.
    public var maxAttempts: Int
    /// Seconds of retrying (backoff included) a read (GET, HEAD, LIST) may spend before it fails.
    public var readRetrySeconds: Double = 20
    /// Seconds of retrying an upload, copy or delete may spend: real S3 has minutes of 503s and
    /// resets, and a writer should not lose its close over one (the AWS SDKs' adaptive mode).
    public var writeRetrySeconds: Double = 60
    /// Uploads carry a CRC-32 of their bytes that S3 verifies (objects, and each part of a
    /// multipart upload), as the AWS CLI sends. A store that refuses the headers is then sent none.
    public var uploadChecksums = true
    /// Uploads get a Content-Type guessed from the key's extension (`--no-guess-content-type`: all
    /// `application/octet-stream`).
    public var guessContentType = true
    /// S3 requests in flight at once for the whole mount, and the share of them bulk work
    /// (uploads, copies, prefetch) leaves to interactive requests (`RequestGate`).
    public var maxRequests = 64
    public var interactiveReserve = 16
    /// A GET of a whole object asks for its checksum (`x-amz-checksum-mode`), which the reader
    /// checks (`--no-verify-reads` turns both off).
    public var verifyReads = true
    /// Encryption, storage class, requester pays, expected owner: headers by request kind.
    public var policy = RequestPolicy()
    /// `--as-of`: the bucket as it was at this moment (seconds since 1970), read-only, from its versions.
    public var asOf: Double? = nil

    public init(bucket: String, endpoint: String? = nil, region: String? = nil, forcePathStyle: Bool = false, maxAttempts: Int = 100) {
        self.bucket = bucket
        self.endpoint = endpoint
        self.region = region
        self.forcePathStyle = forcePathStyle
        self.maxAttempts = maxAttempts
    }
}

public struct CompletedPart: Sendable {
    public var partNumber: Int
    public var etag: String
    /// The part's CRC-32 (base64) when its upload is checksummed; the completion lists it.
    public var checksumCRC32: String?
    public init(partNumber: Int, etag: String, checksumCRC32: String? = nil) {
        self.partNumber = partNumber
        self.etag = etag
        self.checksumCRC32 = checksumCRC32
    }
}

/// A multipart upload in progress. A checksummed one was created with the CRC-32 algorithm:
/// each of its parts must carry its CRC-32, and the completion must list them.
public struct MultipartUpload: Sendable {
    public var id: String
    public var checksummed: Bool
    public init(id: String, checksummed: Bool) {
        self.id = id
        self.checksummed = checksummed
    }
}

/// The S3 REST client: signs (SigV4), sends over the curl pool, retries what is worth retrying,
/// and counts every request. Keys are raw bytes end to end.
public final class S3Client: Sendable {
    public let config: S3Config
    public let credentials: CredentialsProvider
    public let transport: HTTPTransport
    public let stats = RequestStats()
    public let gate: RequestGate
    private let regionState: Locked<String>
    /// Set once the store refused checksum headers (and took the same request without them).
    private let checksumsRefused = Locked(false)
    /// The store matched a PUT's If-Match only without the ETag's quotes (putObject).
    private let ifMatchUnquoted = Locked(false)
    private let endpointParts: (scheme: String, host: String, basePath: String)?
    /// The versions listings showed, when the bucket is read as of a moment.
    let versionedView: VersionedView?

    /// Logs one line per request at debug level when set (operation, key, status, ms).
    public let traceRequests: Bool

    public static let maxSinglePutSize: Int64 = 5 << 30
    /// Copies and multipart completions keep the connection quiet while S3 works (a 5 GiB copy takes
    /// a minute or more): their stall limit is this, not the transport's.
    public static let serverWorkStallSeconds = 300

    public init(config: S3Config, credentials: CredentialsProvider, transport: HTTPTransport, traceRequests: Bool = false) {
        self.config = config
        self.credentials = credentials
        self.transport = transport
        self.traceRequests = traceRequests
        self.gate = RequestGate(limit: config.maxRequests, reserved: config.interactiveReserve)
        self.regionState = Locked(config.region ?? "us-east-1")
        self.endpointParts = config.endpoint.flatMap(S3Client.parseEndpoint)
        self.versionedView = config.asOf.map(VersionedView.init)
    }

    public var region: String {
        get { regionState.withLock { $0 } }
    }

    public func setRegion(_ r: String) { regionState.withLock { $0 = r } }

    /// Splits "scheme://host[:port][/base]" and drops a port that is the scheme's default.
    static func parseEndpoint(_ s: String) -> (scheme: String, host: String, basePath: String)? {
        guard let r = s.range(of: "://") else { return nil }
        let scheme = s[..<r.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else { return nil }
        var rest = String(s[r.upperBound...])
        var base = ""
        if let slash = rest.firstIndex(of: "/") {
            base = String(rest[slash...])
            rest = String(rest[..<slash])
            while base.hasSuffix("/") { base.removeLast() }
        }
        if rest.isEmpty { return nil }
        if scheme == "http" && rest.hasSuffix(":80") { rest.removeLast(3) }
        if scheme == "https" && rest.hasSuffix(":443") { rest.removeLast(4) }
        return (scheme, rest, base)
    }

    /// Why `s` cannot be an endpoint, or nil. Only scheme, host, port and a plain path: a query
    /// or fragment would silently become part of every request's path or be dropped (a mount that
    /// shows an empty bucket and acknowledges writes that go nowhere), and credentials in the URL
    /// would end up in logs and `ps`.
    public static func endpointProblem(_ s: String) -> String? {
        guard let r = s.range(of: "://") else { return "expected http://host[:port] or https://host[:port]" }
        let scheme = s[..<r.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else { return "the scheme must be http or https" }
        if s.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F }) { return "it contains spaces or control characters" }
        if s.contains("?") { return "a query (\"?...\") is not allowed" }
        if s.contains("#") { return "a fragment (\"#...\") is not allowed" }
        let rest = s[r.upperBound...]
        let authority = rest.prefix { $0 != "/" }
        if authority.contains("@") { return "credentials in the URL are not allowed (use the AWS credential chain)" }
        if authority.isEmpty { return "no host" }
        var host = Substring(authority), port: Substring? = nil
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return "unclosed IPv6 address" }
            let after = host[host.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return "unexpected text after the IPv6 address" }
                port = after.dropFirst()
            }
            host = host[host.startIndex...close]
        } else if let colon = host.lastIndex(of: ":") {
            port = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        if host.isEmpty { return "no host" }
        if !host.hasPrefix("["), !host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_") }) {
            return "the host \"\(host)\" has characters a host name cannot have"
        }
        if let p = port, !(p.allSatisfy { $0.isASCII && $0.isNumber } && (Int(p).map { (1...65535).contains($0) } ?? false)) {
            return "the port must be a number from 1 to 65535"
        }
        let path = rest.dropFirst(authority.count)
        if path.contains("%") || path.contains("\\") { return "the path may not hold escapes" }
        return parseEndpoint(s) == nil ? "expected http://host[:port] or https://host[:port]" : nil
    }

    /// (url without query, host header, canonical encoded path)
    func location(key: [UInt8]?) -> (base: String, host: String, path: String) {
        let bucket = config.bucket
        let encodedKey = key.map { URIEncoding.encode($0, keepSlash: true) } ?? ""
        let scheme: String
        var host: String
        var path: String
        if let ep = endpointParts {
            scheme = ep.scheme
            if config.forcePathStyle {
                host = ep.host
                path = ep.basePath + "/" + bucket + (key == nil ? "" : "/" + encodedKey)
            } else {
                host = bucket + "." + ep.host
                path = ep.basePath + "/" + encodedKey
            }
        } else {
            scheme = "https"
            let r = region
            let domain = r.hasPrefix("cn-") ? "amazonaws.com.cn" : "amazonaws.com"
            // Buckets with dots break TLS wildcard certificates in virtual-hosted style.
            if config.forcePathStyle || bucket.contains(".") {
                host = "s3.\(r).\(domain)"
                path = "/" + bucket + (key == nil ? "" : "/" + encodedKey)
            } else {
                host = "\(bucket).s3.\(r).\(domain)"
                path = "/" + encodedKey
            }
        }
        if path.isEmpty { path = "/" }
        return ("\(scheme)://\(host)\(path)", host, path)
    }

    /// One S3 request, signed, retried with exponential backoff and full jitter on 5xx,
    /// throttling and transport failures, never on other 4xx.
    public func send(_ op: String, method: String, key: [UInt8]?, query: [(String, String)] = [],
                     headers: [(String, String)] = [], body: HTTPBody = .none, payloadHash: String? = nil,
                     sink: BodySink? = nil, okStatuses: Set<Int> = [], timeoutMs: Int? = nil, retrySeconds: Double? = nil,
                     stallSeconds: Int? = nil, storageClass: String? = nil) throws -> HTTPResponse {
        var attempt = 0
        let firstAttempt = monotonicSeconds()
        let budget = retrySeconds ?? (["GET", "HEAD"].contains(method) ? config.readRetrySeconds : config.writeRetrySeconds)
        /// Another try fits when the attempts and the time budget allow it: waits, then true.
        func retryFits(_ reason: String) -> Bool {
            guard attempt < config.maxAttempts else { return false }
            let delay = backoffDelay(attempt)
            guard monotonicSeconds() - firstAttempt + delay <= budget else { return false }
            stats.recordRetry()
            Log.debug("retrying \(op) after \(String(format2: delay))s: \(reason)")
            usleep(useconds_t(delay * 1_000_000))
            return true
        }
        var regionRetried = false
        let encodedQuery = SigV4Signer.encodeQuery(query)
        let queryString = SigV4Signer.canonicalQuery(encodedQuery)
        while true {
            attempt += 1
            let loc = location(key: key)
            let amzDate = AmzDate.now()
            let hash: String
            if let p = payloadHash {
                hash = p
            } else if case .bytes(let b) = body {
                hash = hexString(Crypto.sha256(b))
            } else if case .none = body {
                hash = emptyPayloadSHA256
            } else {
                hash = "UNSIGNED-PAYLOAD"
            }
            var allHeaders = headers + config.policy.headers(for: op, storageClass: storageClass)
            allHeaders.append(("x-amz-date", amzDate))
            allHeaders.append(("x-amz-content-sha256", hash))
            let creds: Credentials?
            do { creds = try credentials.credentials() } catch {
                throw S3Error(kind: .invalidAccessKeyId, status: 0, code: "NoCredentials", message: "\(error)", operation: op)
            }
            if let c = creds {
                if let tok = c.sessionToken { allHeaders.append(("x-amz-security-token", tok)) }
                var signHeaders = allHeaders
                signHeaders.append(("host", loc.host))
                let sreq = SigningRequest(method: method, encodedPath: loc.path, query: encodedQuery, headers: signHeaders, payloadHash: hash)
                allHeaders.append(("Authorization", SigV4Signer(region: region).authorization(sreq, amzDate: amzDate, credentials: c)))
            }
            let url = queryString.isEmpty ? loc.base : loc.base + "?" + queryString
            var delivered: Int64 = 0
            let countingSink: BodySink? = sink.map { s in { buf in delivered += Int64(buf.count); return s(buf) } }
            let started = monotonicSeconds()
            let result: Result<HTTPResponse, Error>
            do {
                var request = HTTPRequest(method: method, url: url, headers: allHeaders, body: body, timeoutMs: timeoutMs)
                request.stallSeconds = stallSeconds
                gate.acquire()
                defer { gate.release() }
                result = .success(try transport.perform(request, sink: countingSink))
            } catch {
                result = .failure(error)
            }
            let ms = Int((monotonicSeconds() - started) * 1000)
            let keyText = key.map { String(decoding: $0, as: UTF8.self) } ?? ""
            switch result {
            case .success(let resp):
                stats.record(operation: op, status: resp.status, bytesDown: resp.bytesReceived, bytesUp: resp.status < 300 ? body.length : 0)
                if traceRequests { Log.debug("s3 \(op) key=\(keyText) status=\(resp.status) \(ms)ms") }
                if (200..<300).contains(resp.status) || okStatuses.contains(resp.status) { return resp }
                var err = S3Error.from(status: resp.status, body: S3XML.parseError(resp.body), operation: op, headers: resp.headers)
                if resp.status == 400, ["GetObject", "HeadObject"].contains(op),
                   config.policy.customerKey != nil || err.message.lowercased().contains("encryption") {
                    // A read of an object written with another customer key, or with none, or an
                    // SSE-C object read without a key (S3 and RGW answer 400; RGW's HEAD without a
                    // body): EACCES and one line, never retried.
                    err.kind = .accessDenied
                    Log.shared.once(.warning, key: "sse-c:" + keyText, config.policy.customerKey != nil
                        ? "\"\(keyText)\": the store refused the SSE-C key (HTTP 400 \(err.code)): the object was written with another customer key, or without one"
                        : "\"\(keyText)\": the object is encrypted with a customer key (HTTP 400 \(err.code)): it can be read only by a mount given that key (--sse-c-key-file)")
                }
                if err.kind == .permanentRedirect || (err.status == 400 && err.region != nil), let r = err.region, r != region, !regionRetried, endpointParts == nil {
                    Log.info("bucket \(config.bucket) is in region \(r); switching")
                    setRegion(r)
                    regionRetried = true
                    attempt -= 1
                    continue
                }
                if err.isRetryable && delivered == 0 && retryFits(err.description) { continue }
                throw err
            case .failure(let e):
                stats.record(operation: op, status: 0, bytesDown: 0, bytesUp: 0)
                if traceRequests { Log.debug("s3 \(op) key=\(keyText) error=\(e) \(ms)ms") }
                guard let te = e as? TransportError else { throw e }
                if te.abortedBySink { throw S3Error(kind: .transport, status: 0, code: "Aborted", message: "transfer stopped by reader", operation: op) }
                if te.isRetryable && delivered == 0 && retryFits(te.description) { continue }
                throw S3Error.transport(te, operation: op)
            }
        }
    }

    /// Exponential backoff with full jitter: base 100 ms, cap 5 s.
    private func backoffDelay(_ attempt: Int) -> Double {
        Double.random(in: 0...min(5.0, 0.1 * Double(1 << min(attempt, 10))))
    }

    // MARK: - Operations

    /// Finds the bucket's region without credentials mattering (x-amz-bucket-region is sent on
    /// 200, 301 and 403 alike).
    public func discoverRegion() -> String? {
        let loc = location(key: nil)
        // Unsigned, but with the payer and owner headers: every request of the mount carries them.
        let resp = try? transport.perform(HTTPRequest(method: "HEAD", url: loc.base, headers: config.policy.headers(for: "HeadBucket"), timeoutMs: 10_000))
        return resp?.headers["x-amz-bucket-region"]
    }

    public func listObjectsV2(prefix: [UInt8], delimiter: String? = "/", continuationToken: String? = nil,
                              startAfter: [UInt8]? = nil, maxKeys: Int? = nil, retrySeconds: Double? = nil) throws -> ListPage {
        if let view = versionedView {
            return try listAsOf(view, prefix: prefix, delimiter: delimiter, continuationToken: continuationToken, startAfter: startAfter,
                                maxKeys: maxKeys, retrySeconds: retrySeconds)
        }
        let prefixText = String(decoding: prefix, as: UTF8.self)
        // Not valid UTF-8: S3 keys are UTF-8, so nothing can match; answer empty.
        if !prefixText.utf8.elementsEqual(prefix) { return ListPage() }
        var q: [(String, String)] = [("list-type", "2"), ("encoding-type", "url"), ("prefix", prefixText)]
        if let d = delimiter { q.append(("delimiter", d)) }
        if let t = continuationToken { q.append(("continuation-token", t)) }
        if let s = startAfter { q.append(("start-after", String(decoding: s, as: UTF8.self))) }
        if let m = maxKeys { q.append(("max-keys", String(m))) }
        let r = try send("ListObjectsV2", method: "GET", key: nil, query: q, retrySeconds: retrySeconds)
        guard let page = S3XML.parseListObjectsV2(r.body) else {
            throw S3Error(kind: .badResponse, status: r.status, code: "MalformedXML", message: "unreadable ListObjectsV2 response", operation: "ListObjectsV2")
        }
        return page
    }

    /// What an answer's headers say of the object. A size that no object can have (negative, past
    /// 1 PiB, not a number) is a bad answer: it never reaches the arithmetic of sizes and offsets.
    static func objectInfo(_ h: [String: String], operation: String) throws -> ObjectInfo {
        var sizeText = h["content-length"] ?? "0"
        if let cr = h["content-range"], let slash = cr.lastIndex(of: "/") { sizeText = String(cr[cr.index(after: slash)...]) }
        guard let size = ObjectSize.listed(sizeText) else {
            throw S3Error(kind: .badResponse, status: 0, code: "BadSize", message: "the answer gave the object a size of \"\(sizeText.prefix(40))\"", operation: operation)
        }
        var meta: [String: String] = [:]
        for (k, v) in h where k.hasPrefix("x-amz-meta-") { meta[String(k.dropFirst(11))] = v }
        var info = ObjectInfo(size: size, etag: h["etag"] ?? "", lastModified: h["last-modified"].flatMap(AmzDate.parseHTTPDate) ?? 0,
                              contentType: h["content-type"], metadata: meta)
        info.etagIsMD5 = !(h["x-amz-server-side-encryption"]?.hasPrefix("aws:kms") ?? false)
            && h["x-amz-server-side-encryption-customer-algorithm"] == nil && !info.etag.contains("-")
        if let crc = h["x-amz-checksum-crc32"], !crc.contains("-"), h["x-amz-checksum-type"] != "COMPOSITE" { info.checksumCRC32 = crc }
        info.storageClass = h["x-amz-storage-class"]
        info.restore = h["x-amz-restore"].map(RestoreStatus.parse) ?? .none
        return info
    }

    public func headObject(_ key: [UInt8]) throws -> ObjectInfo {
        let r = try send("HeadObject", method: "HEAD", key: key, query: try versionQuery(key, "HeadObject"))
        return try Self.objectInfo(r.headers, operation: "HeadObject")
    }

    /// GET streaming into `sink`; `range` is half-open [lower, upper).
    @discardableResult
    public func getObject(_ key: [UInt8], range: Range<Int64>? = nil, ifMatch: String? = nil, sink: @escaping BodySink) throws -> ObjectInfo {
        var h: [(String, String)] = []
        if let r = range { h.append(("Range", "bytes=\(r.lowerBound)-\(r.upperBound - 1)")) }
        if let e = ifMatch { h.append(("If-Match", e)) }
        let resp = try send("GetObject", method: "GET", key: key, query: try versionQuery(key, "GetObject"), headers: h, sink: sink)
        return try Self.objectInfo(resp.headers, operation: "GetObject")
    }

    /// `versionId` of the version an as-of view reads; none otherwise.
    private func versionQuery(_ key: [UInt8], _ operation: String) throws -> [(String, String)] {
        try versionToRead(key, operation: operation).map { [("versionId", $0)] } ?? []
    }

    /// GET with an open-ended range from `offset` (a streaming reader's request). From 0 it is
    /// a GET of the whole object that asks for its checksum, so the reader can verify it.
    @discardableResult
    public func getObject(_ key: [UInt8], from offset: Int64, ifMatch: String? = nil, sink: @escaping BodySink) throws -> ObjectInfo {
        var h: [(String, String)] = offset == 0 && config.verifyReads ? [("x-amz-checksum-mode", "ENABLED")] : [("Range", "bytes=\(offset)-")]
        if let e = ifMatch { h.append(("If-Match", e)) }
        let resp = try send("GetObject", method: "GET", key: key, query: try versionQuery(key, "GetObject"), headers: h, sink: sink)
        return try Self.objectInfo(resp.headers, operation: "GetObject")
    }

    public func getObjectBytes(_ key: [UInt8], range: Range<Int64>? = nil, ifMatch: String? = nil) throws -> (ObjectInfo, [UInt8]) {
        var out = [UInt8]()
        if let r = range { out.reserveCapacity(Int(r.count)) }
        let info = try getObject(key, range: range, ifMatch: ifMatch) { buf in out.append(contentsOf: buf); return true }
        return (info, out)
    }

    /// Whether new uploads carry checksums: asked for, and not refused by this store.
    public var sendsChecksums: Bool { config.uploadChecksums && !checksumsRefused.withLock { $0 } }

    /// Runs `attempt` with checksums if this client sends them. A store that answers a checksummed
    /// request with 400/501 InvalidArgument, InvalidRequest or NotImplemented, and then takes the
    /// same request without the checksum, is sent no more checksums (logged once). Any other
    /// outcome (the plain request fails too) throws as it would have.
    private func withChecksumFallback<T>(_ op: String, _ attempt: (Bool) throws -> T) throws -> T {
        guard sendsChecksums else { return try attempt(false) }
        do {
            return try attempt(true)
        } catch let e as S3Error where [400, 501].contains(e.status) && ["InvalidArgument", "InvalidRequest", "NotImplemented"].contains(e.code) {
            let result = try attempt(false)
            let first = checksumsRefused.withLock { refused -> Bool in defer { refused = true }; return !refused }
            if first { Log.warning("the store refused upload checksums (\(op): \(e.code)); uploads are sent without them") }
            return result
        }
    }

    /// PutObject; `condition` makes it conditional (412 PreconditionFailed when it does not hold).
    @discardableResult
    public func putObject(_ key: [UInt8], body: HTTPBody, contentType: String? = nil, metadata: [(String, String)] = [],
                          condition: WriteCondition? = nil, storageClass: String? = nil) throws -> String {
        var h: [(String, String)] = [("Content-Type", contentType ?? typeFor(key))]
        for (k, v) in metadata { h.append(("x-amz-meta-\(k)", v)) }
        let put = { (condition: [(String, String)]) throws -> String in
            try self.withChecksumFallback("PutObject") { checksummed in
                var headers = h + condition
                if checksummed { headers.append(("x-amz-checksum-crc32", try Self.crc32Header(body, "PutObject"))) }
                let r = try self.send("PutObject", method: "PUT", key: key, headers: headers, body: body, storageClass: storageClass)
                return r.headers["etag"] ?? ""
            }
        }
        switch condition {
        case .absent?: return try put([("If-None-Match", "*")])
        case .etag(let e)?:
            // Ceph RGW (16.2) compares a PUT's If-Match with the stored ETag as is, without its
            // quotes, so the quoted ETag S3 answers with never matches there (its GETs unquote).
            // A 412 to the quoted form is asked once more unquoted: a store that holds that ETag
            // takes it, and is sent the unquoted form from then on; any other 412 stands.
            let unquoted = e.count >= 2 && e.hasPrefix("\"") && e.hasSuffix("\"") ? String(e.dropFirst().dropLast()) : e
            if unquoted == e || ifMatchUnquoted.withLock({ $0 }) { return try put([("If-Match", unquoted)]) }
            do {
                return try put([("If-Match", e)])
            } catch let err as S3Error where err.kind == .preconditionFailed {
                let etag = try put([("If-Match", unquoted)])
                if !ifMatchUnquoted.withLock({ u -> Bool in defer { u = true }; return u }) {
                    Log.info("the store matches a PUT's If-Match only without the ETag's quotes (Ceph RGW): sent so from now on")
                }
                return etag
            }
        case nil: return try put([])
        }
    }

    /// Starts a multipart upload, checksummed (CRC-32, composite) when `checksummed` is asked and
    /// this client sends checksums.
    public func createMultipartUpload(_ key: [UInt8], contentType: String? = nil, metadata: [(String, String)] = [],
                                      checksummed: Bool = true, storageClass: String? = nil) throws -> MultipartUpload {
        let create = { (withChecksum: Bool) throws -> MultipartUpload in
            var h = [("Content-Type", contentType ?? self.typeFor(key))]
            for (k, v) in metadata { h.append(("x-amz-meta-\(k)", v)) }
            if withChecksum { h.append(("x-amz-checksum-algorithm", "CRC32")) }
            let r = try self.send("CreateMultipartUpload", method: "POST", key: key, query: [("uploads", "")], headers: h, storageClass: storageClass)
            guard let id = S3XML.firstValue(r.body, "UploadId"), !id.isEmpty else {
                throw S3Error(kind: .badResponse, status: r.status, code: "MalformedXML", message: "no UploadId", operation: "CreateMultipartUpload")
            }
            return MultipartUpload(id: id, checksummed: withChecksum)
        }
        return checksummed ? try withChecksumFallback("CreateMultipartUpload", create) : try create(false)
    }

    /// Uploads one part; a checksummed upload's part carries its CRC-32, returned for the completion.
    public func uploadPart(_ key: [UInt8], upload: MultipartUpload, partNumber: Int, body: HTTPBody) throws -> CompletedPart {
        let crc = upload.checksummed ? try Self.crc32Header(body, "UploadPart") : nil
        let h = crc.map { [("x-amz-checksum-crc32", $0)] } ?? []
        let r = try send("UploadPart", method: "PUT", key: key, query: [("partNumber", String(partNumber)), ("uploadId", upload.id)], headers: h, body: body)
        return CompletedPart(partNumber: partNumber, etag: r.headers["etag"] ?? "", checksumCRC32: crc)
    }

    private static func crc32Header(_ body: HTTPBody, _ op: String) throws -> String {
        guard let crc = CRC32.of(body) else {
            throw S3Error(kind: .transport, status: 0, code: "ReadFailed", message: "cannot read the data to upload: \(String(cString: strerror(errno)))", operation: op)
        }
        return CRC32.base64(crc)
    }

    public func uploadPartCopy(_ key: [UInt8], uploadId: String, partNumber: Int, source: [UInt8], range: Range<Int64>) throws -> String {
        let r = try send("UploadPartCopy", method: "PUT", key: key, query: [("partNumber", String(partNumber)), ("uploadId", uploadId)],
                         headers: [("x-amz-copy-source", copySource(source)),
                                   ("x-amz-copy-source-range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")],
                         stallSeconds: Self.serverWorkStallSeconds)
        if let err = S3XML.parseError(r.body) { throw S3Error.from(status: 500, body: err, operation: "UploadPartCopy", headers: r.headers) }
        return S3XML.firstValue(r.body, "ETag") ?? ""
    }

    @discardableResult
    public func completeMultipartUpload(_ key: [UInt8], uploadId: String, parts: [CompletedPart]) throws -> String {
        var xml = "<CompleteMultipartUpload>"
        for p in parts.sorted(by: { $0.partNumber < $1.partNumber }) {
            let crc = p.checksumCRC32.map { "<ChecksumCRC32>\($0)</ChecksumCRC32>" } ?? ""
            xml += "<Part><PartNumber>\(p.partNumber)</PartNumber><ETag>\(S3XML.escape(Array(p.etag.utf8)))</ETag>\(crc)</Part>"
        }
        xml += "</CompleteMultipartUpload>"
        let r = try send("CompleteMultipartUpload", method: "POST", key: key, query: [("uploadId", uploadId)],
                         headers: [("Content-Type", "application/xml")], body: .bytes(Array(xml.utf8)), stallSeconds: Self.serverWorkStallSeconds)
        // S3 may answer 200 and still fail: the error is in the body.
        if let err = S3XML.parseError(r.body) { throw S3Error.from(status: 500, body: err, operation: "CompleteMultipartUpload", headers: r.headers) }
        return S3XML.firstValue(r.body, "ETag") ?? ""
    }

    public func abortMultipartUpload(_ key: [UInt8], uploadId: String) throws {
        _ = try send("AbortMultipartUpload", method: "DELETE", key: key, query: [("uploadId", uploadId)], okStatuses: [404])
    }

    /// The Content-Type of an upload to `key`.
    func typeFor(_ key: [UInt8]) -> String { config.guessContentType ? ContentType.guess(key) : ContentType.fallback }

    func copySource(_ key: [UInt8]) -> String {
        URIEncoding.encode(Array(config.bucket.utf8) + [0x2F] + key, keepSlash: true)
    }

    /// Server-side copy; above 5 GiB (CopyObject's limit) as a multipart upload of UploadPartCopy parts.
    /// `metadata` nil keeps the source's user metadata; otherwise the copy gets exactly these
    /// headers (`x-amz-metadata-directive: REPLACE`), which is also how an object's metadata is
    /// changed in place. `sourceETag` makes the copy fail (412) if the source changed meanwhile.
    @discardableResult
    public func copyObject(from source: [UInt8], to dest: [UInt8], size: Int64? = nil, metadata: [(String, String)]? = nil,
                           contentType: String? = nil, sourceETag: String? = nil, storageClass: String? = nil, partSize: Int64 = 512 << 20,
                           multipartAbove: Int64 = S3Client.maxSinglePutSize) throws -> String {
        if let size, size > multipartAbove {
            // A multipart copy carries no metadata of its own: the new upload gets the source's (as read by the caller) or the new.
            let id = try createMultipartUpload(dest, contentType: contentType, metadata: metadata ?? [], checksummed: false, storageClass: storageClass).id
            do {
                var parts: [CompletedPart] = []
                var off: Int64 = 0
                var n = 1
                while off < size {
                    let end = min(size, off + partSize)
                    parts.append(CompletedPart(partNumber: n, etag: try uploadPartCopy(dest, uploadId: id, partNumber: n, source: source, range: off..<end)))
                    off = end
                    n += 1
                }
                return try completeMultipartUpload(dest, uploadId: id, parts: parts)
            } catch {
                try? abortMultipartUpload(dest, uploadId: id)
                throw error
            }
        }
        var h = [("x-amz-copy-source", copySource(source))]
        if let e = sourceETag, !e.isEmpty { h.append(("x-amz-copy-source-if-match", e)) }
        if let metadata {
            h.append(("x-amz-metadata-directive", "REPLACE"))
            h.append(("Content-Type", contentType ?? typeFor(dest)))
            for (k, v) in metadata { h.append(("x-amz-meta-\(k)", v)) }
        }
        let r = try send("CopyObject", method: "PUT", key: dest, headers: h, stallSeconds: Self.serverWorkStallSeconds, storageClass: storageClass)
        if let err = S3XML.parseError(r.body) { throw S3Error.from(status: 500, body: err, operation: "CopyObject", headers: r.headers) }
        return S3XML.firstValue(r.body, "ETag") ?? ""
    }

    /// Starts restoring an archived object's temporary copy for `days` at `tier` (RestoreObject).
    /// 202: started; 200: a copy is already there (its days are renewed); 409
    /// RestoreAlreadyInProgress is reported as such, not as a failure.
    public func restoreObject(_ key: [UInt8], days: Int, tier: String) throws -> RestoreStarted {
        let xml = "<RestoreRequest><Days>\(days)</Days><GlacierJobParameters><Tier>\(S3XML.escape(Array(tier.utf8)))</Tier></GlacierJobParameters></RestoreRequest>"
        let body = Array(xml.utf8)
        let r = try send("RestoreObject", method: "POST", key: key, query: [("restore", "")],
                         headers: [("Content-Type", "application/xml"), ("Content-MD5", Crypto.base64(Crypto.md5(body)))],
                         body: .bytes(body), okStatuses: [409])
        if r.status == 409 { return .alreadyInProgress }
        return r.status == 200 ? .alreadyRestored : .started
    }

    public func deleteObject(_ key: [UInt8]) throws {
        _ = try send("DeleteObject", method: "DELETE", key: key)
    }

    /// Deletes up to 1,000 keys per request; returns the keys S3 refused, with its error codes.
    @discardableResult
    public func deleteObjects(_ keys: [[UInt8]]) throws -> [(key: [UInt8], code: String)] {
        var failed: [(key: [UInt8], code: String)] = []
        var i = 0
        while i < keys.count {
            let batch = keys[i..<min(keys.count, i + 1000)]
            var xml = "<Delete><Quiet>true</Quiet>"
            for k in batch { xml += "<Object><Key>\(S3XML.escape(k))</Key></Object>" }
            xml += "</Delete>"
            let body = Array(xml.utf8)
            let r = try send("DeleteObjects", method: "POST", key: nil, query: [("delete", "")],
                             headers: [("Content-Type", "application/xml"), ("Content-MD5", Crypto.base64(Crypto.md5(body)))], body: .bytes(body))
            failed += S3XML.parseDeleteErrors(r.body)
            i += 1000
        }
        return failed
    }
}

public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

extension String {
    init(format2 v: Double) {
        let r = (v * 100).rounded() / 100
        self = String(r)
    }
}
