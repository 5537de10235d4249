import CCurlShim
import Glibc

/// CRC-32 (zlib's, the one S3 verifies as `x-amz-checksum-crc32`) of request bodies: S3 rejects a
/// part or object whose bytes do not match it, so corruption between the spool and S3 fails the
/// upload instead of being stored.
public enum CRC32 {
    /// The CRC of `body`, nil if its file could not be read.
    public static func of(_ body: HTTPBody) -> UInt32? {
        switch body {
        case .none: return 0
        case .bytes(let b): return b.withUnsafeBytes { s3m_crc32(0, $0.baseAddress, $0.count) }
        case .file(let fd, let offset, let length):
            // Read, not mapped: a file truncated meanwhile gives a short read here, where a mapping
            // would fault (SIGBUS). The buffer stays in the CPU cache for the CRC.
            var buf = [UInt8](repeating: 0, count: 256 << 10)
            var crc: UInt32 = 0
            var done: Int64 = 0
            while done < length {
                let want = Int(min(Int64(buf.count), length - done))
                let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(offset + done)) }
                if n <= 0 { return nil }
                crc = buf.withUnsafeBytes { s3m_crc32(crc, $0.baseAddress, n) }
                done += Int64(n)
            }
            return crc
        }
    }

    /// The header form: base64 of the four bytes, big-endian.
    public static func base64(_ crc: UInt32) -> String {
        Crypto.base64([UInt8(crc >> 24), UInt8((crc >> 16) & 0xff), UInt8((crc >> 8) & 0xff), UInt8(crc & 0xff)])
    }
}
