import Glibc

/// An S3 failure, typed by the error code S3 returned (or the transport failure), with the errno
/// the filesystem layers answer with.
public struct S3Error: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        case noSuchKey, noSuchBucket, accessDenied, invalidAccessKeyId, signatureDoesNotMatch
        case slowDown, preconditionFailed, invalidRange, notFound, entityTooLarge, permanentRedirect
        case serverError, clientError, transport, badResponse
    }

    public var kind: Kind
    public var status: Int
    public var code: String
    public var message: String
    public var operation: String
    public var region: String?

    public init(kind: Kind, status: Int, code: String, message: String, operation: String, region: String? = nil) {
        self.kind = kind
        self.status = status
        self.code = code
        self.message = message
        self.operation = operation
        self.region = region
    }

    public static func from(status: Int, body: S3ErrorBody?, operation: String, headers: [String: String]) -> S3Error {
        let code = body?.code ?? ""
        let kind: Kind
        switch code {
        case "NoSuchKey": kind = .noSuchKey
        case "NoSuchBucket": kind = .noSuchBucket
        case "AccessDenied", "AllAccessDisabled", "AccountProblem": kind = .accessDenied
        case "InvalidAccessKeyId", "ExpiredToken", "InvalidToken", "TokenRefreshRequired": kind = .invalidAccessKeyId
        case "SignatureDoesNotMatch": kind = .signatureDoesNotMatch
        case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests": kind = .slowDown
        case "PreconditionFailed": kind = .preconditionFailed
        case "InvalidRange": kind = .invalidRange
        case "EntityTooLarge": kind = .entityTooLarge
        case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException": kind = .permanentRedirect
        default:
            switch status {
            case 301, 307: kind = .permanentRedirect
            case 403: kind = .accessDenied
            case 404: kind = .notFound
            case 412: kind = .preconditionFailed
            case 416: kind = .invalidRange
            case 429, 503: kind = .slowDown
            case 500...599: kind = .serverError
            default: kind = .clientError
            }
        }
        let region = body?.region ?? headers["x-amz-bucket-region"]
        return S3Error(kind: kind, status: status, code: code.isEmpty ? "HTTP\(status)" : code,
                       message: body?.message ?? "", operation: operation, region: region)
    }

    public static func transport(_ e: TransportError, operation: String) -> S3Error {
        S3Error(kind: .transport, status: 0, code: "Transport", message: e.description, operation: operation)
    }

    public var isRetryable: Bool {
        switch kind {
        case .slowDown, .serverError, .transport: return true
        // The bytes S3 received did not match their checksum: damaged on the way, worth sending again.
        default: return code == "BadDigest"
        }
    }

    public var errno: Int32 {
        switch kind {
        case .noSuchKey, .noSuchBucket, .notFound: return ENOENT
        case .accessDenied, .invalidAccessKeyId, .signatureDoesNotMatch: return EACCES
        // Throttling that outlasted the retry budget: an I/O error (EAGAIN at close means nothing).
        case .slowDown: return EIO
        case .preconditionFailed: return ESTALE
        case .invalidRange: return EINVAL
        case .entityTooLarge: return EFBIG
        case .transport: return code == "Transport" && message.contains("timed out") ? ETIMEDOUT : EIO
        default: return EIO
        }
    }

    public var description: String {
        let what = message.isEmpty ? code : "\(code): \(message)"
        return status > 0 ? "\(operation) failed with HTTP \(status) \(what)" : "\(operation) failed: \(message)"
    }
}
