import Glibc
import S3

/// The end of a mount: what open files still hold is uploaded, leftovers of earlier runs reported.
extension Filesystem {
    // MARK: - shutdown

    /// Says in the log where files an earlier run could not upload wait (`s3mount-unsaved-*`) and
    /// spool files a run that ended abruptly left (`s3mount-spool-*`).
    public func reportLeftovers() {
        guard let d = Glibc.opendir(options.spoolDir) else { return }
        defer { closedir(d) }
        var unsaved = 0, spool = 0
        while let e = Glibc.readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix("s3mount-unsaved-") { unsaved += 1 } else if name.hasPrefix("s3mount-spool-"), !Self.inUse(options.spoolDir + "/" + name) { spool += 1 }
        }
        if unsaved > 0 {
            Log.warning("\(unsaved) file(s) an earlier run could not upload are kept in \(options.spoolDir) as s3mount-unsaved-*: copy back what you need, then delete them")
        }
        if spool > 0 {
            Log.warning("\(spool) spool file(s) from a run that ended abruptly are in \(options.spoolDir) as s3mount-spool-* (they may hold data that was never uploaded)")
        }
    }

    /// A spool file a running mount holds (locked): not a leftover. Only this user's regular
    /// files count (a FIFO planted there would block the open; anything else is no spool file).
    static func inUse(_ path: String) -> Bool {
        guard let f = OwnedFile.open(path, O_RDONLY) else { return true }
        defer { Glibc.close(f) }
        return flock(f, LOCK_EX | LOCK_NB) != 0
    }

    /// Uploads what open files still hold (the kernel will never send their release after an
    /// unmount). Bounded by `timeout` seconds; logs what it does.
    public func shutdown(timeout: Double) {
        // Unlinks answered before S3 had them: deleted before the mount ends (a crash loses them,
        // and their files stay in S3).
        deletes.flush()
        defer {
            // Metadata changes still waiting for their directory's index to be written.
            if !meta.flush() { Log.error("unmount: some metadata changes could not be written to their directories' indexes") }
            reads.cache?.close()
            // Records still open (failed uploads, a timeout) stay for the next mount.
            writeBack?.journal.close()
        }
        // Write-back uploads under way finish first (their writers are the pool's).
        drainWriteBack(timeout: timeout)
        // Files the kernel never released (umount -l, SIGTERM) whose data is already in S3: their
        // spool files go now, not left behind in the spool directory.
        for (_, w) in handles.removeWriters(where: { !$0.isDirty }) { w.close() }
        let dirty = handles.writers(where: { $0.isDirty })
        guard !dirty.isEmpty else { return }
        Log.info("unmount: uploading \(dirty.count) file(s) still open for writing (up to \(Int(timeout)) s)")
        let cond = Condition()
        var left = dirty.count
        for (h, w) in dirty {
            let t = Thread { [self] in
                if let e = flush(handle: h, final: true) { Log.error("unmount: \(Names.display(w.key)) not uploaded: \(e)") }
                w.close()
                cond.broadcast { left -= 1 }
            }
            t.start()
        }
        if !cond.wait(timeout: timeout, until: { left == 0 }) {
            Log.error("unmount: gave up waiting for \(left) upload(s) after \(Int(timeout)) s; their spool files are kept in \(options.spoolDir)")
        }
    }
}

/// What the core asks the bridge to tell the kernel.
public enum Invalidation: Sendable {
    case inode(UInt64)
    case entry(parent: UInt64, name: [UInt8])
}
