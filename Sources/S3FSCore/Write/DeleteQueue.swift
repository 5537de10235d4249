import CCurlShim
import Glibc
import S3

/// Sends the batches `DeleteBatch` decides, on one worker thread of its own ("s3m-delete"),
/// started when a key is queued and gone after a few idle seconds. `send` deletes keys and returns
/// those refused with S3's code (it throws when the request failed after the client's retries);
/// `refused` hears of each key the mount must show again.
final class DeleteQueue: @unchecked Sendable {
    private let cond = Condition()
    /// Guarded by `cond`'s lock.
    private var batch: DeleteBatch
    private var flushes = 0
    /// The names of refused keys are being shown again: flushes wait for that too.
    private var reporting = false
    private var workerRunning = false
    private let send: ([[UInt8]]) throws -> [(key: [UInt8], code: String)]
    /// Set once, before the first unlink (it calls back into the filesystem, made after this).
    var refused: ([(key: [UInt8], code: String)]) -> Void = { _ in }
    /// How long the worker stays for the next burst.
    static let workerIdle = 5.0

    init(timing: DeleteBatch.Timing = .init(), send: @escaping ([[UInt8]]) throws -> [(key: [UInt8], code: String)]) {
        batch = DeleteBatch(timing: timing)
        self.send = send
    }

    /// Queues `key` when an unlink may be answered at once (a burst); false: send it alone.
    func queueIfBurst(_ key: [UInt8]) -> Bool {
        let t = monotonicSeconds()
        var startWorker = false
        let queued = cond.broadcast_ { () -> Bool in
            guard batch.answersAtOnce(at: t) else { return false }
            batch.queue(key, at: t)
            if !workerRunning { workerRunning = true; startWorker = true }
            return true
        }
        if startWorker { Thread { [self] in s3m_set_thread_name("s3m-delete"); run() }.start() }
        return queued
    }

    /// A delete sent alone succeeded: the unlinks that follow soon are a burst.
    func noteDeleted() {
        let t = monotonicSeconds()
        cond.locked { batch.succeeded(at: t) }
    }

    /// The name is written again: its pending delete is dropped, and a batch on the wire that holds
    /// it is waited for (its delete must land before the new upload).
    func revive(_ key: [UInt8]) {
        if cond.locked({ batch.withdraw(key) }) {
            cond.wait(until: { !batch.inFlight(key) })
        }
    }

    /// Sends every pending delete under `prefix` (all of them for []) and waits until S3 has
    /// answered them.
    func flush(under prefix: [UInt8] = []) {
        if cond.locked({ !batch.busy(under: prefix) && !reporting }) { return }
        cond.broadcast { flushes += 1 }
        cond.wait(until: { !batch.busy(under: prefix) && !reporting })
        cond.broadcast { flushes -= 1 }
    }

    /// Whether a listing begun at `started` (monotonic seconds; now by default) must not show `key`.
    func hides(_ key: [UInt8], listingStartedAt started: Double = monotonicSeconds()) -> Bool {
        cond.locked { batch.hides(key, listingStartedAt: started) }
    }

    func hiddenKeys(listingStartedAt started: Double) -> Set<[UInt8]> {
        cond.locked { batch.hiddenKeys(listingStartedAt: started) }
    }

    struct Counters { var batched = 0, batches = 0, pending = 0, failed = 0 }
    var counters: Counters {
        cond.locked { Counters(batched: batch.batched, batches: batch.batches, pending: batch.pendingCount, failed: batch.failed) }
    }

    private func run() {
        var idleSince = monotonicSeconds()
        while true {
            var keys: [[UInt8]] = []
            var deadline: Double? = nil
            var exit = false
            let t = monotonicSeconds()
            cond.locked {
                batch.sweep(at: t)
                if batch.isDue(at: t, flush: flushes > 0) {
                    keys = batch.take(at: t)
                } else if batch.isIdle && t - idleSince >= Self.workerIdle {
                    workerRunning = false
                    exit = true
                } else {
                    deadline = batch.deadline
                }
            }
            if exit { return }
            if keys.isEmpty {
                // Until the pending keys are due, a flush is asked for, or (idle) a while to stay.
                let wait = max(0.001, (deadline ?? (t + Self.workerIdle)) - t)
                _ = cond.wait(timeout: wait, until: { batch.isDue(at: monotonicSeconds(), flush: flushes > 0) })
                continue
            }
            var refusedKeys: [(key: [UInt8], code: String)]
            do {
                refusedKeys = try send(keys)
            } catch {
                let code = (error as? S3Error)?.code ?? "\(error)"
                refusedKeys = keys.map { ($0, code) }
            }
            let codes = Dictionary(refusedKeys.map { ($0.key, $0.code) }, uniquingKeysWith: { a, _ in a })
            let done = monotonicSeconds()
            let reshow = cond.broadcast_ { () -> [[UInt8]] in
                let r = batch.finish(refused: Set(codes.keys), at: done)
                reporting = !r.isEmpty
                return r
            }
            if !reshow.isEmpty {
                refused(reshow.map { ($0, codes[$0] ?? "") })
                cond.broadcast { reporting = false }
            }
            idleSince = done
        }
    }
}

extension Condition {
    /// `broadcast` with a result.
    func broadcast_<T>(_ change: () -> T) -> T {
        var out: T? = nil
        broadcast { out = change() }
        return out!
    }
}
