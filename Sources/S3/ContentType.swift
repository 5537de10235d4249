import Glibc

/// The Content-Type an upload gets, guessed from the key's extension as s3fs, rclone and the AWS
/// CLI do: from `/etc/mime.types` when the machine has it, else from a small built-in table;
/// `application/octet-stream` when nothing matches. Browsers and CDNs serving the bucket read it.
public enum ContentType {
    public static let fallback = "application/octet-stream"

    /// Extensions of the types met most, used where /etc/mime.types is missing or lacks one.
    static let builtIn: [String: String] = [
        "txt": "text/plain", "text": "text/plain", "log": "text/plain", "md": "text/markdown", "csv": "text/csv",
        "html": "text/html", "htm": "text/html", "css": "text/css", "js": "text/javascript", "mjs": "text/javascript",
        "json": "application/json", "xml": "application/xml", "yaml": "application/yaml", "yml": "application/yaml",
        "pdf": "application/pdf", "zip": "application/zip", "gz": "application/gzip", "tgz": "application/gzip",
        "tar": "application/x-tar", "bz2": "application/x-bzip2", "xz": "application/x-xz", "7z": "application/x-7z-compressed",
        "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp",
        "svg": "image/svg+xml", "ico": "image/vnd.microsoft.icon", "bmp": "image/bmp", "tif": "image/tiff", "tiff": "image/tiff",
        "mp3": "audio/mpeg", "wav": "audio/wav", "ogg": "audio/ogg", "flac": "audio/flac", "mp4": "video/mp4",
        "webm": "video/webm", "mov": "video/quicktime", "mkv": "video/x-matroska", "wasm": "application/wasm",
        "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf", "otf": "font/otf",
        "sh": "application/x-sh", "py": "text/x-python", "c": "text/x-csrc", "h": "text/x-chdr", "swift": "text/x-swift",
        "parquet": "application/vnd.apache.parquet",
    ]

    private static let table: [String: String] = {
        var t = builtIn
        for (ext, type) in readMimeTypes("/etc/mime.types") { t[ext] = type }
        return t
    }()

    /// `/etc/mime.types`: "type ext ext …" per line, `#` comments.
    static func readMimeTypes(_ path: String) -> [(String, String)] {
        guard let f = fopen(path, "r") else { return [] }
        defer { fclose(f) }
        var out: [(String, String)] = []
        var line: UnsafeMutablePointer<CChar>? = nil
        var cap = 0
        while getline(&line, &cap, f) > 0 {
            let text = String(cString: line!)
            if text.hasPrefix("#") { continue }
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" })
            guard fields.count > 1, fields[0].contains("/") else { continue }
            for ext in fields.dropFirst() { out.append((ext.lowercased(), String(fields[0]))) }
        }
        free(line)
        return out
    }

    /// The type for a key: by its last extension (`a.tar.gz` → gzip); directory markers and keys
    /// without one get the fallback.
    public static func guess(_ key: [UInt8]) -> String {
        guard key.last != 0x2F else { return fallback }
        let name = key.split(separator: 0x2F, omittingEmptySubsequences: false).last ?? []
        guard let dot = name.lastIndex(of: 0x2E), dot != name.startIndex, dot < name.endIndex - 1 else { return fallback }
        let ext = String(decoding: name[(dot + 1)...], as: UTF8.self).lowercased()
        return table[ext] ?? fallback
    }
}
