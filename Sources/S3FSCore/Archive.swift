import Glibc
import S3

/// Objects in an archived storage class (GLACIER, DEEP_ARCHIVE, or an Intelligent-Tiering archive
/// tier): their bytes cannot be read until a restore makes a temporary copy. An open for reading
/// fails at once with EACCES and one log line naming the object and the command that restores it,
/// instead of GETs that S3 refuses (403 InvalidObjectState) one by one (docs/SEMANTICS.md,
/// "Archived objects").
public struct ArchiveCounters: Sendable, Equatable {
    /// Entries the mount knows now (listed, within the TTL) whose storage class is archived.
    public var listed = 0
    /// Opens refused because the object is archived and not restored.
    public var refusedOpens = 0
    /// Opens of an archived object whose restore was still running.
    public var restoringSeen = 0
    /// Restores this mount started (`s3mount restore`).
    public var restoresStarted = 0
}

enum Archive {
    static let counters = Locked(ArchiveCounters())
    static let restoreHint = "s3mount restore PATH [--days N] [--tier Standard|Bulk|Expedited]"

    static func refusal(_ key: [UInt8], storageClass: String, restoring: Bool) -> FSError {
        counters.withLock { c in
            c.refusedOpens += 1
            if restoring { c.restoringSeen += 1 }
        }
        let name = Names.display(key)
        Log.shared.once(.warning, key: "archived:\(restoring):" + name, restoring
            ? "\"\(name)\" is in \(storageClass) storage and its restore is still running: it can be read once the restore completes (hours)"
            : "\"\(name)\" is in \(storageClass) storage: it can be read only after a restore; start one with: \(restoreHint)")
        return FSError(EACCES)
    }
}

extension Filesystem {
    /// nil when an object listed in an archived class can be read now (its restored copy is
    /// there), else the error its open answers. One HeadObject, for archived objects only.
    func archivedOpenError(_ key: [UInt8], _ entry: CachedEntry) -> FSError? {
        guard entry.isArchived, let storageClass = entry.storageClass else { return nil }
        let info: ObjectInfo
        do { info = try store.head(key) } catch { return FSError(error) }
        switch info.restore {
        case .restored: return nil
        case .ongoing: return Archive.refusal(key, storageClass: storageClass, restoring: true)
        case .none:
            // Moved out of the archive meanwhile (a copy to another class): readable.
            if let now = info.storageClass, !StorageClass.isArchived(now) { return nil }
            return Archive.refusal(key, storageClass: storageClass, restoring: false)
        }
    }

    /// `s3mount restore`: starts restoring the object of `name` in directory `dirIno` for
    /// `days` at `tier`.
    public func restore(dirIno: UInt64, name: [UInt8], days: Int, tier: String) -> Result<RestoreStarted, FSError> {
        guard (1...36500).contains(days), ["Standard", "Bulk", "Expedited"].contains(tier) else { return .failure(FSError(EINVAL)) }
        let dirPath: [UInt8]? = state.withLock { s in s.nodes[dirIno].flatMap { $0.kind == .directory ? path(of: $0) : nil } }
        guard let dirPath else { return .failure(FSError(ENOTDIR)) }
        switch resolve(dirPath: dirPath, name: name) {
        case .failure(let e): return .failure(e)
        case .success(nil): return .failure(FSError(ENOENT))
        case .success(let e?) where e.kind == .directory: return .failure(FSError(EISDIR))
        case .success: break
        }
        let key = Names.entryKey(dirPath: dirPath, name: name)
        do {
            let r = try store.restore(key, days: days, tier: tier)
            if r == .started { Archive.counters.withLock { $0.restoresStarted += 1 } }
            Log.info("restore of \"\(Names.display(key))\" (\(tier), \(days) days): \(r)")
            return .success(r)
        } catch {
            Log.warning("restore of \"\(Names.display(key))\": \(error)")
            return .failure(FSError(error))
        }
    }
}
