import S3

/// The mount's worker threads, by what they do: bounded, named (`top -H`, gdb and `s3mount
/// stats` show them as `s3m-list-3`, `s3m-upload-12`, ...), and kept for the next job so their
/// curl handles keep their connections. One mount per process, so process-wide is mount-wide.
/// Bulk pools' S3 requests leave the last slots of `RequestGate` to interactive ones: a `stat`
/// never queues behind an upload. No job waits for another job of its own pool (a full pool
/// only queues), which is what keeps a bounded pool free of deadlocks.
enum Pools {
    /// Directory listings (`runListing`), which lookups and readdirs wait for: interactive.
    static let listings = WorkerPool(name: "s3m-list", maxThreads: 32)
    /// Multipart upload parts of every file being written (each file keeps at most
    /// `FSOptions.parallelParts` of them in flight).
    static let uploads = WorkerPool(name: "s3m-upload", maxThreads: 32, bulk: true)
    /// `--write-back`: whole-file uploads of closed files (their multipart parts go to `uploads`,
    /// so no job here waits for one of its own pool), and at mount what an earlier run owed.
    static let writeBack = WorkerPool(name: "s3m-writeback", maxThreads: 16, bulk: true)
    /// Server-side copies of a directory rename.
    static let copies = WorkerPool(name: "s3m-copy", maxThreads: 16, bulk: true)
    /// HeadObject of names a listing showed (`--metadata head`), ahead of their `stat`.
    static let heads = WorkerPool(name: "s3m-head", maxThreads: 16)
    /// `--notification-queue`: the receivers (one long poll, more during a burst), the probe
    /// clock and revalidations (NotificationListener). Its jobs never wait for one another.
    static let events = WorkerPool(name: "s3m-events", maxThreads: NotificationListener.maxReceivers + 2)

    /// Threads started and jobs waiting, by pool: for the statistics.
    static var load: [(name: String, threads: Int, queued: Int)] {
        [("s3m-list", listings), ("s3m-upload", uploads), ("s3m-writeback", writeBack), ("s3m-copy", copies), ("s3m-head", heads),
         ("s3m-events", events)].map {
            let l = $0.1.load
            return ($0.0, l.threads, l.queued)
        }
    }
}
