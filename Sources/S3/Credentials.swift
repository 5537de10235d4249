import Glibc

public struct Credentials: Sendable, CustomStringConvertible {
    public var accessKeyId: String
    public var secretAccessKey: String
    public var sessionToken: String?
    /// Epoch seconds; nil = does not expire.
    public var expiration: Double?
    public var source: String

    public init(accessKeyId: String, secretAccessKey: String, sessionToken: String? = nil, expiration: Double? = nil, source: String) {
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
        self.source = source
    }

    /// Never prints the secret or the token.
    public var description: String {
        "Credentials(source: \(source), accessKeyId: \(accessKeyId.prefix(4))…, secret: <redacted>\(sessionToken == nil ? "" : ", token: <redacted>"))"
    }
}

public enum CredentialsError: Error, CustomStringConvertible {
    case notFound(String)
    case invalid(String)
    case fetchFailed(String)

    public var description: String {
        switch self {
        case .notFound(let m): return "no credentials found: \(m)"
        case .invalid(let m): return "invalid credentials: \(m)"
        case .fetchFailed(let m): return "could not fetch credentials: \(m)"
        }
    }
}

/// Fetches one set of credentials from one source.
public protocol CredentialsSource: Sendable {
    var name: String { get }
    func fetch() throws -> Credentials
}

/// Holds credentials from a source; refreshes temporary ones before they expire. While a refresh
/// runs, other requests keep signing with the current (still valid) credentials; only when they have
/// truly expired do callers wait for the refresh.
public final class CredentialsProvider: Sendable {
    public let source: (any CredentialsSource)?
    private struct State { var current: Credentials?; var refreshing = false }
    private let state = Locked(State())
    private let refreshDone = Condition()
    /// Refresh when fewer than this many seconds remain.
    let refreshWindow: Double

    /// `source == nil` means anonymous (unsigned) requests.
    public init(source: (any CredentialsSource)?, refreshWindow: Double = 300) {
        self.source = source
        self.refreshWindow = refreshWindow
    }

    public var isAnonymous: Bool { source == nil }

    func seed(_ c: Credentials) { state.withLock { $0.current = c } }

    public func credentials() throws -> Credentials? {
        guard let source else { return nil }
        let now = Double(time(nil))
        enum Action { case use(Credentials), refreshInBackground(Credentials), refreshNow, wait }
        let action: Action = state.withLock { s in
            if let c = s.current {
                guard let exp = c.expiration else { return .use(c) }
                if exp - now > refreshWindow { return .use(c) }
                if exp - now > 5 {
                    if s.refreshing { return .use(c) }
                    s.refreshing = true
                    return .refreshInBackground(c)
                }
            }
            if s.refreshing { return .wait }
            s.refreshing = true
            return .refreshNow
        }
        switch action {
        case .use(let c):
            return c
        case .refreshInBackground(let c):
            let t = Thread { [self] in _ = try? self.refresh(source) }
            t.start()
            return c
        case .refreshNow:
            return try refresh(source)
        case .wait:
            refreshDone.wait(until: { self.state.withLock { !$0.refreshing } })
            return try credentials()
        }
    }

    @discardableResult
    private func refresh(_ source: any CredentialsSource) throws -> Credentials {
        do {
            let c = try source.fetch()
            state.withLock { $0.current = c; $0.refreshing = false }
            refreshDone.broadcast()
            Log.debug("credentials refreshed from \(c.source)")
            return c
        } catch {
            let hadCredentials = state.withLock { s -> Bool in s.refreshing = false; return s.current != nil }
            refreshDone.broadcast()
            // The first fetch's failure is the caller's to report; a failed refresh is worth a warning.
            Log.shared.write(hadCredentials ? .warning : .debug, "credentials refresh from \(source.name) failed: \(error)")
            throw error
        }
    }
}

// MARK: - Sources

public struct StaticCredentialsSource: CredentialsSource {
    public let credentials: Credentials
    public var name: String { credentials.source }
    public init(_ c: Credentials) { credentials = c }
    public func fetch() throws -> Credentials { credentials }
}

