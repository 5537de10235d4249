import CCurlShim
import Glibc

public enum HTTPBody: Sendable {
    case none
    case bytes([UInt8])
    /// A region of an open file, read with pread as curl asks: no copy of the whole body.
    case file(fd: Int32, offset: Int64, length: Int64)

    var length: Int64 {
        switch self {
        case .none: return 0
        case .bytes(let b): return Int64(b.count)
        case .file(_, _, let l): return l
        }
    }
}

public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: HTTPBody
    public var timeoutMs: Int?
    /// Seconds below the low-speed limit before the transfer is abandoned (nil: the transport's).
    public var stallSeconds: Int? = nil

    public init(method: String, url: String, headers: [(String, String)] = [], body: HTTPBody = .none, timeoutMs: Int? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeoutMs = timeoutMs
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    /// Lower-cased header names.
    public var headers: [String: String]
    /// The body, unless a sink consumed it (2xx with a sink).
    public var body: [UInt8]
    public var bytesReceived: Int64
}

public struct TransportError: Error, CustomStringConvertible, Sendable {
    public var curlCode: Int
    public var message: String
    public var description: String { "\(message) (curl \(curlCode))" }
    /// Connection reset, timeouts, refused connections and empty replies are worth a retry.
    /// 65: a body that could not be rewound for a resend (sent again from the start by the retry).
    public var isRetryable: Bool { [7, 18, 28, 52, 55, 56, 65, 35, 16, 92].contains(curlCode) }
    public var abortedBySink: Bool { curlCode == 23 }
}

/// Bytes of a successful response body as they arrive; return false to stop the transfer.
public typealias BodySink = (UnsafeRawBufferPointer) -> Bool

public protocol HTTPTransport: Sendable {
    func perform(_ request: HTTPRequest, sink: BodySink?) throws -> HTTPResponse
}

extension HTTPTransport {
    public func perform(_ request: HTTPRequest) throws -> HTTPResponse { try perform(request, sink: nil) }
}

/// libcurl easy handles in a pool: a request takes an idle handle (which keeps its live
/// connections), runs on the caller's thread, and returns it. No handle is used by two threads at
/// once, so connection reuse needs no share handle and no locking inside curl.
public final class CurlTransport: HTTPTransport, @unchecked Sendable {
    public struct Options: Sendable {
        public var connectTimeoutMs = 5_000
        /// A transfer below `lowSpeedLimit` bytes/s for this long is abandoned and retried on a
        /// new connection: a server that stalls, trickles or never answers costs seconds, not
        /// minutes (this also bounds the wait for the first byte of an answer).
        public var stallTimeoutSeconds = 10
        public var lowSpeedLimit = 1024
        public var maxIdleHandles = 64
        /// A CA bundle for https endpoints with a private CA (AWS_CA_BUNDLE).
        public var caBundle: String? = nil
        public init() {}
    }

    private let idle = Locked<[UnsafeMutableRawPointer]>([])
    private let options: Options

    private static let globalInit: Bool = { s3m_curl_global_init() == 0 }()

    /// Call once from the main thread before any other thread exists.
    public static func globalInitialize() { _ = globalInit }

    public init(options: Options = Options()) {
        _ = Self.globalInit
        self.options = options
    }

    deinit {
        for h in idle.withLock({ $0 }) { curl_easy_cleanup(h) }
    }

    private func checkout() -> UnsafeMutableRawPointer {
        if let h = idle.withLock({ $0.popLast() }) { return h }
        return curl_easy_init()!
    }

    private func checkin(_ h: UnsafeMutableRawPointer) {
        let extra: UnsafeMutableRawPointer? = idle.withLock { list in
            if list.count >= options.maxIdleHandles { return h }
            list.append(h)
            return nil
        }
        if let e = extra { curl_easy_cleanup(e) }
    }

    final class Transfer {
        let handle: UnsafeMutableRawPointer
        let body: HTTPBody
        var bodyOffset: Int64 = 0
        var headers: [String: String] = [:]
        var responseBody: [UInt8] = []
        var received: Int64 = 0
        let sink: BodySink?
        var statusForSink: Int = -1

