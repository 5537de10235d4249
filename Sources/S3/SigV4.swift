/// AWS Signature Version 4, as S3 wants it: the path is encoded once (not normalised, not
/// double-encoded), every byte but A-Za-z0-9-._~ percent-encoded in upper-case hex.
public enum URIEncoding {
    private static let hex: [UInt8] = Array("0123456789ABCDEF".utf8)

    @inline(__always) static func isUnreserved(_ b: UInt8) -> Bool {
        (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
            || b == 0x2D || b == 0x2E || b == 0x5F || b == 0x7E
    }

    /// Percent-encodes raw bytes; `/` is kept when `keepSlash` (object key in a path).
    public static func encode(_ bytes: some Sequence<UInt8>, keepSlash: Bool = false) -> String {
        var out = [UInt8]()
        for b in bytes {
            if isUnreserved(b) || (keepSlash && b == 0x2F) {
                out.append(b)
            } else {
                out.append(0x25)
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func encode(_ string: String, keepSlash: Bool = false) -> String {
        encode(string.utf8, keepSlash: keepSlash)
    }

    /// Decodes %XX escapes into raw bytes (S3's `encoding-type=url` output). `+` is a literal plus.
    public static func decode(_ string: String) -> [UInt8] {
        decode(string, plusIsSpace: false, strict: false)!
    }

    /// Decodes a form-encoded value (S3 event keys: `+` is a space); nil for a broken escape.
    public static func decodeForm(_ string: String) -> [UInt8]? {
        decode(string, plusIsSpace: true, strict: true)
    }

    static func decode(_ string: String, plusIsSpace: Bool, strict: Bool) -> [UInt8]? {
        let src = Array(string.utf8)
        var out = [UInt8]()
        out.reserveCapacity(src.count)
        var i = 0
        func val(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        while i < src.count {
            if src[i] == 0x25, i + 2 < src.count, let h = val(src[i + 1]), let l = val(src[i + 2]) {
                out.append(h << 4 | l)
                i += 3
            } else if src[i] == 0x25 && strict {
                return nil
            } else {
                out.append(plusIsSpace && src[i] == 0x2B ? 0x20 : src[i])
                i += 1
            }
        }
        return out
    }
}

public struct SigningRequest {
    public var method: String
    /// Already URI-encoded canonical path, starting with "/".
    public var encodedPath: String
    /// Query parameters, each name and value already URI-encoded; sorted by the signer.
    public var query: [(String, String)]
    /// Headers to sign (names any case). Must include host.
    public var headers: [(String, String)]
    public var payloadHash: String

    public init(method: String, encodedPath: String, query: [(String, String)], headers: [(String, String)], payloadHash: String) {
        self.method = method
        self.encodedPath = encodedPath
        self.query = query
        self.headers = headers
        self.payloadHash = payloadHash
    }
}

public struct SigV4Signer {
    public var region: String
    public var service: String

    public init(region: String, service: String = "s3") {
        self.region = region
        self.service = service
    }

    /// Encodes raw query parameters for `SigningRequest.query`.
    public static func encodeQuery(_ raw: [(String, String)]) -> [(String, String)] {
        raw.map { (URIEncoding.encode($0.0), URIEncoding.encode($0.1)) }
    }

    /// Sorted by encoded name (then value), joined: both the signed form and the URL's query.
    public static func canonicalQuery(_ encoded: [(String, String)]) -> String {
        encoded
            .sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    static func trimValue(_ v: String) -> String {
        // Trim and collapse sequential spaces, as SigV4 requires.
        var out = ""
        var lastSpace = false
        for ch in v.trimmingSpaces() {
            if ch == " " {
                if !lastSpace { out.append(ch) }
                lastSpace = true
            } else {
                out.append(ch)
                lastSpace = false
            }
        }
        return out
    }

    public func canonicalRequest(_ r: SigningRequest) -> (canonical: String, signedHeaders: String) {
        var merged: [String: [String]] = [:]
        for (k, v) in r.headers { merged[k.lowercased(), default: []].append(Self.trimValue(v)) }
        let names = merged.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        let signed = names.joined(separator: ";")
        let canonical = [r.method, r.encodedPath, Self.canonicalQuery(r.query), canonicalHeaders, signed, r.payloadHash]
            .joined(separator: "\n")
        return (canonical, signed)
    }

    /// Returns the Authorization header value. `amzDate` is YYYYMMDD'T'HHMMSS'Z'.
    public func authorization(_ r: SigningRequest, amzDate: String, credentials: Credentials) -> String {
        let (canonical, signed) = canonicalRequest(r)
        let date = String(amzDate.prefix(8))
        let scope = "\(date)/\(region)/\(service)/aws4_request"
        let stringToSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(hexString(Crypto.sha256(canonical)))"
        var key = Crypto.hmacSHA256(key: Array("AWS4\(credentials.secretAccessKey)".utf8), data: Array(date.utf8))
        key = Crypto.hmacSHA256(key: key, data: Array(region.utf8))
        key = Crypto.hmacSHA256(key: key, data: Array(service.utf8))
        key = Crypto.hmacSHA256(key: key, data: Array("aws4_request".utf8))
        let signature = hexString(Crypto.hmacSHA256(key: key, data: Array(stringToSign.utf8)))
        return "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyId)/\(scope), SignedHeaders=\(signed), Signature=\(signature)"
    }
}


import Glibc

public enum AmzDate {
    /// (x-amz-date "YYYYMMDDTHHMMSSZ") for now, in UTC.
    public static func now() -> String { format(time(nil)) }

    public static func format(_ t: time_t) -> String {
        var tt = t
        var tmv = tm()
        gmtime_r(&tt, &tmv)
        func p(_ v: Int32, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return p(tmv.tm_year + 1900, 4) + p(tmv.tm_mon + 1, 2) + p(tmv.tm_mday, 2) + "T" + p(tmv.tm_hour, 2) + p(tmv.tm_min, 2) + p(tmv.tm_sec, 2) + "Z"
    }

    /// Parses ISO 8601 "2024-01-02T03:04:05.000Z" (S3 LastModified, credential Expiration) to epoch seconds.
    public static func parseISO8601(_ s: String) -> Double? {
        let b = Array(s.utf8)
        guard b.count >= 19 else { return nil }
        func num(_ from: Int, _ len: Int) -> Int32? {
            var v: Int32 = 0
            for i in from..<(from + len) {
                let c = b[i]
                guard c >= 0x30 && c <= 0x39 else { return nil }
                v = v * 10 + Int32(c - 0x30)
            }
            return v
        }
        guard let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2), let se = num(17, 2) else { return nil }
        var tmv = tm()
        tmv.tm_year = y - 1900
        tmv.tm_mon = mo - 1
        tmv.tm_mday = d
        tmv.tm_hour = h
        tmv.tm_min = mi
        tmv.tm_sec = se
        var frac = 0.0
        if b.count > 20, b[19] == 0x2E {
            var scale = 0.1
            var i = 20
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                frac += Double(b[i] - 0x30) * scale
                scale /= 10
                i += 1
            }
        }
        return Double(timegm(&tmv)) + frac
    }

    /// Parses an RFC 7231 HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT") as sent in Last-Modified.
    public static func parseHTTPDate(_ s: String) -> Double? {
        let parts = s.split(separator: " ")
        // The year as tm wants it (years since 1900), subtracted in Int: "-2147483648" must not trap.
        guard parts.count >= 5, let day = Int32(parts[1]), let year = Int32(parts[3]).flatMap({ Int32(exactly: Int($0) - 1900) }) else { return nil }
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        guard let mon = months.firstIndex(of: String(parts[2])) else { return nil }
        let hms = parts[4].split(separator: ":").compactMap { Int32($0) }
        guard hms.count == 3 else { return nil }
        var tmv = tm()
        tmv.tm_year = year
        tmv.tm_mon = Int32(mon)
        tmv.tm_mday = day
        tmv.tm_hour = hms[0]
        tmv.tm_min = hms[1]
        tmv.tm_sec = hms[2]
        return Double(timegm(&tmv))
    }
}
