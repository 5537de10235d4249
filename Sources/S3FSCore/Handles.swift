import Glibc
import S3

/// What a handle (the `fh` the kernel passes back) stands for: a file open for reading, a file
/// open for writing (its spool and uploads), or an open directory (its listing).
enum Handle {
    case read(FileReader)
    case write(FileWriter)
    case dir(DirHandle)
    /// A file opened for reading while this mount holds unsent data of it (an open writer, or a
    /// write-back not landed yet): read from that writer's spool, not from S3.
    case spool(SpoolReader)
}

/// Reads of a spool file through a descriptor of its own: the writer may close (and remove) its
/// spool meanwhile, and the bytes stay readable until this handle is released.
final class SpoolReader: @unchecked Sendable {
    let fd: Int32
    let key: [UInt8]
    let ino: UInt64
    init?(path: String, key: [UInt8], ino: UInt64) {
        guard let fd = OwnedFile.open(path, O_RDONLY) else { return nil }
        self.fd = fd
        self.key = key
        self.ino = ino
    }
    func read(offset: Int64, length: Int) -> Result<[UInt8], FSError> {
        preadFully(fd, count: length, at: offset).map { .success($0) } ?? .failure(FSError(errno))
    }
    func close() { Glibc.close(fd) }
}

/// The mount's open handles: a part of its own with its own lock. The lock is a leaf: nothing is
/// called while it is held, so it may be taken while `Filesystem.state` is held (lock order:
/// `Filesystem.state`, then `HandleTable`), never the other way round.
final class HandleTable: @unchecked Sendable {
    private struct State {
        var next: UInt64 = 1
        var open: [UInt64: Handle] = [:]
        /// The writers among them again: lookups ask whether a key is open for writing, and
        /// must not walk every reader to find out.
        var writers: [UInt64: FileWriter] = [:]
    }
    private let state = Locked(State())

    func add(_ h: Handle) -> UInt64 {
        state.withLock { s in
            let n = s.next
            s.next += 1
            s.open[n] = h
            if case .write(let w) = h { s.writers[n] = w }
            return n
        }
    }

    func remove(_ n: UInt64) -> Handle? {
        state.withLock { s in
            s.writers[n] = nil
            return s.open.removeValue(forKey: n)
        }
    }

    func reader(_ n: UInt64) -> FileReader? {
        state.withLock { if case .read(let r)? = $0.open[n] { return r } else { return nil } }
    }

    func writer(_ n: UInt64) -> FileWriter? {
        state.withLock { if case .write(let w)? = $0.open[n] { return w } else { return nil } }
    }

    func spoolReader(_ n: UInt64) -> SpoolReader? {
        state.withLock { if case .spool(let r)? = $0.open[n] { return r } else { return nil } }
    }

    func dir(_ n: UInt64) -> DirHandle? {
        state.withLock { if case .dir(let d)? = $0.open[n] { return d } else { return nil } }
    }

    /// Replaces an open directory's state (its listing attached at the first readdir).
    func update(_ n: UInt64, _ d: DirHandle) { state.withLock { if case .dir? = $0.open[n] { $0.open[n] = .dir(d) } } }

    var writers: [FileWriter] { state.withLock { Array($0.writers.values) } }
    var readers: [FileReader] { state.withLock { $0.open.values.compactMap { if case .read(let r) = $0 { return r } else { return nil } } } }

    func writer(where match: (FileWriter) -> Bool) -> FileWriter? { state.withLock { $0.writers.values.first(where: match) } }
    var hasWriters: Bool { state.withLock { !$0.writers.isEmpty } }
    func isWriting(key: [UInt8]) -> Bool { state.withLock { s in !s.writers.isEmpty && s.writers.values.contains { $0.key == key } } }
    func isReading(key: [UInt8]) -> Bool { readers.contains { $0.key == key } }

    /// The writers that `match` picks, with their handles.
    func writers(where match: (FileWriter) -> Bool) -> [(UInt64, FileWriter)] {
        state.withLock { s in s.writers.filter { match($0.value) }.map { ($0.key, $0.value) } }
    }

    /// Takes out the writers that `match` picks (at unmount), with their handles.
    func removeWriters(where match: (FileWriter) -> Bool) -> [(UInt64, FileWriter)] {
        state.withLock { s in
            let out = s.writers.filter { match($0.value) }.map { ($0.key, $0.value) }
            for (n, _) in out { s.open[n] = nil; s.writers[n] = nil }
            return out
        }
    }

    /// Open handles by kind: for the statistics.
    var counts: (read: Int, write: Int, dir: Int) {
        state.withLock { s in
            var c = (read: 0, write: 0, dir: 0)
            for h in s.open.values {
                switch h {
                case .read, .spool: c.read += 1
                case .write: c.write += 1
                case .dir: c.dir += 1
                }
            }
            return c
        }
    }
}