        init(handle: UnsafeMutableRawPointer, body: HTTPBody, sink: BodySink?) {
            self.handle = handle
            self.body = body
            self.sink = sink
        }
    }

    public func perform(_ request: HTTPRequest, sink: BodySink?) throws -> HTTPResponse {
        let h = checkout()
        var reusable = true
        defer { if reusable { checkin(h) } else { curl_easy_cleanup(h) } }
        curl_easy_reset(h)
        let t = Transfer(handle: h, body: request.body, sink: sink)
        let ctx = Unmanaged.passUnretained(t).toOpaque()

        _ = request.url.withCString { s3m_easy_setopt_string(h, S3M_OPT_URL, $0) }
        s3m_easy_setopt_long(h, S3M_OPT_NOSIGNAL, 1)
        s3m_easy_setopt_long(h, S3M_OPT_PATH_AS_IS, 1)
        // Whatever URL an endpoint, a queue or a credentials variable names: HTTP(S) only (no
        // file://, gopher://, ... reached through libcurl's other protocols).
        _ = s3m_easy_setopt_string(h, S3M_OPT_PROTOCOLS_STR, "http,https")
        _ = s3m_easy_setopt_string(h, S3M_OPT_REDIR_PROTOCOLS_STR, "http,https")
        s3m_easy_setopt_long(h, S3M_OPT_TCP_KEEPALIVE, 1)
        s3m_easy_setopt_long(h, S3M_OPT_CONNECTTIMEOUT_MS, request.timeoutMs.map { min($0, options.connectTimeoutMs) } ?? options.connectTimeoutMs)
        s3m_easy_setopt_long(h, S3M_OPT_LOW_SPEED_LIMIT, options.lowSpeedLimit)
        s3m_easy_setopt_long(h, S3M_OPT_LOW_SPEED_TIME, request.stallSeconds ?? options.stallTimeoutSeconds)
        s3m_easy_setopt_long(h, S3M_OPT_BUFFERSIZE, 256 * 1024)
        if let to = request.timeoutMs { s3m_easy_setopt_long(h, S3M_OPT_TIMEOUT_MS, to) }
        if let ca = options.caBundle { _ = ca.withCString { s3m_easy_setopt_string(h, S3M_OPT_CAINFO, $0) } }

        switch request.method {
        case "GET": s3m_easy_setopt_long(h, S3M_OPT_HTTPGET, 1)
        case "HEAD": s3m_easy_setopt_long(h, S3M_OPT_NOBODY, 1)
        case "PUT":
            s3m_easy_setopt_long(h, S3M_OPT_UPLOAD, 1)
            s3m_easy_setopt_off(h, S3M_OPT_INFILESIZE_LARGE, curl_off_t(request.body.length))
            s3m_easy_setopt_long(h, S3M_OPT_UPLOAD_BUFFERSIZE, 512 * 1024)
        case "POST":
            s3m_easy_setopt_long(h, S3M_OPT_POST, 1)
            s3m_easy_setopt_off(h, S3M_OPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.length))
        default:
            _ = request.method.withCString { s3m_easy_setopt_string(h, S3M_OPT_CUSTOMREQUEST, $0) }
        }
        if request.method == "PUT" || request.method == "POST" {
            s3m_easy_setopt_callback(h, S3M_OPT_READFUNCTION, { buf, size, n, ud in
                let t = Unmanaged<Transfer>.fromOpaque(ud!).takeUnretainedValue()
                let cap = size * n
                let remaining = t.body.length - t.bodyOffset
                let want = Int(min(Int64(cap), remaining))
                if want <= 0 { return 0 }
                switch t.body {
                case .none: return 0
                case .bytes(let b):
                    b.withUnsafeBytes { src in
                        UnsafeMutableRawPointer(buf!).copyMemory(from: src.baseAddress! + Int(t.bodyOffset), byteCount: want)
                    }
                    t.bodyOffset += Int64(want)
                    return want
                case .file(let fd, let off, _):
                    let r = pread(fd, buf, want, off_t(off + t.bodyOffset))
                    if r <= 0 { return S3M_READFUNC_ABORT }
                    t.bodyOffset += Int64(r)
                    return r
                }
            })
            s3m_easy_setopt_pointer(h, S3M_OPT_READDATA, ctx)
        }

