import Glibc
import S3
import S3FSCore

/// The mount's statistics as text: the JSON `s3mount stats` prints, the Prometheus exposition of
/// `--metrics-address`, and the one log line of SIGUSR1. Rendered here, outside the core, from a
/// `MountStats` snapshot and the bridge's own count of errors per FUSE operation.
public enum StatsText {
    /// operation -> errno -> replies, as `FuseBridge.errorCounts` keeps them.
    public typealias FuseErrors = [String: [Int32: Int]]

    public static func json(_ s: MountStats, fuseErrors: FuseErrors) -> String {
        var ops: [String] = []
        for (op, outcomes) in (s.requests?.requests ?? [:]).sorted(by: { $0.key < $1.key }) {
            let n = outcomes.values.reduce(0, +)
            let detail = outcomes.sorted(by: { $0.key < $1.key }).map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ")
            ops.append("    \"\(op)\": {\"total\": \(n), \(detail)}")
        }
        let c = s.cache
        func hitRate(_ h: Int, _ m: Int) -> String { h + m == 0 ? "null" : String(Double(Int(Double(h) / Double(h + m) * 10000)) / 10000) }
        var reads = "{\"stream_readers\": \(s.streamReaders), \"parallel_readers\": \(s.parallelReaders), \"parts\": \(s.partsFetched), "
            + "\"part_bytes\": \(s.partBytes), \"part_retries\": \(s.partRetries), \"read_memory_bytes\": \(s.readMemoryBytes), "
            + "\"read_threads\": \(s.readThreads), \"walk_prefetched\": \(s.walkPrefetched), \"walk_used\": \(s.walkUsed), \"walk_unused\": \(s.walkUnused), "
            + "\"recent_prefix_hits\": \(s.recentPrefixHits)"
        if let d = s.dataCache {
            reads += ", \"data_cache\": {\"hits\": \(d.hits), \"misses\": \(d.misses), \"bytes_served\": \(d.bytesServed), \"bytes_written\": \(d.bytesWritten), "
                + "\"bytes_cached\": \(d.bytesCached), \"evictions\": \(d.evictions), \"write_errors\": \(d.writeErrors)}"
        }
        reads += "}"
        let metadata = "{\"mode\": \"\(s.metadataMode)\", \"index_gets\": \(s.indexGets), \"index_puts\": \(s.indexPuts), \"index_deletes\": \(s.indexDeletes), "
            + "\"index_probes\": \(s.indexProbes), \"index_conflicts\": \(s.indexConflicts), \"index_write_failures\": \(s.indexWriteFailures), "
            + "\"metadata_copies\": \(s.metadataCopies), \"head_requests\": \(s.metadataHeads), \"requests_total\": \(s.metadataRequests)}"
        let pools = s.pools.map { "\"\($0.name)\": {\"threads\": \($0.threads), \"queued\": \($0.queued)}" }.joined(separator: ", ")
        let errors = fuseErrors.sorted(by: { $0.key < $1.key }).map { op, byErrno in
            "\"\(op)\": {" + byErrno.sorted(by: { $0.key < $1.key }).map { "\"\(errnoName($0.key))\": \($0.value)" }.joined(separator: ", ") + "}"
        }.joined(separator: ", ")
        let r = s.requests
        var writeBack = ""
        if let w = s.writeBack {
            writeBack = "\n  \"write_back\": {\"pending\": \(w.pending), \"pending_bytes\": \(w.pendingBytes), \"uploaded\": \(w.uploaded), "
                + "\"failed\": \(w.failed), \"failed_kept\": \(w.failedNow), \"recovered\": \(w.recovered), \"journal_records\": \(w.journalRecords)},"
        }
        var notifications = ""
        if let n = s.notifications {
            func ms(_ v: Double?) -> String { v.map { String(Int(($0 * 1000).rounded())) } ?? "null" }
            // The queue's URL and the gap's text come from outside: quoted as JSON strings.
            func quoted(_ t: String) -> String {
                var out = "\""
                for u in t.unicodeScalars {
                    switch u {
                    case "\"": out += "\\\""
                    case "\\": out += "\\\\"
                    case _ where u.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16)
                    default: out.unicodeScalars.append(u)
                    }
                }
                return out + "\""
            }
            notifications = "\n  \"notifications\": {\"queue\": \(quoted(n.queue)), \"healthy\": \(n.healthy), \"metadata_ttl\": \(n.metadataTTL.isFinite ? String(n.metadataTTL) : "null"), "
                + "\"polls\": \(n.polls), \"poll_errors\": \(n.pollErrors), \"messages\": \(n.messages), \"malformed\": \(n.malformed), \"test_events\": \(n.testEvents), "
                + "\"events\": \(n.events), \"applied\": \(n.applied), \"stale\": \(n.stale), \"own\": \(n.own), \"ignored\": \(n.ignored), "
                + "\"delete_failures\": \(n.deleteFailures), \"lag_ms\": {\"p50\": \(ms(n.lagPercentile(0.5))), \"p99\": \(ms(n.lagPercentile(0.99))), \"max\": \(ms(n.applied > 0 ? n.maxLag : nil)), \"last\": \(ms(n.lastLag))}, "
                + "\"receivers\": \(n.receivers), \"events_per_second\": \((n.eventsPerSecond * 10).rounded() / 10), \"backlog\": \(n.backlog.map(String.init) ?? "null"), "
                + "\"probes\": {\"sent\": \(n.probesSent), \"back\": \(n.probesBack), \"lost\": \(n.probesLost), \"foreign\": \(n.foreignProbes)}, "
                + "\"gaps\": \(n.gaps), \"gap\": \(n.gap.map(quoted) ?? "null"), "
                + "\"revalidations\": \(n.revalidations), \"revalidated_directories\": \(n.revalidatedDirectories), \"revalidation_changes\": \(n.revalidationChanges)},"
        }
        return """
        {
          "requests": {
        \(ops.joined(separator: ",\n"))
          },
          "requests_total": \(r?.total ?? 0),
          "not_found_404": \(r?.notFound ?? 0),
          "retries": \(r?.retries ?? 0),
          "bytes_downloaded": \(r?.bytesDown ?? 0),
          "bytes_uploaded": \(r?.bytesUp ?? 0),
          "requests_in_flight": \(s.requestsInFlight),
          "open_handles": {"read": \(s.openReaders), "write": \(s.openWriters), "directory": \(s.openDirectories)},
          "bulk_request_waits": \(s.bulkWaits),
          "cache": {
            "attributes": {"hits": \(c.attrHits), "misses": \(c.attrMisses), "hit_rate": \(hitRate(c.attrHits, c.attrMisses))},
            "negative": {"hits": \(c.negativeHits)},
            "listings": {"hits": \(c.listingHits), "misses": \(c.listingMisses), "hit_rate": \(hitRate(c.listingHits, c.listingMisses))},
            "requests_avoided": \(c.attrHits + c.negativeHits + c.listingHits)
          },
          "entries": {"inodes": \(s.inodes), "attributes": \(s.attributes), "negative": \(s.negatives), "complete_directories": \(s.completeDirectories)},
          "metadata": \(metadata),
          "reads": \(reads),
          "bad_answers": {"short_reads": \(s.shortReads), "verification_failures": \(s.verificationFailures)},
          "deletes": {"batched": \(s.deletesBatched), "batches": \(s.deleteBatches), "pending": \(s.deletesPending), "failed": \(s.deletesFailed)},
          "archived": {"listed": \(s.archive.listed), "refused_opens": \(s.archive.refusedOpens), "restoring_seen": \(s.archive.restoringSeen), "restores_started": \(s.archive.restoresStarted)},
          "fuse_errors": {\(errors)},\(writeBack)\(notifications)
          "pools": {\(pools)},
          "heap_bytes": \(s.heapBytes),
          "skipped_keys": \(c.skippedNames)
        }
        """
    }

    public static func prometheus(_ s: MountStats, fuseErrors: FuseErrors) -> String {
        let c = s.cache
        let snap = s.requests
        var out = "# HELP s3mount_requests_total S3 requests sent, by operation and outcome.\n# TYPE s3mount_requests_total counter\n"
        for (op, outcomes) in (snap?.requests ?? [:]).sorted(by: { $0.key < $1.key }) {
            for (o, n) in outcomes.sorted(by: { $0.key < $1.key }) {
                out += "s3mount_requests_total{operation=\"\(op)\",outcome=\"\(o)\"} \(n)\n"
            }
        }
        func counter(_ name: String, _ help: String, _ v: Int64) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) counter\n\(name) \(v)\n"
        }
        func gauge(_ name: String, _ help: String, _ v: Int) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n\(name) \(v)\n"
        }
        counter("s3mount_not_found_total", "S3 requests answered 404.", Int64(snap?.notFound ?? 0))
        counter("s3mount_retries_total", "S3 requests retried.", Int64(snap?.retries ?? 0))
        counter("s3mount_bytes_downloaded_total", "Bytes received from S3.", snap?.bytesDown ?? 0)
        counter("s3mount_bytes_uploaded_total", "Bytes sent to S3.", snap?.bytesUp ?? 0)
        counter("s3mount_requests_avoided_total", "Lookups, stats and listings answered from the caches.", Int64(c.attrHits + c.negativeHits + c.listingHits))
        gauge("s3mount_requests_in_flight", "S3 requests in flight.", s.requestsInFlight)
        counter("s3mount_bulk_request_waits_total", "Bulk requests (uploads, copies, prefetch) that waited for a request slot.", Int64(s.bulkWaits))
        out += "# HELP s3mount_cache_hits_total Answers from a cache.\n# TYPE s3mount_cache_hits_total counter\n"
        out += "s3mount_cache_hits_total{cache=\"attributes\"} \(c.attrHits)\ns3mount_cache_hits_total{cache=\"negative\"} \(c.negativeHits)\ns3mount_cache_hits_total{cache=\"listings\"} \(c.listingHits)\n"
        if let d = s.dataCache { out += "s3mount_cache_hits_total{cache=\"data\"} \(d.hits)\n" }
        out += "# HELP s3mount_cache_misses_total Answers that needed S3.\n# TYPE s3mount_cache_misses_total counter\n"
        out += "s3mount_cache_misses_total{cache=\"attributes\"} \(c.attrMisses)\ns3mount_cache_misses_total{cache=\"listings\"} \(c.listingMisses)\n"
        if let d = s.dataCache { out += "s3mount_cache_misses_total{cache=\"data\"} \(d.misses)\n" }
        out += "# HELP s3mount_cached_entries Entries held in memory.\n# TYPE s3mount_cached_entries gauge\n"
        out += "s3mount_cached_entries{kind=\"inodes\"} \(s.inodes)\ns3mount_cached_entries{kind=\"attributes\"} \(s.attributes)\ns3mount_cached_entries{kind=\"negative\"} \(s.negatives)\ns3mount_cached_entries{kind=\"complete_directories\"} \(s.completeDirectories)\n"
        out += "# HELP s3mount_metadata_requests_total S3 requests made for modes, owners, mtimes and symlinks, by kind.\n# TYPE s3mount_metadata_requests_total counter\n"
        for (k, v) in [("index_get", s.indexGets), ("index_put", s.indexPuts), ("index_delete", s.indexDeletes), ("index_probe", s.indexProbes),
                       ("metadata_copy", s.metadataCopies), ("head", s.metadataHeads)] {
            out += "s3mount_metadata_requests_total{kind=\"\(k)\"} \(v)\n"
        }
        counter("s3mount_read_parts_total", "Ranged parts fetched for parallel readers.", Int64(s.partsFetched))
        gauge("s3mount_read_memory_bytes", "Bytes held in read buffers of parallel readers.", s.readMemoryBytes)
        if let d = s.dataCache {
            counter("s3mount_data_cache_bytes_served_total", "Bytes read from the local data cache.", d.bytesServed)
            gauge("s3mount_data_cache_bytes", "Bytes held in the local data cache.", Int(d.bytesCached))
        }
        counter("s3mount_verification_failures_total", "Answers whose bytes did not match the object's checksum or ETag.", Int64(s.verificationFailures))
        counter("s3mount_deletes_batched_total", "Unlinks answered at once during a burst, their keys deleted in batches (DeleteObjects).", Int64(s.deletesBatched))
        counter("s3mount_delete_batches_total", "DeleteObjects requests sent for batched unlinks.", Int64(s.deleteBatches))
        gauge("s3mount_deletes_pending", "Keys of answered unlinks not deleted yet (waiting or on the wire).", s.deletesPending)
        counter("s3mount_deletes_failed_total", "Keys of answered unlinks a batch could not delete (their files show again).", Int64(s.deletesFailed))
        gauge("s3mount_archived_listed", "Entries known now (listed within the TTL) in an archived storage class.", s.archive.listed)
        counter("s3mount_archived_refused_opens_total", "Opens of archived objects (GLACIER, DEEP_ARCHIVE) refused: not restored.", Int64(s.archive.refusedOpens))
        counter("s3mount_archived_restoring_opens_total", "Opens of archived objects refused while their restore ran.", Int64(s.archive.restoringSeen))
        counter("s3mount_restores_started_total", "Restores of archived objects this mount started (s3mount restore).", Int64(s.archive.restoresStarted))
        if let w = s.writeBack {
            gauge("s3mount_write_back_pending", "Closed files whose upload is owed (--write-back).", w.pending)
            gauge("s3mount_write_back_pending_bytes", "Bytes of closed files whose upload is owed.", Int(w.pendingBytes))
            counter("s3mount_write_back_uploaded_total", "Write-back uploads that landed.", Int64(w.uploaded))
            counter("s3mount_write_back_failed_total", "Write-back uploads that failed for good (kept in the spool).", Int64(w.failed))
        }
        out += "# HELP s3mount_fuse_errors_total Error replies to the kernel, by FUSE operation and errno.\n# TYPE s3mount_fuse_errors_total counter\n"
        for (op, byErrno) in fuseErrors.sorted(by: { $0.key < $1.key }) {
            for (e, n) in byErrno.sorted(by: { $0.key < $1.key }) {
                out += "s3mount_fuse_errors_total{operation=\"\(op)\",errno=\"\(errnoName(e))\"} \(n)\n"
            }
        }
        out += "# HELP s3mount_pool_threads Worker threads started, by pool.\n# TYPE s3mount_pool_threads gauge\n"
        for p in s.pools { out += "s3mount_pool_threads{pool=\"\(p.name)\"} \(p.threads)\n" }
        gauge("s3mount_heap_bytes", "Heap memory in use by the daemon (malloc).", s.heapBytes)
        if let n = s.notifications {
            out += "# HELP s3mount_notification_events_total S3 events received from the notification queue, by outcome.\n# TYPE s3mount_notification_events_total counter\n"
            for (k, v) in [("applied", n.applied), ("stale", n.stale), ("own", n.own), ("ignored", n.ignored)] {
                out += "s3mount_notification_events_total{outcome=\"\(k)\"} \(v)\n"
            }
            counter("s3mount_notification_messages_total", "Messages received from the notification queue.", Int64(n.messages))
            counter("s3mount_notification_malformed_total", "Queue messages that were not S3 events (deleted).", Int64(n.malformed))
            counter("s3mount_notification_poll_errors_total", "Polls of the notification queue that failed.", Int64(n.pollErrors))
            gauge("s3mount_notification_healthy", "1 while the notification queue answers.", n.healthy ? 1 : 0)
            gauge("s3mount_notification_trusted", "1 while every event is known to arrive (no gap: the long TTL applies).", n.gap == nil && n.healthy ? 1 : 0)
            counter("s3mount_notification_gaps_total", "Times the mount found it was missing events.", Int64(n.gaps))
            counter("s3mount_notification_probes_lost_total", "Probes sent to the queue that did not come back.", Int64(n.probesLost))
            counter("s3mount_notification_revalidations_total", "Revalidations of the cached listings after a gap.", Int64(n.revalidations))
            out += "# HELP s3mount_notification_events_per_second Events received per second (the last 10 s).\n# TYPE s3mount_notification_events_per_second gauge\n"
            out += "s3mount_notification_events_per_second \(n.eventsPerSecond)\n"
            if let b = n.backlog { gauge("s3mount_notification_backlog", "Messages waiting in the queue (its estimate, sampled during bursts).", b) }
            out += "# HELP s3mount_notification_lag_seconds Time from an event to its application (recent events).\n# TYPE s3mount_notification_lag_seconds summary\n"
            for q in [0.5, 0.99] { if let v = n.lagPercentile(q) { out += "s3mount_notification_lag_seconds{quantile=\"\(q)\"} \(v)\n" } }
        }
        return out
    }

    /// One line for the log (SIGUSR1): the headline figures.
    public static func summary(_ s: MountStats) -> String {
        let c = s.cache
        let snap = s.requests
        let ops = (snap?.requests ?? [:]).sorted(by: { $0.key < $1.key }).map { "\($0.key)=\($0.value.values.reduce(0, +))" }.joined(separator: " ")
        let avoided = c.attrHits + c.negativeHits + c.listingHits
        let lookups = c.attrHits + c.attrMisses + c.negativeHits
        let rate = lookups == 0 ? "n/a" : "\(Int(Double(c.attrHits + c.negativeHits) / Double(lookups) * 100))%"
        return "stats: requests \(snap?.total ?? 0) (\(ops)), 404s \(snap?.notFound ?? 0), retries \(snap?.retries ?? 0), requests avoided \(avoided), lookup cache hit rate \(rate), listings cached \(c.listingHits)/\(c.listingHits + c.listingMisses), down \(snap?.bytesDown ?? 0) B, up \(snap?.bytesUp ?? 0) B"
    }

    /// "ENOENT" for 2: the names users search logs and dashboards for.
    static func errnoName(_ e: Int32) -> String {
        let names: [Int32: String] = [EPERM: "EPERM", ENOENT: "ENOENT", EINTR: "EINTR", EIO: "EIO", EBADF: "EBADF", EAGAIN: "EAGAIN",
                                      ENOMEM: "ENOMEM", EACCES: "EACCES", EEXIST: "EEXIST", EXDEV: "EXDEV", ENOTDIR: "ENOTDIR",
                                      EISDIR: "EISDIR", EINVAL: "EINVAL", ENFILE: "ENFILE", EMFILE: "EMFILE", ENOTTY: "ENOTTY",
                                      EFBIG: "EFBIG", ENOSPC: "ENOSPC", EROFS: "EROFS", ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS",
                                      ENOTEMPTY: "ENOTEMPTY", ENODATA: "ENODATA", EOVERFLOW: "EOVERFLOW", ESTALE: "ESTALE",
                                      EDQUOT: "EDQUOT", ENOTSUP: "ENOTSUP", ERANGE: "ERANGE"]
        return names[e] ?? "E\(e)"
    }
}
