/// Decides the batched deletes of a burst of unlinks (`rm -r`), with no I/O: which keys wait for
/// a DeleteObjects, which batch is on the wire, when the next one is due, and whether an unlink
/// may be answered before S3 has deleted its key. The caller sends the batches (`DeleteQueue`)
/// and tells the outcome back; times are monotonic seconds given by the caller.
///
/// An unlink is answered at once only during a burst: a delete succeeded, and since then unlinks
/// have come no further apart than `burstWindow`. The first unlink of a burst is sent alone and
/// answered with S3's reply, so a bucket that refuses deletes says so at once; a batch that
/// deletes nothing ends the burst.
struct DeleteBatch {
    /// DeleteObjects takes at most 1,000 keys.
    static let maxKeys = 1000

    struct Timing {
        /// A batch goes once no unlink came for this long ...
        var idle = 0.02
        /// ... or once its oldest key has waited this long.
        var maxAge = 0.1
        /// A burst lasts while unlinks come no further apart than this (counted from the delete
        /// that began it, or the last unlink queued).
        var burstWindow = 0.2
        /// How long keys deleted by a batch are remembered: a listing that began before the batch
        /// landed must not bring them back.
        var settle = 2.0
    }

    let timing: Timing
    /// Keys waiting for a batch, in the order of their unlinks; a key written again meanwhile is
    /// only taken out of `pendingKeys` (skipped when the batch is made).
    private var order: [[UInt8]] = []
    private(set) var pendingKeys = Set<[UInt8]>()
    private var firstPendingAt = 0.0
    private var lastQueuedAt = 0.0
    /// The batch on the wire (one at a time), and those of its keys written again since: an upload
    /// of one waits for the batch, and its delete no longer hides the name.
    private(set) var inFlight: Set<[UInt8]>? = nil
    private var rewritten = Set<[UInt8]>()
    private var lastSuccess: Double? = nil
    /// Deleted by a batch, and when.
    private var settling: [[UInt8]: Double] = [:]

    /// Unlinks answered at once and queued, batches sent, keys a batch failed to delete.
    private(set) var batched = 0, batches = 0, failed = 0

    init(timing: Timing = Timing()) { self.timing = timing }

    var pendingCount: Int { pendingKeys.count + (inFlight?.count ?? 0) - rewritten.count }

    /// Whether an unlink at `t` may be answered now and its key queued: a burst is on (the bucket
    /// took a delete from this mount, and unlinks have kept coming since).
    func answersAtOnce(at t: Double) -> Bool {
        guard let last = lastSuccess else { return false }
        return t - max(last, lastQueuedAt) < timing.burstWindow
    }

    /// A delete sent alone succeeded at `t`.
    mutating func succeeded(at t: Double) { lastSuccess = max(lastSuccess ?? t, t) }

    /// Queues an unlinked key for the next batch.
    mutating func queue(_ key: [UInt8], at t: Double) {
        settling[key] = nil
        if pendingKeys.insert(key).inserted {
            if pendingKeys.count == 1 { firstPendingAt = t }
            order.append(key)
            batched += 1
        }
        lastQueuedAt = t
    }

    /// Whether a batch should be sent at `t` (`flush`: someone waits for the pending deletes).
    func isDue(at t: Double, flush: Bool = false) -> Bool {
        guard inFlight == nil, !pendingKeys.isEmpty else { return false }
        return flush || pendingKeys.count >= Self.maxKeys || t - lastQueuedAt >= timing.idle || t - firstPendingAt >= timing.maxAge
    }

    /// When the pending keys become due if nothing else happens (nil: nothing pending, or a batch
    /// on the wire, whose end is the next event).
    var deadline: Double? {
        guard inFlight == nil, !pendingKeys.isEmpty else { return nil }
        return min(lastQueuedAt + timing.idle, firstPendingAt + timing.maxAge)
    }

    /// The next batch, now on the wire: up to 1,000 keys in the order of their unlinks.
    mutating func take(at t: Double) -> [[UInt8]] {
        precondition(inFlight == nil, "one batch at a time")
        var keys: [[UInt8]] = []
        var used = 0
        for k in order {
            used += 1
            guard pendingKeys.remove(k) != nil else { continue } // written again, or queued twice
            keys.append(k)
            if keys.count == Self.maxKeys { break }
        }
        order.removeFirst(used)
        if !pendingKeys.isEmpty { firstPendingAt = t }
        if keys.isEmpty { return [] }
        inFlight = Set(keys)
        batches += 1
        return keys
    }

    /// The batch on the wire ended at `t`; `refused`: the keys it did not delete (all of them when
    /// the request failed). Returns the refused keys whose names must show again (those not
    /// written anew meanwhile).
    mutating func finish(refused: Set<[UInt8]>, at t: Double) -> [[UInt8]] {
        guard let keys = inFlight else { return [] }
        var reshow: [[UInt8]] = []
        for k in keys {
            if refused.contains(k) {
                failed += 1
                if !rewritten.contains(k) && !pendingKeys.contains(k) { reshow.append(k) }
            } else if !rewritten.contains(k) {
                settling[k] = t
            }
        }
        // A batch that deleted nothing ends the burst: the next unlink asks S3 alone.
        if refused.count < keys.count { succeeded(at: t) } else { lastSuccess = nil }
        inFlight = nil
        rewritten = []
        return reshow
    }

    /// The name is written again through the mount: its key leaves the pending set. True when the
    /// batch on the wire holds it: the upload must wait for that batch to end.
    mutating func withdraw(_ key: [UInt8]) -> Bool {
        pendingKeys.remove(key)
        settling[key] = nil
        guard let f = inFlight, f.contains(key) else { return false }
        rewritten.insert(key)
        return true
    }

    /// Whether the batch on the wire holds `key`.
    func inFlight(_ key: [UInt8]) -> Bool { inFlight?.contains(key) == true }

    /// Whether a listing begun at `started` must not show `key`: its delete is pending, on the
    /// wire, or landed after the listing began (its pages may predate it). Another client's new
    /// object of that name shows in listings begun after the delete.
    func hides(_ key: [UInt8], listingStartedAt started: Double) -> Bool {
        if pendingKeys.contains(key) { return true }
        if let f = inFlight, f.contains(key), !rewritten.contains(key) { return true }
        if let at = settling[key], at >= started { return true }
        return false
    }

    /// Every key `hides` hides, for a listing to filter its pages with.
    func hiddenKeys(listingStartedAt started: Double) -> Set<[UInt8]> {
        var out = pendingKeys
        if let f = inFlight { out.formUnion(f.subtracting(rewritten)) }
        for (k, at) in settling where at >= started { out.insert(k) }
        return out
    }

    /// Whether a delete under `prefix` is pending or on the wire (rmdir, rename, fsync wait for them).
    func busy(under prefix: [UInt8]) -> Bool {
        if pendingKeys.contains(where: { $0.starts(with: prefix) }) { return true }
        return inFlight?.contains(where: { $0.starts(with: prefix) && !rewritten.contains($0) }) == true
    }

    /// Forgets keys that settled before `t - settle`.
    mutating func sweep(at t: Double) {
        if settling.isEmpty { return }
        settling = settling.filter { t - $0.value < timing.settle }
    }

    var isIdle: Bool { pendingKeys.isEmpty && inFlight == nil }
}
