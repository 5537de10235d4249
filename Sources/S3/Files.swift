import Glibc

/// The whole text of a (small) file: a credentials or config file, a token, a journal; nil when
/// it cannot be opened.
public func readTextFile(_ path: String) -> String? {
    guard let fp = fopen(path, "r") else { return nil }
    defer { fclose(fp) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, fp)
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return String(decoding: out, as: UTF8.self)
}

/// The bytes that hex digits (either case) stand for; nil for an odd count or a non-digit.
public func bytesOfHex<S: StringProtocol>(_ hex: S) -> [UInt8]? {
    let digits = Array(hex.utf8)
    guard digits.count % 2 == 0 else { return nil }
    var out = [UInt8]()
    out.reserveCapacity(digits.count / 2)
    func value(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
    var i = 0
    while i < digits.count {
        // Digits only: UInt8("+f", radix: 16) would read a sign.
        guard let h = value(digits[i]), let l = value(digits[i + 1]) else { return nil }
        out.append(h << 4 | l)
        i += 2
    }
    return out
}