/// Minimal INI reader for ~/.aws/credentials and ~/.aws/config.
public enum AWSConfigFile {
    public static func parse(_ text: String) -> [String: [String: String]] {
        var sections: [String: [String: String]] = [:]
        var current: String?
        for rawLine in text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let line = String(rawLine).trimmingSpaces()
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                let name = String(line.dropFirst().dropLast()).trimmingSpaces()
                current = String(name)
                if sections[current!] == nil { sections[current!] = [:] }
                continue
            }
            guard let cur = current, let eq = line.firstIndex(of: "=") else { continue }
            let k = String(line[..<eq]).trimmingSpaces().lowercased()
            let v = String(String(line[line.index(after: eq)...]).trimmingSpaces())
            sections[cur]![k] = v
        }
        return sections
    }

    public static func home() -> String { String(cString: getenv("HOME") ?? strdup("/root")) }

    public static func credentialsPath(_ env: [String: String]) -> String {
        env["AWS_SHARED_CREDENTIALS_FILE"] ?? home() + "/.aws/credentials"
    }
    public static func configPath(_ env: [String: String]) -> String {
        env["AWS_CONFIG_FILE"] ?? home() + "/.aws/config"
    }

    /// The profiles the two files name, sorted (for completing `--profile`).
    public static func profileNames(env: [String: String]) -> [String] {
        var names = Set<String>()
        for path in [credentialsPath(env), configPath(env)] {
            guard let text = readTextFile(path) else { continue }
            for section in parse(text).keys {
                let name = section.hasPrefix("profile ") ? String(section.dropFirst(8)).trimmingSpaces() : section
                if !name.isEmpty { names.insert(name) }
            }
        }
        return names.sorted()
    }

    /// The merged settings of a profile: config file's "[profile x]" (or "[default]"), then the
    /// credentials file's "[x]" on top.
    public static func profile(_ name: String, env: [String: String]) -> [String: String]? {
        var merged: [String: String]? = nil
        if let text = readTextFile(configPath(env)) {
            let s = parse(text)
            if let p = s[name == "default" ? "default" : "profile \(name)"] ?? (name == "default" ? s["profile default"] : nil) {
                merged = p
            }
        }
        if let text = readTextFile(credentialsPath(env)), let p = parse(text)[name] {
            merged = (merged ?? [:]).merging(p) { _, b in b }
        }
        return merged
    }
}

public struct ProfileCredentialsSource: CredentialsSource {
    public let profile: String
    public let env: [String: String]
    public var name: String { "profile \(profile)" }
    public init(profile: String, env: [String: String]) {
        self.profile = profile
        self.env = env
    }
    public func fetch() throws -> Credentials {
        guard let p = AWSConfigFile.profile(profile, env: env) else {
            throw CredentialsError.notFound("profile '\(profile)' not found in \(AWSConfigFile.credentialsPath(env)) or \(AWSConfigFile.configPath(env))")
        }
        guard let ak = p["aws_access_key_id"], let sk = p["aws_secret_access_key"], !ak.isEmpty, !sk.isEmpty else {
            throw CredentialsError.invalid("profile '\(profile)' has no aws_access_key_id/aws_secret_access_key")
        }
        return Credentials(accessKeyId: ak, secretAccessKey: sk, sessionToken: p["aws_session_token"], source: "profile \(profile)")
    }
}

/// AssumeRoleWithWebIdentity against STS (unsigned request; the token file is re-read each time).
public struct WebIdentityCredentialsSource: CredentialsSource {
    public let tokenFile: String
    public let roleArn: String
    public let sessionName: String
    public let stsEndpoint: String
    let transport: HTTPTransport
    public var name: String { "web identity" }

    public init(tokenFile: String, roleArn: String, sessionName: String, stsEndpoint: String, transport: HTTPTransport) {
        self.tokenFile = tokenFile
        self.roleArn = roleArn
        self.sessionName = sessionName
        self.stsEndpoint = stsEndpoint
        self.transport = transport
    }

    public func fetch() throws -> Credentials {
        guard let token = readTextFile(tokenFile) else {
            throw CredentialsError.fetchFailed("cannot read web identity token file \(tokenFile)")
        }
        let q: [(String, String)] = [("Action", "AssumeRoleWithWebIdentity"), ("Version", "2011-06-15"),
                                     ("RoleArn", roleArn), ("RoleSessionName", sessionName),
                                     ("WebIdentityToken", token.trimmingCharacters(in: " \t\r\n"))]
        let body = Array(q.map { "\(URIEncoding.encode($0.0))=\(URIEncoding.encode($0.1))" }.joined(separator: "&").utf8)
        let base = stsEndpoint.hasSuffix("/") ? stsEndpoint : stsEndpoint + "/"
        let req = HTTPRequest(method: "POST", url: base, headers: [("Content-Type", "application/x-www-form-urlencoded")], body: .bytes(body))
        let resp: HTTPResponse
        do { resp = try transport.perform(req) } catch { throw CredentialsError.fetchFailed("STS unreachable at \(stsEndpoint): \(error)") }
        guard resp.status == 200 else {
            let err = S3XML.parseError(resp.body)
            throw CredentialsError.fetchFailed("STS AssumeRoleWithWebIdentity returned HTTP \(resp.status) \(err?.code ?? "")")
        }
        guard let c = S3XML.parseSTSCredentials(resp.body) else {
            throw CredentialsError.fetchFailed("STS response had no credentials")
        }
        return Credentials(accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken,
                           expiration: c.expiration, source: "web identity")
    }
}

