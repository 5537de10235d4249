import CCurlShim
import S3

/// What the mount has counted since it started, taken at one moment: the counters are recorded
/// where things happen (request stats in the client, cache hits in the metadata part, parts and
/// cache blocks in the read part, uploads in the write part); this gathers them. Rendering (the
/// JSON of `s3mount stats`, Prometheus text, the SIGUSR1 log line) is the bridge's business.
public struct MountStats: Sendable {
    public var requests: RequestStats.Snapshot?
    public var cache = CacheCounters()
    public var inodes = 0, attributes = 0, negatives = 0, completeDirectories = 0
    public var metadataMode = ""
    public var indexGets = 0, indexPuts = 0, indexDeletes = 0, indexProbes = 0, indexConflicts = 0, indexWriteFailures = 0
    public var metadataCopies = 0, metadataHeads = 0
    public var streamReaders = 0, parallelReaders = 0, partsFetched = 0, partBytes: Int64 = 0, partRetries = 0
    public var readMemoryBytes = 0, readThreads = 0
    public var walkPrefetched = 0, walkUsed = 0, walkUnused = 0, recentPrefixHits = 0
    public var dataCache: DataCacheStats? = nil
    public var shortReads = 0, verificationFailures = 0
    public var heapBytes = 0
    /// Worker pools by name: threads started, jobs waiting.
    public var pools: [(name: String, threads: Int, queued: Int)] = []
    /// S3 requests in flight now, and bulk requests that waited for a slot since the start.
    public var requestsInFlight = 0, bulkWaits = 0
    /// Handles open now, by kind.
    public var openReaders = 0, openWriters = 0, openDirectories = 0
    /// S3 event notifications (`--notification-queue`), when on.
    public var notifications: NotificationStats? = nil
    /// Archived objects: opens refused, restores seen running, restores started.
    public var archive = ArchiveCounters()
    /// `--write-back` (nil without it).
    public var writeBack: WriteBackStats? = nil
    /// Unlinks answered at once during a burst and deleted in batches (DeleteObjects): keys queued,
    /// batches sent, keys waiting or on the wire now, keys a batch failed to delete.
    public var deletesBatched = 0, deleteBatches = 0, deletesPending = 0, deletesFailed = 0

    public struct DataCacheStats: Sendable {
        public var hits = 0, misses = 0, bytesServed: Int64 = 0, bytesWritten: Int64 = 0, bytesCached: Int64 = 0, evictions = 0, writeErrors = 0
    }

    public var metadataRequests: Int { indexGets + indexPuts + indexDeletes + indexProbes + metadataCopies + metadataHeads }
}

extension Filesystem {
    public func stats() -> MountStats {
        var s = MountStats()
        s.requests = store.requestStats?.snapshot()
        s.cache = counters
        (s.inodes, s.attributes, s.negatives, s.completeDirectories) = state.withLock { entryCounts($0) }
        let m = meta.snapshot
        s.metadataMode = options.metadata.rawValue
        (s.indexGets, s.indexPuts, s.indexDeletes, s.indexProbes) = (m.indexGets, m.indexPuts, m.indexDeletes, m.probes)
        (s.indexConflicts, s.indexWriteFailures, s.metadataCopies, s.metadataHeads) = (m.conflicts, m.writeFailures, m.metadataCopies, m.heads)
        let r = reads.counters.withLock { $0 }
        (s.streamReaders, s.parallelReaders, s.partsFetched, s.partBytes, s.partRetries) = (r.streamReaders, r.parallelReaders, r.partsFetched, r.partBytes, r.partRetries)
        s.readMemoryBytes = reads.memory.inUse
        let readPool = reads.pool.load
        s.readThreads = readPool.threads
        (s.walkPrefetched, s.walkUsed, s.walkUnused) = (walkPrefetch.prefetched, walkPrefetch.used, walkPrefetch.unused)
        s.recentPrefixHits = reads.recent.hits
        if let dc = reads.cache {
            let k = dc.counters
            s.dataCache = MountStats.DataCacheStats(hits: k.hits, misses: k.misses, bytesServed: k.bytesFromDisk, bytesWritten: k.bytesWritten,
                                                    bytesCached: dc.bytesCached, evictions: k.evictions, writeErrors: k.writeErrors)
        }
        s.shortReads = FileReader.shortReads.withLock { $0 }
        s.verificationFailures = FileReader.verificationFailures.withLock { $0 }
        s.heapBytes = Int(s3m_heap_in_use())
        (s.openReaders, s.openWriters, s.openDirectories) = handles.counts
        s.pools = Pools.load + [("s3m-read", readPool.threads, readPool.queued)]
        if let gate = (((store as? OwnChangeStore)?.inner ?? store) as? S3Client)?.gate {
            (s.requestsInFlight, s.bulkWaits) = gate.load
        }
        s.notifications = listener.withLock { $0 }?.stats
        s.archive = Archive.counters.withLock { $0 }
        s.archive.listed = state.withLock { $0.attrs.count(where: { $0.isArchived }) }
        s.writeBack = writeBackStats
        let d = deletes.counters
        (s.deletesBatched, s.deleteBatches, s.deletesPending, s.deletesFailed) = (d.batched, d.batches, d.pending, d.failed)
        return s
    }
}
