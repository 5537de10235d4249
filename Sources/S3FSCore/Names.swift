/// How object keys map to names and back. One function builds the cache key for a name in a
/// directory, and both listings (priming) and lookups use it, so they cannot disagree.
public enum Names {
    public static let slash: UInt8 = 0x2F

    /// The cache key of `name` inside the directory whose key prefix is `dirPath` ("" or ending in "/").
    @inline(__always)
    public static func entryKey(dirPath: [UInt8], name: [UInt8]) -> [UInt8] { dirPath + name }

    /// The key prefix of a subdirectory.
    @inline(__always)
    public static func dirPath(parentPath: [UInt8], name: [UInt8]) -> [UInt8] { parentPath + name + [slash] }

    public enum Invalid: String {
        case empty = "empty name (from '//')", dot = "'.' or '..'", tooLong = "longer than 255 bytes", nul = "contains NUL"
        case reserved = "a directory named as s3mount's metadata index (.s3mount-meta)"
    }

    /// The name of each directory's metadata index object (Metadata/MetadataIndex.swift).
    static let indexName: [UInt8] = Array(".s3mount-meta".utf8)

    /// Why a listed prefix cannot be shown as a directory, or nil when it can: as for any name,
    /// and the index's name is no directory (a lookup would deny what the listing showed).
    static func directoryReason(_ name: [UInt8]) -> Invalid? {
        invalidReason(name) ?? (name == indexName ? .reserved : nil)
    }

    /// Why a listed name cannot be shown as a directory entry, or nil when it can.
    public static func invalidReason(_ name: [UInt8]) -> Invalid? {
        if name.isEmpty { return .empty }
        if name == [0x2E] || name == [0x2E, 0x2E] { return .dot }
        if name.count > 255 { return .tooLong }
        if name.contains(0) { return .nul }
        return nil
    }

    /// Normalises a mount prefix: no leading "/", exactly one trailing "/", or empty for the bucket root.
    public static func normalizePrefix(_ p: String) -> [UInt8] {
        var b = Array(p.utf8)
        while b.first == slash { b.removeFirst() }
        while b.last == slash { b.removeLast() }
        return b.isEmpty ? [] : b + [slash]
    }

    public static func display(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }
}