/// Credentials JSON as served by ECS/EKS container endpoints and EC2 IMDS.
enum CredentialsJSON {
    static func parse(_ body: [UInt8], source: String) throws -> Credentials {
        let obj = MiniJSON.parseObject(body)
        guard let ak = obj["AccessKeyId"], let sk = obj["SecretAccessKey"] else {
            throw CredentialsError.fetchFailed("\(source) returned no AccessKeyId/SecretAccessKey")
        }
        let exp = obj["Expiration"].flatMap { AmzDate.parseISO8601($0) }
        return Credentials(accessKeyId: ak, secretAccessKey: sk, sessionToken: obj["Token"], expiration: exp, source: source)
    }
}

public struct ContainerCredentialsSource: CredentialsSource {
    public let url: String
    public let authorization: String?
    let transport: HTTPTransport
    public var name: String { "container credentials" }

    public init(url: String, authorization: String?, transport: HTTPTransport) {
        self.url = url
        self.authorization = authorization
        self.transport = transport
    }

    /// Why credentials (and the authorization token sent to get them) may not be asked of `url`,
    /// or nil. As the AWS SDKs rule: HTTPS to any host, plain HTTP only to this host (loopback)
    /// or to the addresses ECS and EKS serve credentials on; never another scheme, user info,
    /// or a host name that could resolve anywhere.
    public static func urlProblem(_ url: String) -> String? {
        if let why = S3Client.endpointProblem(url.split(separator: "?", maxSplits: 1).first.map(String.init) ?? url) { return "\(why) (\(url.prefix(80)))" }
        guard let (scheme, hostPort, _) = S3Client.parseEndpoint(url) else { return "not an http(s) URL" }
        if scheme == "https" { return nil }
        var host = Substring(hostPort)
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
            host = host[host.index(after: host.startIndex)..<close]
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        let h = host.lowercased()
        let allowed = ["169.254.170.2", "169.254.170.23", "fd00:ec2::23", "::1", "localhost"]
        if allowed.contains(h) { return nil }
        let octets = h.split(separator: ".", omittingEmptySubsequences: false)
        if octets.count == 4, octets[0] == "127", octets.allSatisfy({ UInt8($0) != nil }) { return nil }
        return "plain http is allowed only to a loopback address or ECS/EKS's (169.254.170.2, 169.254.170.23, fd00:ec2::23); use https for \(h)"
    }

    public func fetch() throws -> Credentials {
        var headers: [(String, String)] = []
        if let a = authorization { headers.append(("Authorization", a)) }
        let resp: HTTPResponse
        do { resp = try transport.perform(HTTPRequest(method: "GET", url: url, headers: headers, timeoutMs: 5000)) } catch {
            throw CredentialsError.fetchFailed("container credentials endpoint \(url) unreachable: \(error)")
        }
        guard resp.status == 200 else { throw CredentialsError.fetchFailed("container credentials endpoint returned HTTP \(resp.status)") }
        return try CredentialsJSON.parse(resp.body, source: "container credentials")
    }
}

/// EC2 instance metadata, IMDSv2 (session token first).
public struct IMDSCredentialsSource: CredentialsSource {
    public let endpoint: String
    let transport: HTTPTransport
    public var name: String { "EC2 instance metadata" }

    public init(endpoint: String, transport: HTTPTransport) {
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.transport = transport
    }

