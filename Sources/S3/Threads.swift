import CCurlShim
import Glibc

/// A value guarded by a pthread mutex: the same `withLock` shape as `Synchronization.Mutex`, but
/// a plain (non-priority-inheriting) futex that spins briefly before sleeping, which is much
/// cheaper when FUSE threads queue on one open file, and which ThreadSanitizer understands.
public final class Locked<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_settype(&attr, Int32(PTHREAD_MUTEX_ADAPTIVE_NP))
        pthread_mutex_init(mutex, &attr)
        pthread_mutexattr_destroy(&attr)
    }
    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}

/// A tiny condition variable (pthread) for waits that a lock alone cannot express.
public final class Condition: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    public init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }
    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }
    /// Waits until `predicate` is true (checked under the condition's own lock; it may take other locks).
    public func wait(until predicate: () -> Bool) {
        pthread_mutex_lock(&mutex)
        while !predicate() { pthread_cond_wait(&cond, &mutex) }
        pthread_mutex_unlock(&mutex)
    }
    /// Waits with a timeout in seconds; returns the predicate's final value.
    public func wait(timeout: Double, until predicate: () -> Bool) -> Bool {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let ns = Int(ts.tv_nsec) + Int((timeout - timeout.rounded(.down)) * 1e9)
        ts.tv_sec += Int(timeout) + ns / 1_000_000_000
        ts.tv_nsec = ns % 1_000_000_000
        pthread_mutex_lock(&mutex)
        var ok = predicate()
        while !ok {
            if pthread_cond_timedwait(&cond, &mutex, &ts) == ETIMEDOUT { ok = predicate(); break }
            ok = predicate()
        }
        pthread_mutex_unlock(&mutex)
        return ok
    }
    /// Changes state visible to waiters and wakes them; do state changes inside `change`
    /// or before calling to avoid lost wake-ups.
    public func broadcast(_ change: () -> Void = {}) {
        pthread_mutex_lock(&mutex)
        change()
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }
    /// Runs `body` under the condition's lock without waking anyone.
    public func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }
}

/// Runs a closure on a new pthread (Foundation-free).
public final class Thread: @unchecked Sendable {
    private let body: () -> Void
    private var tid = pthread_t()
    public init(_ body: @escaping () -> Void) { self.body = body }
    public func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&tid, nil, { p in
            let t = Unmanaged<Thread>.fromOpaque(p!).takeRetainedValue()
            t.body()
            return nil
        }, box)
        pthread_detach(tid)
    }
}

/// A bounded pool of named worker threads running queued jobs in order. Threads start as jobs
/// arrive, up to `maxThreads`, and stay for the next job (their curl handles keep their
/// connections); `top -H` and gdb show them by name.
public final class WorkerPool: @unchecked Sendable {
    private let name: String
    private let maxThreads: Int
    /// Its jobs are bulk work: their S3 requests leave `RequestGate.reserved` slots to others.
    private let bulk: Bool
    private let cond = Condition()
    private var queue: [() -> Void] = []
    private var head = 0
    private var threads = 0
    private var idle = 0

    /// `name`: at most 11 characters (threads are named "name-N", Linux keeps 15).
    public init(name: String, maxThreads: Int, bulk: Bool = false) {
        self.name = name
        self.maxThreads = max(1, maxThreads)
        self.bulk = bulk
    }

    public func submit(_ job: @escaping () -> Void) {
        var startOne = false
        var number = 0
        cond.broadcast {
            queue.append(job)
            if idle < queue.count - head && threads < maxThreads {
                threads += 1
                number = threads
                startOne = true
            }
        }
        if startOne {
            let label = "\(name)-\(number)"
            Thread { [self] in
                s3m_set_thread_name(label)
                s3m_set_bulk_thread(bulk ? 1 : 0)
                run()
            }.start()
        }
    }

    /// Jobs waiting for a thread, and threads started: for the statistics.
    public var load: (queued: Int, threads: Int) { cond.locked { (queue.count - head, threads) } }

    private func run() {
        while true {
            var job: (() -> Void)? = nil
            cond.locked { idle += 1 }
            cond.wait(until: {
                guard head < queue.count else { return false }
                job = queue[head]
                head += 1
                idle -= 1
                if head > 64 && head * 2 > queue.count { queue.removeFirst(head); head = 0 }
                return true
            })
            job?()
        }
    }
}

/// The mount-wide bound on S3 requests in flight, with two classes: bulk work (uploads, copies,
/// prefetch; threads marked by their pool) waits while `limit - reserved` requests are in flight,
/// so a `stat` or an `ls` (FUSE threads, listings) always finds a connection and never queues
/// behind a bulk upload. Interactive requests never wait: they are counted, and what bounds them
/// is the FUSE threads and listing pool that make them (a reader's stream may sit paused for as
/// long as its reader does not read; a slot it held could starve a `stat`). A request holds its
/// slot for one attempt, not across the backoff between retries.
public final class RequestGate: @unchecked Sendable {
    public let limit: Int
    public let reserved: Int
    private let cond = Condition()
    private var inFlight = 0
    private var waits = 0

    public init(limit: Int, reserved: Int) {
        self.limit = max(2, limit)
        self.reserved = min(max(1, reserved), self.limit - 1)
    }

    public func acquire() {
        guard s3m_is_bulk_thread() != 0 else { cond.locked { inFlight += 1 }; return }
        let cap = limit - reserved
        var waited = false
        cond.wait(until: {
            if inFlight < cap { inFlight += 1; return true }
            waited = true
            return false
        })
        if waited { cond.locked { waits += 1 } }
    }

    public func release() { cond.broadcast { inFlight -= 1 } }

    /// Requests in flight now, and how many had to wait for a slot since the start.
    public var load: (inFlight: Int, waits: Int) { cond.locked { (inFlight, waits) } }
}
