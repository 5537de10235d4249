import CCurlShim
import Glibc
import S3

/// What the notification listener has counted.
public struct NotificationStats: Sendable {
    public var queue = ""
    /// Whether the last poll of the queue succeeded (caches trusted for the long TTL).
    public var healthy = false
    public var polls = 0, pollErrors = 0, messages = 0, malformed = 0, testEvents = 0
    public var events = 0, applied = 0, stale = 0, own = 0, ignored = 0
    public var deleteFailures = 0
    /// Seconds from an applied event's `eventTime` to its application: recent ones, for percentiles.
    public var recentLags: [Double] = []
    public var maxLag: Double = 0
    public var lastError: String? = nil
    public var metadataTTL: Double = 0
    /// ReceiveMessage calls in flight at once.
    public var receivers = 1
    /// Events taken from the queue per second (the last 10 s), and the lag of the last one applied.
    public var eventsPerSecond: Double = 0
    public var lastLag: Double? = nil
    /// Probes sent to the queue, back, lost; probes of other mounts; gaps; revalidations.
    public var probesSent = 0, probesBack = 0, probesLost = 0, foreignProbes = 0, gaps = 0, revalidations = 0
    /// Directories listed by revalidations, and the changes they found that no event had told.
    public var revalidatedDirectories = 0, revalidationChanges = 0
    /// Why the events are not trusted now (nil while they are).
    public var gap: String? = nil
    /// Messages waiting in the queue (SQS's estimate), asked at most every 5 s during a burst and
    /// once after it; nil before the first burst.
    public var backlog: Int? = nil

    public func lagPercentile(_ p: Double) -> Double? {
        guard !recentLags.isEmpty else { return nil }
        let sorted = recentLags.sorted()
        return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
    }
}

/// Receives the events S3 sends for the bucket (an SQS queue; `EventQueue`) and applies them to
/// the filesystem's caches (`Filesystem.applyEvents`), which tells the kernel. Up to `receivers`
/// polls run at once on the `s3m-events` pool during a burst (one while the queue is quiet), each
/// applying what it received under one take of the metadata lock and deleting it with one batch
/// call. Malformed messages are deleted too
/// (logged). A queue that fails (unreachable, denied, missing) makes the mount fall back to the
/// short TTL until it answers again; messages kept by SQS meanwhile are applied then. Probes, and
/// the mount's own changes coming back, tell whether every event arrives (`EventWatch`); when not,
/// the mount says so once, falls back to the short TTL and revalidates what it holds.
public final class NotificationListener: @unchecked Sendable {
    let fs: Filesystem
    let queue: EventQueue
    let bucket: String
    let waitSeconds: Int
    let receivers: Int
    /// Seconds between probes (0: none, and the mount's own changes are not checked either).
    let checkInterval: Double
    /// This run's name in its probes.
    let mountId: String
    private let counters: Locked<NotificationStats>
    private let watch: Locked<EventWatch>
    private let rate = Locked(EventRate())
    private let stopped = Locked(false)
    /// Consecutive failed polls; while > 0 only the first receiver polls.
    private let failures = Locked(0)
    private let failingSince = Locked<Double?>(nil)
    /// Until when the other receivers poll too (see `receive(as:)`).
    private let burstUntil = Locked(0.0)

    static let maxReceivers = 16

    public init(fs: Filesystem, queue: EventQueue, queueName: String, bucket: String, waitSeconds: Int = 20,
                receivers: Int = 8, checkInterval: Double = 15) {
        self.fs = fs
        self.queue = queue
        self.bucket = bucket
        self.waitSeconds = waitSeconds
        self.receivers = min(max(1, receivers), Self.maxReceivers)
        self.checkInterval = checkInterval
        var bytes = [UInt8](repeating: 0, count: 8)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        self.mountId = hexString(bytes)
        var s = NotificationStats()
        s.queue = queueName
        s.receivers = self.receivers
        counters = Locked(s)
        let interval = checkInterval > 0 ? checkInterval : 15
        watch = Locked(EventWatch(probeTimeout: max(interval, Double(waitSeconds) + 5), quiet: max(4 * interval, 30)))
    }

    public var stats: NotificationStats {
        var s = counters.withLock { $0 }
        s.metadataTTL = fs.currentMetadataTTL
        s.eventsPerSecond = rate.withLock { $0.perSecond(at: monotonicSeconds()) }
        watch.withLock { w in
            s.probesSent = w.probesSent; s.probesBack = w.probesBack; s.probesLost = w.probesLost
            s.foreignProbes = w.foreignProbes; s.gaps = w.gaps; s.revalidations = w.revalidations
            s.gap = w.gap?.description
        }
        return s
    }