    public func fetch() throws -> Credentials {
        do {
            let tok = try transport.perform(HTTPRequest(method: "PUT", url: endpoint + "/latest/api/token",
                                                        headers: [("X-aws-ec2-metadata-token-ttl-seconds", "21600")], timeoutMs: 2000))
            guard tok.status == 200 else { throw CredentialsError.fetchFailed("IMDS token request returned HTTP \(tok.status)") }
            let token = String(decoding: tok.body, as: UTF8.self)
            let h = [("X-aws-ec2-metadata-token", token)]
            let roles = try transport.perform(HTTPRequest(method: "GET", url: endpoint + "/latest/meta-data/iam/security-credentials/", headers: h, timeoutMs: 2000))
            guard roles.status == 200 else { throw CredentialsError.fetchFailed("IMDS has no instance role (HTTP \(roles.status))") }
            guard let role = String(decoding: roles.body, as: UTF8.self).split(separator: "\n").first.map({ String(String($0).trimmingSpaces()) }), !role.isEmpty else {
                throw CredentialsError.fetchFailed("IMDS lists no instance role")
            }
            let creds = try transport.perform(HTTPRequest(method: "GET", url: endpoint + "/latest/meta-data/iam/security-credentials/" + URIEncoding.encode(role), headers: h, timeoutMs: 2000))
            guard creds.status == 200 else { throw CredentialsError.fetchFailed("IMDS credentials returned HTTP \(creds.status)") }
            return try CredentialsJSON.parse(creds.body, source: "EC2 instance metadata")
        } catch let e as CredentialsError {
            throw e
        } catch {
            throw CredentialsError.fetchFailed("EC2 instance metadata at \(endpoint) unreachable: \(error)")
        }
    }
}

/// Picks the first source that has credentials, in the order the AWS SDKs use.
public enum CredentialsChain {
    public struct Options {
        public var profile: String?
        public var noSignRequest = false
        public var region: String?
        public init(profile: String? = nil, noSignRequest: Bool = false) {
            self.profile = profile
            self.noSignRequest = noSignRequest
        }
    }

    public static func resolve(_ o: Options, env: [String: String], transport: HTTPTransport) throws -> CredentialsProvider {
        if o.noSignRequest { return CredentialsProvider(source: nil) }
        // An explicit profile wins over the environment, as with the AWS CLI's --profile.
        if let p = o.profile {
            return try ready(ProfileCredentialsSource(profile: p, env: env))
        }
        if let ak = env["AWS_ACCESS_KEY_ID"], let sk = env["AWS_SECRET_ACCESS_KEY"], !ak.isEmpty, !sk.isEmpty {
            let tok = env["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            return CredentialsProvider(source: StaticCredentialsSource(Credentials(accessKeyId: ak, secretAccessKey: sk, sessionToken: tok, source: "environment")))
        }
        let profileName = env["AWS_PROFILE"] ?? "default"
        if let p = AWSConfigFile.profile(profileName, env: env), p["aws_access_key_id"] != nil {
            return try ready(ProfileCredentialsSource(profile: profileName, env: env))
        } else if env["AWS_PROFILE"] != nil {
            throw CredentialsError.notFound("profile '\(profileName)' (AWS_PROFILE) has no credentials")
        }
        if let tokenFile = env["AWS_WEB_IDENTITY_TOKEN_FILE"], let role = env["AWS_ROLE_ARN"] {
            let region = o.region ?? env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"]
            let sts = env["AWS_ENDPOINT_URL_STS"] ?? env["AWS_ENDPOINT_URL"]
                ?? (region.map { "https://sts.\($0).amazonaws.com" } ?? "https://sts.amazonaws.com")
            return try ready(WebIdentityCredentialsSource(tokenFile: tokenFile, roleArn: role,
                                                          sessionName: env["AWS_ROLE_SESSION_NAME"] ?? "s3mount-\(getpid())",
                                                          stsEndpoint: sts, transport: transport))
        }
        if let full = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] ?? env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"].map({ "http://169.254.170.2" + $0 }) {
            if let why = ContainerCredentialsSource.urlProblem(full) {
                throw CredentialsError.invalid("AWS_CONTAINER_CREDENTIALS_FULL_URI: \(why)")
            }
            var auth = env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
            if let f = env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"], let t = readTextFile(f) { auth = t.trimmingCharacters(in: " \t\r\n") }
            return try ready(ContainerCredentialsSource(url: full, authorization: auth, transport: transport))
        }
        if env["AWS_EC2_METADATA_DISABLED"]?.lowercased() != "true" {
            let ep = env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] ?? "http://169.254.169.254"
            let imds = IMDSCredentialsSource(endpoint: ep, transport: transport)
            if let c = try? imds.fetch() {
                let p = CredentialsProvider(source: imds)
                p.seed(c)
                return p
            }
        }
        throw CredentialsError.notFound("set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, use --profile, or --no-sign-request for a public bucket")
    }

    private static func ready(_ s: any CredentialsSource) throws -> CredentialsProvider {
        let p = CredentialsProvider(source: s)
        _ = try p.credentials()
        return p
    }
}
