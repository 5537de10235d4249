/// Reads the top-level string (and number) members of a flat JSON object, which is all the
/// credential endpoints return. Anything malformed yields what was read so far, never a crash.
enum MiniJSON {
    static func parseObject(_ b: [UInt8]) -> [String: String] {
        var out: [String: String] = [:]
        var i = 0
        func skipWS() { while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 } }
        func string() -> String? {
            guard i < b.count, b[i] == 0x22 else { return nil }
            i += 1
            var s = [UInt8]()
            while i < b.count, b[i] != 0x22 {
                if b[i] == 0x5C, i + 1 < b.count {
                    i += 1
                    switch b[i] {
                    case 0x6E: s.append(0x0A)
                    case 0x74: s.append(0x09)
                    case 0x72: s.append(0x0D)
                    case 0x75:
                        if i + 4 < b.count, let v = UInt32(String(decoding: b[(i + 1)...(i + 4)], as: UTF8.self), radix: 16), let u = Unicode.Scalar(v) {
                            s.append(contentsOf: Array(String(Character(u)).utf8))
                            i += 4
                        }
                    default: s.append(b[i])
                    }
                } else {
                    s.append(b[i])
                }
                i += 1
            }
            i += 1
            return String(decoding: s, as: UTF8.self)
        }
        skipWS()
        guard i < b.count, b[i] == 0x7B else { return out }
        i += 1
        while i < b.count {
            skipWS()
            guard let k = string() else { break }
            skipWS()
            guard i < b.count, b[i] == 0x3A else { break }
            i += 1
            skipWS()
            if i < b.count, b[i] == 0x22 {
                out[k] = string()
            } else {
                let start = i
                var depth = 0
                while i < b.count {
                    let c = b[i]
                    if c == 0x7B || c == 0x5B { depth += 1 }
                    if c == 0x7D || c == 0x5D { if depth == 0 { break }; depth -= 1 }
                    if c == 0x2C && depth == 0 { break }
                    i += 1
                }
                out[k] = String(decoding: b[start..<i], as: UTF8.self).trimmingSpaces().description
            }
            skipWS()
            if i < b.count, b[i] == 0x2C { i += 1; continue }
            break
        }
        return out
    }
}