    public func start() {
        fs.listener.withLock { $0 = self }
        for n in 0..<receivers { Pools.events.submit { [self] in receive(as: n) } }
        Pools.events.submit { [self] in keepWatch() }
    }

    public func stop() { stopped.withLock { $0 = true } }
    var isStopped: Bool { stopped.withLock { $0 } }

    /// One receiver's loop. The first poll (and the first after a failure) does not wait: it tells
    /// at once whether the queue answers, and the long TTL applies from then on. The first
    /// receiver always polls; the others only during a burst (a receive came back full in the last
    /// two seconds), so that an idle mount costs one long poll at a time.
    func receive(as n: Int) {
        while !isStopped {
            let healthy = counters.withLock { $0.healthy }
            if n > 0 {
                // While the queue fails, one receiver asks it.
                if !healthy || failures.withLock({ $0 }) > 0 || monotonicSeconds() > burstUntil.withLock({ $0 }) {
                    usleep(50_000)
                    continue
                }
            }
            do {
                let messages = try queue.receive(waitSeconds: healthy ? (n == 0 ? waitSeconds : 1) : 0)
                answered()
                if messages.count >= 10 {
                    burstUntil.withLock { $0 = monotonicSeconds() + 2 }
                } else {
                    let t = monotonicSeconds()
                    watch.withLock { $0.caughtUp(at: t) }
                }
                if !messages.isEmpty { process(messages) }
            } catch {
                failed(error)
                // 1, 2, 4 ... 30 s: a queue that is gone or denied costs a request every 30 s.
                let delay = min(30.0, Double(1 << min(failures.withLock { $0 } - 1, 5)))
                var waited = 0.0
                while waited < delay && !isStopped { usleep(200_000); waited += 0.2 }
            }
        }
    }

    private func answered() {
        let wasFailing = failures.withLock { f -> Bool in defer { f = 0 }; return f > 0 }
        let firstAnswer = counters.withLock { s -> Bool in
            defer { s.polls += 1; s.healthy = true }
            return !s.healthy
        }
        if wasFailing {
            Log.info("notification queue \(counters.withLock { $0.queue }) answers again; caches are kept current by its events")
            // Events may have expired, or gone to another reader, while it did not answer.
            if let since = failingSince.withLock({ s -> Double? in defer { s = nil }; return s }), monotonicSeconds() - since > 60 {
                noteGap(.sourceUnreachable)
            }
        }
        if wasFailing || firstAnswer { updateTrust() }
    }

    private func failed(_ error: Error) {
        let count = failures.withLock { f -> Int in f += 1; return f }
        failingSince.withLock { s in if s == nil { s = monotonicSeconds() } }
        let text = "\(error)"
        counters.withLock { $0.pollErrors += 1; $0.healthy = false; $0.lastError = text }
        watch.withLock { $0.forgetProbes() }
        updateTrust()
        if count == 1 || count % 20 == 0 {
            Log.warning("notification queue \(counters.withLock { $0.queue }): \(text); changes by others show within \(Int(fs.currentMetadataTTL)) s (the TTL) until it answers")
        }
    }

    /// The long TTL while the queue answers and no gap is known; the short one otherwise.
    private func updateTrust() {
        let answering = counters.withLock { $0.healthy }
        let whole = watch.withLock { $0.gap == nil }
        fs.setNotificationsHealthy(answering && whole)
    }

    /// Records a gap: said once, the short TTL, and a revalidation.
    func noteGap(_ g: EventWatch.Gap) {
        let t = monotonicSeconds()
        let first = watch.withLock { $0.note(g, at: t) }
        guard first else { return }
        Log.warning("notification queue \(counters.withLock { $0.queue }): \(g); caches are trusted for \(Int(min(fs.options.degradedTTL, fs.ttl.configured))) s and revalidated until every event arrives again")
        updateTrust()
        revalidateIfDue()
    }

