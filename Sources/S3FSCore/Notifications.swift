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

    public func lagPercentile(_ p: Double) -> Double? {
        guard !recentLags.isEmpty else { return nil }
        let sorted = recentLags.sorted()
        return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
    }
}

/// Long-polls the SQS queue that S3 event notifications reach and applies each event to the
/// filesystem's caches (`Filesystem.applyEvent`), which tells the kernel. Messages are deleted
/// once applied, malformed ones too (logged). A queue that fails (unreachable, denied, missing)
/// makes the mount fall back to the short TTL (`setNotificationsHealthy(false)`) until it answers
/// again; messages kept by SQS meanwhile are applied then.
public final class NotificationListener: @unchecked Sendable {
    let fs: Filesystem
    let queue: EventQueue
    let bucket: String
    let waitSeconds: Int
    private let counters: Locked<NotificationStats>
    private let stopped = Locked(false)

    public init(fs: Filesystem, queue: EventQueue, queueName: String, bucket: String, waitSeconds: Int = 20) {
        self.fs = fs
        self.queue = queue
        self.bucket = bucket
        self.waitSeconds = waitSeconds
        var s = NotificationStats()
        s.queue = queueName
        counters = Locked(s)
    }

    public var stats: NotificationStats {
        var s = counters.withLock { $0 }
        s.metadataTTL = fs.currentMetadataTTL
        return s
    }

    public func start() {
        fs.listener.withLock { $0 = self }
        Thread { [self] in
            s3m_set_thread_name("s3m-events")
            run()
        }.start()
    }

    public func stop() { stopped.withLock { $0 = true } }

    func run() {
        var failures = 0
        while !stopped.withLock({ $0 }) {
            do {
                // The first poll (and the first after a failure) does not wait: it tells at once
                // whether the queue answers, and the long TTL applies from then on.
                let healthy = counters.withLock { $0.healthy }
                let messages = try queue.receive(waitSeconds: healthy ? waitSeconds : 0)
                if failures > 0 || !healthy {
                    if failures > 0 { Log.info("notification queue \(counters.withLock { $0.queue }) answers again; caches are kept current by its events") }
                    fs.setNotificationsHealthy(true)
                }
                failures = 0
                counters.withLock { $0.polls += 1; $0.healthy = true }
                if !messages.isEmpty { process(messages) }
            } catch {
                failures += 1
                let text = "\(error)"
                counters.withLock { $0.pollErrors += 1; $0.healthy = false; $0.lastError = text }
                fs.setNotificationsHealthy(false)
                if failures == 1 || failures % 20 == 0 {
                    Log.warning("notification queue \(counters.withLock { $0.queue }): \(text); changes by others show within \(Int(fs.currentMetadataTTL)) s (the TTL) until it answers")
                }
                // 1, 2, 4 ... 30 s: a queue that is gone or denied costs a request every 30 s.
                let delay = min(30.0, Double(1 << min(failures - 1, 5)))
                var waited = 0.0
                while waited < delay && !stopped.withLock({ $0 }) { usleep(200_000); waited += 0.2 }
            }
        }
    }

    /// Applies a batch of messages in order, then deletes them.
    public func process(_ messages: [QueueMessage]) {
        var handles: [String] = []
        for m in messages {
            switch S3EventParser.parse(m.body) {
            case .test:
                counters.withLock { $0.messages += 1; $0.testEvents += 1 }
            case .malformed(let why):
                counters.withLock { $0.messages += 1; $0.malformed += 1 }
                Log.warning("notification message \(m.id) is not an S3 event (\(why)); deleted")
            case .events(let events):
                counters.withLock { $0.messages += 1; $0.events += events.count }
                for e in events {
                    let outcome = fs.applyEvent(e, bucket: bucket)
                    let lag = max(0, Timestamp.now().seconds - e.time)
                    counters.withLock { s in
                        switch outcome {
                        case .applied:
                            s.applied += 1
                            s.maxLag = max(s.maxLag, lag)
                            s.recentLags.append(lag)
                            if s.recentLags.count > 1024 { s.recentLags.removeFirst(s.recentLags.count - 1024) }
                        case .stale: s.stale += 1
                        case .own: s.own += 1
                        case .ignored: s.ignored += 1
                        }
                    }
                    if Log.shared.level <= .debug {
                        var what = ""
                        if case .created(let size, let etag) = e.change { what = " (\(size) bytes, ETag \(etag))" }
                        Log.debug("event \(e.name) \(Names.display(e.key))\(what): \(outcome.rawValue), \(Int(lag * 1000)) ms after it happened")
                    }
                }
            }
            handles.append(m.receiptHandle)
        }
        do {
            let refused = try queue.delete(handles)
            if !refused.isEmpty { counters.withLock { $0.deleteFailures += refused.count } }
        } catch {
            // They come back after the queue's visibility timeout: applying them again changes nothing.
            counters.withLock { $0.deleteFailures += handles.count }
            Log.warning("deleting \(handles.count) notification message(s): \(error); they will be received again")
        }
    }
}
