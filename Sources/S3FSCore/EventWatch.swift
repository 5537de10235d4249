/// Whether the mount receives every event it should. The listener feeds it what happens (probes
/// sent and received, the mount's own changes that did not come back, the source failing, an
/// unreadable message) and asks it what to do; it decides, the listener acts (logs, the TTL,
/// revalidation). A value type: time comes in as an argument.
///
/// Probes are messages the mount sends to its own queue: each should come back to it. One that
/// does not, or one from another mount, says the queue has another reader (two mounts given one
/// queue each see about half the events). While a gap is known the caches are trusted for the
/// short TTL only and revalidated at most every `quiet` seconds; the long TTL comes back once
/// `quiet` seconds passed without a new gap, a probe came back meanwhile (when probes can be
/// sent) and a revalidation begun after the last gap has finished.
struct EventWatch {
    enum Gap: Equatable, CustomStringConvertible {
        /// A probe of another mount arrived: another reader takes messages from this queue.
        case sharedQueue
        /// Probes the mount sent did not come back.
        case probesLost(Int)
        /// The mount's own changes did not come back as events.
        case ownChangesLost(Int)
        /// The source did not answer: events may have expired or been taken meanwhile.
        case sourceUnreachable
        /// A message that was not an event was dropped.
        case messageUnreadable

        var description: String {
            switch self {
            case .sharedQueue: return "a probe of another mount arrived: another reader takes events from this queue (give each mount a queue of its own)"
            case .probesLost(let n): return "\(n) probe(s) sent to the queue did not come back: another reader takes events from it, or it drops messages"
            case .ownChangesLost(let n): return "the events of \(n) change(s) made through this mount did not come back: events are lost on the way"
            case .sourceUnreachable: return "the queue did not answer for a while: events may have been missed meanwhile"
            case .messageUnreadable: return "a message that is not an S3 event was dropped"
            }
        }
    }

    /// A probe not back after this many seconds is lost.
    let probeTimeout: Double
    /// Seconds without a new gap before the long TTL is trusted again; also the least time
    /// between two revalidations.
    let quiet: Double

    /// Probes in flight: sequence number, sent at.
    private(set) var outstanding: [Int: Double] = [:]
    /// When a receive last came back with less than a full batch: the queue had been read to its
    /// end. A probe behind a backlog is late, not lost.
    private var caughtUpAt: Double = -.infinity
    private var nextSequence = 1
    /// Whether probes can be sent (false once sending failed: a source that has no way to, or a
    /// policy that denies it).
    private(set) var probing = true

    /// The gap the mount is in, and when it began; nil while every event arrives.
    private(set) var gap: Gap? = nil
    private(set) var gapSince: Double = 0
    private(set) var lastGapAt: Double = -.infinity
    private var probesBackSinceGap = 0
    private(set) var revalidating = false
    private(set) var revalidationStarted: Double = -.infinity

    private(set) var probesSent = 0, probesBack = 0, probesLost = 0, foreignProbes = 0, gaps = 0, revalidations = 0

    /// Seconds between a probe and a read of the queue to its end after which the probe should
    /// have been among what was read.
    static let backlogGrace = 5.0

    init(probeTimeout: Double, quiet: Double) {
        self.probeTimeout = probeTimeout
        self.quiet = quiet
    }

    /// A probe is about to be sent: its sequence number.
    mutating func probeSent(at t: Double) -> Int {
        let n = nextSequence
        nextSequence += 1
        outstanding[n] = t
        probesSent += 1
        return n
    }

    /// Sending a probe failed: the mount goes on without them, and those in flight (a broker may
    /// refuse them only after taking them) are forgotten.
    mutating func probeUnsent(_ n: Int) {
        if outstanding.removeValue(forKey: n) != nil { probesSent -= 1 }
        outstanding = [:]
        probing = false
    }

    /// A probe arrived: the mount's own (`mine`), or another mount's (a gap).
    mutating func probeReceived(sequence n: Int, mine: Bool, at t: Double) -> Gap? {
        guard mine else {
            foreignProbes += 1
            return .sharedQueue
        }
        // Late ones (already counted lost) and repeated deliveries count once.
        if outstanding.removeValue(forKey: n) != nil {
            probesBack += 1
            probesBackSinceGap += 1
        }
        return nil
    }

    /// The source failed: probes in flight may come back late or not at all, and say nothing of
    /// another reader (the outage itself is judged by its length).
    mutating func forgetProbes() { outstanding = [:] }

    /// A receive came back with less than a full batch at `t`.
    mutating func caughtUp(at t: Double) { caughtUpAt = t }

    /// Probes past their timeout, and sent well before the queue was last read to its end, are
    /// lost: a gap.
    mutating func checkProbes(at t: Double) -> Gap? {
        let late = outstanding.filter { t - $0.value > probeTimeout && caughtUpAt - $0.value > Self.backlogGrace }
        guard !late.isEmpty else { return nil }
        for n in late.keys { outstanding[n] = nil }
        probesLost += late.count
        return .probesLost(late.count)
    }

    /// Records a gap. True when the mount trusted its caches until now: the listener then says so
    /// once and falls back to the short TTL.
    mutating func note(_ g: Gap, at t: Double) -> Bool {
        lastGapAt = t
        probesBackSinceGap = 0
        guard gap == nil else { return false }
        gap = g
        gapSince = t
        gaps += 1
        return true
    }

    /// Whether a revalidation should begin now: at the start of a gap, then at most every `quiet`
    /// seconds while it lasts, and once more after the last gap before the long TTL comes back.
    func needsRevalidation(at t: Double) -> Bool {
        guard gap != nil, !revalidating else { return false }
        if revalidationStarted < gapSince { return true }
        return t - revalidationStarted >= quiet && revalidationStarted < lastGapAt
    }

    mutating func revalidationBegins(at t: Double) {
        revalidating = true
        revalidationStarted = t
        revalidations += 1
    }

    mutating func revalidationEnded() { revalidating = false }

    /// Ends the gap when the events arrive in full again (see the type's comment). True when it
    /// ended now: the listener trusts the long TTL again.
    mutating func recover(at t: Double) -> Bool {
        guard gap != nil, !revalidating, revalidationStarted >= lastGapAt, t - lastGapAt >= quiet else { return false }
        if probing && probesBackSinceGap == 0 { return false }
        gap = nil
        return true
    }
}

/// Events applied per second, over the last `window` whole seconds.
struct EventRate {
    let window = 10
    private var counts: [Int] = Array(repeating: 0, count: 10)
    private var second = 0

    mutating func add(_ n: Int, at t: Double) {
        advance(to: Int(t))
        counts[second % window] += n
    }

    /// The mean over the seconds of the window before the current one.
    mutating func perSecond(at t: Double) -> Double {
        advance(to: Int(t))
        var total = 0
        for s in (second - window + 1)..<second where s >= 0 { total += counts[s % window] }
        return Double(total) / Double(window - 1)
    }

    private mutating func advance(to s: Int) {
        guard s > second else { return }
        for x in (second + 1)...min(s, second + window) { counts[x % window] = 0 }
        second = s
    }
}