    /// The probe clock: sends a probe every `checkInterval` seconds, counts the lost ones and (every
    /// 5 s) the mount's own changes that did not come back, revalidates and recovers.
    func keepWatch() {
        var lastProbe = -Double.infinity, lastOwnCheck = monotonicSeconds(), lastBacklog = -Double.infinity
        var backlogAfterBurst = false
        while !isStopped {
            usleep(500_000)
            let t = monotonicSeconds()
            guard counters.withLock({ $0.healthy }) else { continue }
            // The queue's backlog costs a request: asked during a burst only (an idle mount asks nothing).
            let inBurst = t < burstUntil.withLock { $0 }
            if (inBurst && t - lastBacklog >= 5) || (!inBurst && backlogAfterBurst) {
                lastBacklog = t
                backlogAfterBurst = inBurst
                if let n = try? queue.backlog() { counters.withLock { $0.backlog = n } }
            }
            if checkInterval > 0, t - lastOwnCheck >= 5, let own = fs.ownChanges {
                lastOwnCheck = t
                let lost = own.takeOverdue(after: max(90, 3 * Double(waitSeconds)), at: t)
                if lost > 0 { noteGap(.ownChangesLost(lost)) }
            }
            if checkInterval > 0 && t - lastProbe >= checkInterval && watch.withLock({ $0.probing }) {
                lastProbe = t
                let n = watch.withLock { $0.probeSent(at: t) }
                do { try queue.send(S3EventParser.probe(mount: mountId, sequence: n)) } catch {
                    watch.withLock { $0.probeUnsent(n) }
                    Log.info("notification queue \(counters.withLock { $0.queue }): no probes (\(error)); gaps are seen by this mount's own changes only")
                }
            }
            if let g = watch.withLock({ $0.checkProbes(at: t) }) { noteGap(g) }
            revalidateIfDue()
            if watch.withLock({ $0.recover(at: t) }) {
                Log.info("notification queue \(counters.withLock { $0.queue }): every event arrives again; caches are trusted for the long TTL")
                updateTrust()
            }
        }
    }

    /// Lists again the directories the mount holds complete, on this pool, when the watch says so.
    func revalidateIfDue() {
        let t = monotonicSeconds()
        let begin = watch.withLock { w -> Bool in
            guard w.needsRevalidation(at: t) else { return false }
            w.revalidationBegins(at: t)
            return true
        }
        guard begin else { return }
        Pools.events.submit { [self] in
            let r = fs.revalidateListings(bucket: bucket, limit: Self.revalidationLimit)
            counters.withLock { $0.revalidatedDirectories += r.directories; $0.revalidationChanges += r.changes }
            watch.withLock { $0.revalidationEnded() }
            if r.changes > 0 { Log.info("revalidation: \(r.changes) change(s) no event had told, in \(r.directories) directories") }
        }
    }

    /// Directories one revalidation lists at most (the most recently listed); the others are
    /// forgotten, and listed again at their next use.
    static let revalidationLimit = 1000

    /// Applies a batch of messages in order, then deletes them.
    public func process(_ messages: [QueueMessage]) {
        var handles: [String] = []
        var events: [ObjectEvent] = []
        var malformed = 0, tests = 0
        for m in messages {
            switch S3EventParser.parse(m.body) {
            case .test:
                tests += 1
            case .malformed(let why):
                malformed += 1
                Log.warning("notification message \(m.id) is not an S3 event (\(why)); deleted")
            case .probe(let mount, let sequence):
                let t = monotonicSeconds()
                if let g = watch.withLock({ $0.probeReceived(sequence: sequence, mine: mount == mountId, at: t) }) { noteGap(g) }
            case .events(let list):
                events += list
            }
            handles.append(m.receiptHandle)
        }
        let outcomes = events.isEmpty ? [] : fs.applyEvents(events, bucket: bucket)
        let t = Timestamp.now().seconds
        rate.withLock { $0.add(events.count, at: monotonicSeconds()) }
        counters.withLock { s in
            s.messages += messages.count
            s.malformed += malformed
            s.testEvents += tests
            s.events += events.count
            for (e, outcome) in zip(events, outcomes) {
                switch outcome {
                case .applied:
                    let lag = max(0, t - e.time)
                    s.applied += 1
                    s.maxLag = max(s.maxLag, lag)
                    s.lastLag = lag
                    s.recentLags.append(lag)
                case .stale: s.stale += 1
                case .own: s.own += 1
                case .ignored: s.ignored += 1
                }
            }
            if s.recentLags.count > 1024 { s.recentLags.removeFirst(s.recentLags.count - 1024) }
        }
        if Log.shared.level <= .debug {
            for (e, outcome) in zip(events, outcomes) {
                var what = ""
                if case .created(let size, let etag) = e.change { what = " (\(size) bytes, ETag \(etag))" }
                Log.debug("event \(e.name) \(Names.display(e.key))\(what): \(outcome.rawValue), \(Int(max(0, t - e.time) * 1000)) ms after it happened")
            }
        }
        do {
            let refused = try queue.delete(handles)
            if !refused.isEmpty { counters.withLock { $0.deleteFailures += refused.count } }
        } catch {
            // They come back after the queue's visibility timeout: applying them again changes nothing.
            counters.withLock { $0.deleteFailures += handles.count }
            Log.warning("deleting \(handles.count) notification message(s): \(error); they will be received again")
        }
        if malformed > 0 { noteGap(.messageUnreadable) }
    }
}
