import Foundation

/// How the bucket wants to be asked: encryption of new objects, their storage class, who pays,
/// whose bucket it must be. `S3Client.send` adds these headers to every request by its kind, so
/// that no call site can forget them (a metadata index write or a rename's copy included).
public struct RequestPolicy: Sendable, Equatable {
    /// Server-side encryption S3 manages the key of (`--sse`).
    public enum Encryption: Sendable, Equatable {
        /// SSE-S3 (`AES256`).
        case s3
        /// SSE-KMS with this key (nil: the account's aws/s3 key), and an S3 bucket key if asked
        /// (fewer KMS calls, so lower cost and less throttling).
        case kms(keyID: String?, bucketKey: Bool)
    }

    public var encryption: Encryption? = nil
    /// SSE-C: the customer's key, sent with every request that reads or writes object bytes.
    public var customerKey: CustomerKey? = nil
    /// Storage class of new objects (`--storage-class`); nil leaves it to the bucket (STANDARD).
    public var storageClass: String? = nil
    /// `x-amz-request-payer: requester` on every request (`--requester-pays`).
    public var requesterPays = false
    /// The account id the bucket must belong to (`--expected-bucket-owner`); S3 answers 403 otherwise.
    public var expectedBucketOwner: String? = nil

    public init() {}

    /// Requests that create an object's bytes: they carry the encryption and storage class.
    static let writesObject: Set<String> = ["PutObject", "CreateMultipartUpload", "CopyObject"]
    /// Requests whose object bytes SSE-C encrypts or decrypts: they carry the customer key.
    static let usesCustomerKey: Set<String> = ["GetObject", "HeadObject", "PutObject", "CreateMultipartUpload", "UploadPart",
                                               "UploadPartCopy", "CompleteMultipartUpload", "CopyObject"]
    /// Requests that read another object's bytes (the copy source, here always the same bucket).
    static let readsCopySource: Set<String> = ["CopyObject", "UploadPartCopy"]

    /// The headers a request of kind `operation` carries under this policy. `storageClass`
    /// overrides the configured class (a copy keeps its source's).
    public func headers(for operation: String, storageClass override: String? = nil) -> [(String, String)] {
        var h: [(String, String)] = []
        if requesterPays { h.append(("x-amz-request-payer", "requester")) }
        if let owner = expectedBucketOwner {
            h.append(("x-amz-expected-bucket-owner", owner))
            if Self.readsCopySource.contains(operation) { h.append(("x-amz-source-expected-bucket-owner", owner)) }
        }
        if Self.writesObject.contains(operation) {
            switch encryption {
            case .s3?: h.append(("x-amz-server-side-encryption", "AES256"))
            case .kms(let keyID, let bucketKey)?:
                h.append(("x-amz-server-side-encryption", "aws:kms"))
                if let keyID { h.append(("x-amz-server-side-encryption-aws-kms-key-id", keyID)) }
                if bucketKey { h.append(("x-amz-server-side-encryption-bucket-key-enabled", "true")) }
            case nil: break
            }
            if let sc = override ?? storageClass { h.append(("x-amz-storage-class", sc)) }
        }
        if let key = customerKey, Self.usesCustomerKey.contains(operation) {
            h += key.headers(prefix: "x-amz-server-side-encryption-customer-")
            if Self.readsCopySource.contains(operation) { h += key.headers(prefix: "x-amz-copy-source-server-side-encryption-customer-") }
        }
        return h
    }
}

/// An SSE-C key: 32 bytes, kept as the base64 S3 wants with its MD5. Its description never
/// shows the key, so no log line or error message can.
public struct CustomerKey: Sendable, Equatable, CustomStringConvertible {
    let keyBase64: String
    let md5Base64: String

    /// The 32 bytes of an AES-256 key, or nil for any other length.
    public init?(raw: [UInt8]) {
        guard raw.count == 32 else { return nil }
        keyBase64 = Crypto.base64(raw)
        md5Base64 = Crypto.base64(Crypto.md5(raw))
    }

    /// The key file's contents: the 32 raw bytes, or their base64 (44 characters) on one line.
    public init?(fileContents b: [UInt8]) {
        if let k = CustomerKey(raw: b) { self = k; return }
        var text = b
        while let last = text.last, last == 0x0A || last == 0x0D || last == 0x20 { text.removeLast() }
        guard text.count == 44, let data = Data(base64Encoded: String(decoding: text, as: UTF8.self)), let k = CustomerKey(raw: Array(data)) else { return nil }
        self = k
    }

    func headers(prefix: String) -> [(String, String)] {
        [(prefix + "algorithm", "AES256"), (prefix + "key", keyBase64), (prefix + "key-md5", md5Base64)]
    }

    public var description: String { "SSE-C key (MD5 \(md5Base64))" }
}