        var slist: UnsafeMutablePointer<curl_slist>? = nil
        for (k, v) in request.headers { slist = curl_slist_append(slist, "\(k): \(v)") }
        // No "Expect: 100-continue" round trip; S3 answers errors on the body anyway.
        slist = curl_slist_append(slist, "Expect:")
        if request.method == "PUT" || request.method == "POST" { slist = curl_slist_append(slist, "Transfer-Encoding:") }
        defer { curl_slist_free_all(slist) }
        s3m_easy_setopt_pointer(h, S3M_OPT_HTTPHEADER, slist)

        s3m_easy_setopt_callback(h, S3M_OPT_HEADERFUNCTION, { buf, size, n, ud in
            let t = Unmanaged<Transfer>.fromOpaque(ud!).takeUnretainedValue()
            let len = size * n
            let line = String(decoding: UnsafeRawBufferPointer(start: buf, count: len), as: UTF8.self)
            if line.hasPrefix("HTTP/") {
                t.headers = [:] // a new response (after 100 Continue or a redirect)
            } else if let colon = line.firstIndex(of: ":") {
                let name = line[..<colon].lowercased()
                let value = String(line[line.index(after: colon)...]).trimmingCharacters(in: " \r\n\t")
                t.headers[name] = value
            }
            return len
        })
        s3m_easy_setopt_pointer(h, S3M_OPT_HEADERDATA, ctx)
        s3m_easy_setopt_callback(h, S3M_OPT_WRITEFUNCTION, { buf, size, n, ud in
            let t = Unmanaged<Transfer>.fromOpaque(ud!).takeUnretainedValue()
            let len = size * n
            t.received += Int64(len)
            if let sink = t.sink {
                if t.statusForSink < 0 { t.statusForSink = s3m_easy_response_code(t.handle) }
                if t.statusForSink >= 200 && t.statusForSink < 300 {
                    return sink(UnsafeRawBufferPointer(start: buf, count: len)) ? len : 0
                }
            }
            if t.responseBody.count < 16 << 20 || t.sink == nil {
                t.responseBody.append(contentsOf: UnsafeRawBufferPointer(start: buf, count: len))
            }
            return len
        })
        s3m_easy_setopt_pointer(h, S3M_OPT_WRITEDATA, ctx)

        var errbuf = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        let code = errbuf.withUnsafeMutableBufferPointer { eb -> CURLcode in
            s3m_easy_setopt_pointer(h, S3M_OPT_ERRORBUFFER, eb.baseAddress)
            let c = withExtendedLifetime(t) { curl_easy_perform(h) }
            s3m_easy_setopt_pointer(h, S3M_OPT_ERRORBUFFER, nil)
            return c
        }
        if code != CURLE_OK {
            reusable = false
            var msg = String(cString: errbuf)
            if msg.isEmpty { msg = String(cString: curl_easy_strerror(code)) }
            throw TransportError(curlCode: Int(code.rawValue), message: msg)
        }
        return HTTPResponse(status: Int(s3m_easy_response_code(h)), headers: t.headers, body: t.responseBody, bytesReceived: t.received)
    }
}

/// The project's one trimming helper: header values, AWS config lines, tokens.
extension StringProtocol {
    /// Trims ASCII bytes in `set` from both ends (byte-wise: "\r\n" is one Character in Swift).
    public func trimmingCharacters(in set: String) -> String {
        let drop = Set(set.utf8)
        var b = Array(self.utf8)[...]
        while let f = b.first, drop.contains(f) { b = b.dropFirst() }
        while let l = b.last, drop.contains(l) { b = b.dropLast() }
        return String(decoding: b, as: UTF8.self)
    }

    /// Trims spaces, tabs and line ends.
    public func trimmingSpaces() -> String { trimmingCharacters(in: " \t\r\n") }
}
