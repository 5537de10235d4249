/// Sizes a number from outside (a listing, a HEAD, an event, a user's write or truncate) may have.
/// Every such number is checked against these before it meets arithmetic: Swift traps on overflow,
/// and a trap ends the daemon for every user of the mount.
public enum ObjectSize {
    /// The largest object S3 stores (5 TiB, what 10,000 parts reach): a write or truncate past it is
    /// refused with EFBIG before anything is spooled.
    public static let maxWritable: Int64 = 5 << 40
    /// The largest size a store's answer is believed for (1 PiB: 200 times S3's limit, room for any
    /// S3-compatible store, and far enough below Int64.max that offset + length sums cannot overflow).
    /// A listing, HEAD or event giving more (or a negative size) is a bad answer.
    public static let maxListed: Int64 = 1 << 50

    /// A size read from a store's answer, or nil when it is no size an object can have.
    public static func listed<S: StringProtocol>(_ text: S) -> Int64? {
        guard let v = Int64(text), (0...maxListed).contains(v) else { return nil }
        return v
    }

    /// `offset + length`, or nil when it passes `limit` (or Int64 itself).
    public static func end(offset: Int64, length: Int, limit: Int64 = maxWritable) -> Int64? {
        guard offset >= 0, length >= 0 else { return nil }
        let (end, overflow) = offset.addingReportingOverflow(Int64(length))
        return overflow || end > limit ? nil : end
    }
}
