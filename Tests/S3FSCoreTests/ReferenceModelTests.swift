import Foundation
import XCTest
import S3
@testable import S3FSCore

/// Reference-model test (like mountpoint-s3's tests/reftests): random sequences of operations run
/// against `Filesystem` over an in-memory store and against `RefModel` (RefModel.swift), compared
/// after every step. A divergence is shrunk to a minimal sequence and printed one op per line with
/// the seed that replays it.
///
///   S3M_REFMODEL_CASES=100000 swift test --skip-build --filter ReferenceModel   # a soak
///   S3M_REFMODEL_START=500001                                                  # other seeds
///   S3M_REFMODEL_SEED=1234 swift test --skip-build --filter ReferenceModel     # replay one
///   S3M_REFMODEL_TRACE=1                                                       # each op and check
///
/// Out-of-band changes (another S3 client putting or deleting objects) appear in odd seeds only,
/// which run with `--metadata-ttl 0`: the mount then trusts nothing it cached, so such a change
/// must show at the next operation — except a file open for writing through the mount, which is
/// what its writer holds until it is closed (and then its upload wins: the last close wins), and a
/// listing already under way (a lookup may have started one in the background), which may finish
/// first (the runner waits for it: see `settle()`). Even seeds run with the default TTL (60 s,
/// longer than a sequence) and no other client: everything done through the mount must show at
/// once, whatever the caches hold. What the model leaves out on purpose is said where it is skipped
/// (`RefGenerator.allowedOutOfBand`, `RefModel.apply`) and in docs/ARCHITECTURE.md.
final class ReferenceModelTests: XCTestCase {
    static let defaultCases = 2000
    static let maxLength = 30

    func env(_ name: String) -> UInt64? { ProcessInfo.processInfo.environment[name].flatMap { UInt64($0) } }

    func testRandomSequencesMatchTheModel() throws {
        let spool = NSTemporaryDirectory() + "s3m-refmodel-\(getpid())"
        try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: spool) }
        let seeds: [UInt64]
        if let one = env("S3M_REFMODEL_SEED") {
            seeds = [one]
        } else {
            let start = env("S3M_REFMODEL_START") ?? 1
            seeds = Array(start..<(start + (env("S3M_REFMODEL_CASES") ?? UInt64(Self.defaultCases))))
        }
        let began = Date()
        var ops = 0
        for seed in seeds {
            let c = RefCase(seed: seed)
            if RefRunner.trace { print("seed \(seed):") } // a crash then shows which
            ops += c.ops.count
            guard let failure = c.run(spool: spool) else { continue }
            print("reference model: seed \(seed) diverged at op \(failure.step + 1): \(failure.message); shrinking")
            let (shrunk, last) = c.shrink(failure, spool: spool)
            let text = """
            reference model: seed \(seed) diverged (\(c.events ? "metadata TTL indefinite, with another client, S3 events delivered" : c.outOfBand ? "metadata TTL 0, with another client" : "metadata TTL 60"), \
            list pages of \(c.pageSize)); \(c.ops.count) ops shrunk to \(shrunk.count):
            \(shrunk.enumerated().map { "  \($0.offset + 1). \($0.element)" }.joined(separator: "\n"))
            at op \(last.step + 1): \(last.message)
            (first seen at op \(failure.step + 1) of \(c.ops.count): \(failure.message))
            replay: S3M_REFMODEL_SEED=\(seed) swift test --skip-build --filter ReferenceModel
            """
            print(text)
            XCTFail(text)
            return
        }
        print("reference model: \(seeds.count) sequences, \(ops) ops, all as the model says (\(String(format: "%.1f", Date().timeIntervalSince(began))) s)")
    }
}

/// Where and how a run diverged from the model.
struct RefFailure {
    var step: Int
    var message: String
}

/// One generated sequence and its configuration, all from the seed.
struct RefCase {
    let seed: UInt64
    let outOfBand: Bool
    /// Half the out-of-band seeds run with an indefinite TTL and notifications on instead: every
    /// change to the store (the mount's own, and the other client's) is delivered as its S3 event
    /// after each op, twice (the second a duplicate). Nothing but the events can then show the other
    /// client's changes, and they must show at once.
    let events: Bool
    let pageSize: Int
    let ops: [RefOp]

    init(seed: UInt64) {
        self.seed = seed
        outOfBand = seed % 2 == 1
        events = seed % 4 == 3
        var rng = SeededRNG(seed: seed ^ 0x5EED)
        pageSize = rng.pick([1, 2, 3, 1000])
        let length = rng.int(5...ReferenceModelTests.maxLength)
        var gen = RefGenerator(seed: seed, outOfBand: outOfBand)
        ops = gen.sequence(length: length) { m, op in _ = m.apply(op) }
    }

    func run(_ ops: [RefOp]? = nil, spool: String) -> RefFailure? {
        RefRunner(outOfBand: outOfBand, events: events, pageSize: pageSize, spool: spool).run(ops ?? self.ops)
    }

    /// Drops ops (halves, quarters, … single ones) and simplifies them while the run still
    /// diverges; returns the smallest sequence found and how it fails.
    func shrink(_ first: RefFailure, spool: String) -> ([RefOp], RefFailure) {
        var best = Array(ops[0...min(first.step, ops.count - 1)])
        var failure = first
        func attempt(_ candidate: [RefOp]) -> Bool {
            // A divergence that depends on timing (a listing still under way) may need a few runs.
            var found: RefFailure? = nil
            for _ in 0..<3 where found == nil { found = run(candidate, spool: spool) }
            guard let f = found else { return false }
            best = Array(candidate[0...min(f.step, candidate.count - 1)])
            failure = f
            return true
        }
        var progress = true
        while progress {
            progress = false
            var chunk = max(1, best.count / 2)
            while chunk >= 1 {
                var i = 0
                while i < best.count {
                    var candidate = best
                    candidate.removeSubrange(i..<min(best.count, i + chunk))
                    if !candidate.isEmpty && attempt(candidate) { progress = true } else { i += chunk }
                }
                chunk /= 2
            }
            for i in best.indices {
                guard i < best.count else { break }
                for simpler in best[i].simpler {
                    var candidate = best
                    candidate[i] = simpler
                    if attempt(candidate) { progress = true; break }
                }
            }
        }
        return (best, failure)
    }
}

/// Runs ops on a fresh Filesystem and the model side by side, the way the kernel would call the
/// filesystem (path walks by lookup, the VFS's own checks of rename, mkdir, rmdir, unlink first).
final class RefRunner {
    let fs: Filesystem
    let store = InMemoryStore()
    let spool: String
    let outOfBand: Bool
    let events: Bool
    var model = RefModel()
    /// Model handle id -> the filesystem's handle and inode.
    var open: [Int: (fh: UInt64, ino: UInt64)] = [:]

    init(outOfBand: Bool, events: Bool = false, pageSize: Int, spool: String) {
        var o = FSOptions()
        o.metadataTTL = events ? .infinity : outOfBand ? 0 : 60
        o.notifications = events
        store.recordEvents = events
        o.sweepCaches = false
        o.spoolDir = spool
        o.listPageSize = pageSize
        // Small parts: files of a few hundred bytes go up as multipart uploads.
        o.multipartThreshold = 256
        o.partSize = 100
        o.parallelParts = 4
        fs = Filesystem(store: store, options: o)
        self.spool = spool
        self.outOfBand = outOfBand
        self.events = events
    }

    static func b(_ s: String) -> [UInt8] { Array(s.utf8) }
    /// S3M_REFMODEL_TRACE=1: every op and what the mount answered, and every check, as they run.
    static let trace = ProcessInfo.processInfo.environment["S3M_REFMODEL_TRACE"] != nil

    /// Runs the sequence; whatever happened, nothing is left open or in the spool directory after.
    func run(_ ops: [RefOp]) -> RefFailure? {
        let failure = steps(ops)
        for fh in open.values.map({ $0.fh }).sorted() { fs.release(handle: fh) }
        open = [:]
        for f in (try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? [] { try? FileManager.default.removeItem(atPath: spool + "/" + f) }
        return failure
    }

    func steps(_ ops: [RefOp]) -> RefFailure? {
        LogTap.during { steps(ops, tap: $0) }
    }

    func steps(_ ops: [RefOp], tap: LogTap) -> RefFailure? {
        for (i, op) in ops.enumerated() {
            let dirsBefore = outOfBand ? model.directories : []
            let expect = model.apply(op)
            if case .skip = expect { continue }
            let got = perform(op)
            if let m = Self.unexpectedLog(tap.take(), got) { return RefFailure(step: i, message: "\(op): \(m)") }
            deliverEvents()
            // An implicit directory (no marker, made by another client) whose last key went: like
            // another client's change, it shows in the listings begun after it (see settle()).
            if outOfBand && !dirsBefore.subtracting(model.directories).subtracting(removed(op, dirsBefore)).isEmpty { settle() }
            if Self.trace { print("  \(i + 1). \(op): \(got)") }
            if !expect.allows(got) { return RefFailure(step: i, message: "\(op): the mount answered \(got), the model expects \(expect)") }
            if let m = check(touched(op)) { return RefFailure(step: i, message: "after \(op): \(m)") }
        }
        // Every handle closed (each close uploads), then the whole tree and the bucket must match.
        let last = max(0, ops.count - 1)
        for id in model.handles.keys.sorted() {
            let op = RefOp.release(h: id)
            let dirsBefore = outOfBand ? model.directories : []
            let expect = model.apply(op)
            let got = perform(op)
            if let m = Self.unexpectedLog(tap.take(), got) { return RefFailure(step: last, message: "closing #\(id) at the end: \(m)") }
            deliverEvents()
            // The last reader of an unlinked file closed: its object went (see steps()).
            if outOfBand && !dirsBefore.subtracting(model.directories).isEmpty { settle() }
            if !expect.allows(got) { return RefFailure(step: last, message: "closing #\(id) at the end: the mount answered \(got), the model expects \(expect)") }
        }
        if let m = checkTree("") { return RefFailure(step: last, message: "at the end, all closed: \(m)") }
        if let m = checkStore(exact: true) { return RefFailure(step: last, message: "at the end, all closed: \(m)") }
        let left = (try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []
        if !left.isEmpty { return RefFailure(step: last, message: "at the end, all closed: spool files left: \(left)") }
        return nil
    }

    /// What an op may log: why it failed, when it failed because another client (or a rename or
    /// truncate through the mount) changed the object under an open handle. Any other line, or
    /// one of these after an op that did not fail, is a divergence. (Captured, so that a green run
    /// prints none of the errors these sequences provoke on purpose.)
    static let expectedLines = try! NSRegularExpression(pattern:
        #"^\S+ s3mount\[\d+\] (error: loading \S+ before changing it: GetObject failed with HTTP (412 PreconditionFailed|404 NoSuchKey)"#
        + #"|warning: \S+ changed since it was opened \(ETag differs\))$"#)

    /// What any op may log: a state of the bucket another client made (a key that is both a file
    /// and a prefix), said once, by whichever listing meets it first (which one depends on timing).
    static let informationLines = try! NSRegularExpression(pattern: #"^\S+ s3mount\[\d+\] info: ".*" is both a file and a prefix; showing the directory$"#)

    static func unexpectedLog(_ log: String, _ got: RefOutcome) -> String? {
        let lines = log.split(separator: "\n").map(String.init)
            .filter { informationLines.firstMatch(in: $0, range: NSRange($0.startIndex..., in: $0)) == nil }
        if lines.isEmpty { return nil }
        if case .err = got {} else { return "the mount answered \(got) and logged: \(lines)" }
        let odd = lines.filter { expectedLines.firstMatch(in: $0, range: NSRange($0.startIndex..., in: $0)) == nil }
        return odd.isEmpty ? nil : "the mount answered \(got) and logged what no failure of it explains: \(odd)"
    }

    // MARK: - the kernel's side

    enum Walked { case root, missing(parent: UInt64), found(parent: UInt64, Attributes) }

    /// Looks a path up component by component; ENOENT or ENOTDIR on the way, as the kernel says.
    func walk(_ p: String) -> Result<Walked, FSError> {
        if p.isEmpty { return .success(.root) }
        let parts = p.split(separator: "/").map(String.init)
        var ino = Filesystem.rootIno
        for (i, name) in parts.enumerated() {
            let last = i == parts.count - 1
            switch fs.lookup(parent: ino, name: Self.b(name)) {
            case .failure(let e): return .failure(e)
            case .success(nil): return last ? .success(.missing(parent: ino)) : .failure(FSError(ENOENT))
            case .success(let a?):
                if last { return .success(.found(parent: ino, a)) }
                if a.kind != .directory { return .failure(FSError(ENOTDIR)) }
                ino = a.ino
            }
        }
        fatalError("unreachable")
    }

    func name(_ p: String) -> [UInt8] { Self.b(String(p.split(separator: "/").last ?? "")) }

    func result(_ e: FSError?) -> RefOutcome { e.map { .err($0.errno) } ?? .ok }

    func perform(_ op: RefOp) -> RefOutcome {
        switch op {
        case .mkdir(let p):
            switch walk(p) {
            case .failure(let e): return .err(e.errno)
            case .success(.found), .success(.root): return .err(EEXIST)
            case .success(.missing(let parent)):
                switch fs.mkdir(parent: parent, name: name(p)) {
                case .failure(let e): return .err(e.errno)
                case .success: return .ok
                }
            }
        case .rmdir(let p), .unlink(let p):
            let isRmdir: Bool
            if case .rmdir = op { isRmdir = true } else { isRmdir = false }
            switch walk(p) {
            case .failure(let e): return .err(e.errno)
            case .success(.root): return .err(EBUSY)
            case .success(.missing): return .err(ENOENT)
            case .success(.found(let parent, let a)):
                if isRmdir && a.kind != .directory { return .err(ENOTDIR) }
                if !isRmdir && a.kind == .directory { return .err(EISDIR) }
                return result(isRmdir ? fs.rmdir(parent: parent, name: name(p)) : fs.unlink(parent: parent, name: name(p)))
            }
        case .create(let p, let h), .openWrite(let p, let h, _), .openRead(let p, let h):
            var flags: Int32 = O_WRONLY | O_TRUNC
            if case .openWrite(_, _, let t) = op, !t { flags = O_RDWR }
            if case .openRead = op { flags = O_RDONLY }
            switch walk(p) {
            case .failure(let e): return .err(e.errno)
            case .success(.root): return .err(EISDIR)
            case .success(.missing(let parent)):
                guard case .create = op else { return .err(ENOENT) }
                switch fs.create(parent: parent, name: name(p), flags: O_WRONLY | O_CREAT | O_TRUNC) {
                case .failure(let e): return .err(e.errno)
                case .success(let (a, fh)): open[h] = (fh, a.ino); return .ok
                }
            case .success(.found(_, let a)):
                switch fs.open(ino: a.ino, flags: flags) {
                case .failure(let e): return .err(e.errno)
                case .success(let fh): open[h] = (fh, a.ino); return .ok
                }
            }
        case .write(let h, let offset, let len, let fill):
            let data = refBytes(len, fill: fill)
            switch data.withUnsafeBytes({ fs.write(handle: open[h]!.fh, offset: Int64(offset), data: $0) }) {
            case .failure(let e): return .err(e.errno)
            case .success(let n): return .count(n)
            }
        case .read(let h, let offset, let len):
            switch fs.read(handle: open[h]!.fh, offset: Int64(offset), size: len) {
            case .failure(let e): return .err(e.errno)
            case .success(let d): return .data(d)
            }
        case .truncate(let h, let size):
            switch fs.setattr(ino: open[h]!.ino, size: Int64(size), mode: nil, uid: nil, gid: nil, handle: open[h]!.fh) {
            case .failure(let e): return .err(e.errno)
            case .success: return .ok
            }
        case .truncatePath(let p, let size):
            switch walk(p) {
            case .failure(let e): return .err(e.errno)
            case .success(.root): return .err(EISDIR)
            case .success(.missing): return .err(ENOENT)
            case .success(.found(_, let a)):
                if a.kind == .directory { return .err(EISDIR) }
                switch fs.setattr(ino: a.ino, size: Int64(size), mode: nil, uid: nil, gid: nil, handle: nil) {
                case .failure(let e): return .err(e.errno)
                case .success: return .ok
                }
            }
        case .flush(let h, let sync):
            return result(sync ? fs.fsync(handle: open[h]!.fh) : fs.flush(handle: open[h]!.fh))
        case .release(let h):
            // close(2): FLUSH (its error is close's), then RELEASE.
            let fh = open.removeValue(forKey: h)!.fh
            let e = fs.flush(handle: fh)
            fs.release(handle: fh)
            return result(e)
        case .getattr(let h):
            switch fs.getattr(ino: open[h]!.ino) {
            case .failure(let e): return .err(e.errno)
            case .success(let a): return .count(Int(a.size))
            }
        case .rename(let src, let dst, let noReplace):
            return rename(src, dst, noReplace: noReplace)
        case .readdir(let p):
            return listing(p)
        case .lookup(let p):
            return stat(p)
        case .cat(let p):
            switch walk(p) {
            case .failure(let e): return .err(e.errno)
            case .success(.root): return .err(EISDIR)
            case .success(.missing): return .err(ENOENT)
            case .success(.found(_, let a)): return cat(a.ino)
            }
        case .oobPut(let key, let len, let fill):
            settle()
            store.put(Self.b(key), refBytes(len, fill: fill))
            return .ok
        case .oobDelete(let key):
            settle()
            store.remove(key)
            return .ok
        }
    }

    /// Directories an op removes by name (rmdir, the source of a rename, and all below).
    func removed(_ op: RefOp, _ dirs: Set<String>) -> Set<String> {
        switch op {
        case .rmdir(let p): return [p]
        case .rename(let src, _, _): return dirs.filter { $0 == src || RefModel.isInside($0, src) }
        default: return []
        }
    }

    /// Another client's change comes after the listings under way (a lookup may have started one
    /// that goes on in the background): with TTL 0 it shows in every listing begun after it.
    /// Notifications: what changed in the store since the last op reaches the mount as S3 events,
    /// each twice (SQS delivers at least once).
    func deliverEvents() {
        guard events else { return }
        // The events of unlinks answered at once come once their batch has landed.
        fs.deletes.flush()
        let batch = store.takeEvents()
        for e in batch + batch { _ = fs.applyEvent(e, bucket: "mem") }
    }

    func settle() {
        while !fs.state.withLock({ $0.listings.isEmpty }) { usleep(200) }
        // Unlinks answered at once wait for their batch: another client's change comes after it
        // (one racing the batch may be undone by it: docs/SEMANTICS.md, "Unlinks in a burst").
        fs.deletes.flush()
    }

    /// rename(2): the VFS's checks, then the filesystem's rename.
    func rename(_ src: String, _ dst: String, noReplace: Bool) -> RefOutcome {
        let s: Walked, d: Walked
        switch walk(src) {
        case .failure(let e): return .err(e.errno)
        case .success(let w): s = w
        }
        switch walk(dst) {
        case .failure(let e): return .err(e.errno)
        case .success(let w): d = w
        }
        guard case .found(let sp, let sa) = s else { return .err(ENOENT) }
        let dstAttr: Attributes?
        let dp: UInt64
        switch d {
        case .root: return .err(EBUSY)
        case .missing(let parent): dp = parent; dstAttr = nil
        case .found(let parent, let a): dp = parent; dstAttr = a
        }
        if noReplace && dstAttr != nil { return .err(EEXIST) }
        if RefModel.isInside(dst, src) { return .err(EINVAL) }
        if RefModel.isInside(src, dst) { return .err(ENOTEMPTY) }
        if let da = dstAttr, da.ino == sa.ino { return .ok }
        if let da = dstAttr, sa.kind == .file && da.kind == .directory { return .err(EISDIR) }
        if let da = dstAttr, sa.kind == .directory && da.kind == .file { return .err(ENOTDIR) }
        return result(fs.rename(parent: sp, name: name(src), newParent: dp, newName: name(dst), flags: noReplace ? Filesystem.renameNoReplace : 0))
    }

    func stat(_ p: String) -> RefOutcome {
        switch walk(p) {
        case .failure(let e): return .err(e.errno)
        case .success(.root): return .stat("dir")
        case .success(.missing): return .err(ENOENT)
        case .success(.found(_, let a)): return .stat(a.kind == .directory ? "dir" : "file \(a.size)")
        }
    }

    /// opendir + readdirplus to the end + releasedir.
    func listing(_ p: String) -> RefOutcome {
        let ino: UInt64
        switch walk(p) {
        case .failure(let e): return .err(e.errno)
        case .success(.root): ino = Filesystem.rootIno
        case .success(.missing): return .err(ENOENT)
        case .success(.found(_, let a)):
            if a.kind != .directory { return .err(ENOTDIR) }
            ino = a.ino
        }
        let h: UInt64
        switch fs.opendir(ino: ino) {
        case .failure(let e): return .err(e.errno)
        case .success(let x): h = x
        }
        defer { fs.releasedir(handle: h) }
        var out: [String] = []
        var off: Int64 = 0
        while true {
            var got = 0
            if let e = fs.readdir(handle: h, offset: off, plus: true, add: { e in
                if !e.isDotEntry {
                    let name = String(decoding: e.name, as: UTF8.self)
                    out.append(e.kind == .directory ? name + "/" : "\(name) \(e.attributes.map { String($0.size) } ?? "?")")
                }
                off = e.nextOffset
                got += 1
                return true
            }) { return .err(e.errno) }
            if got == 0 { break }
        }
        return .entries(out.sorted())
    }

    /// open(O_RDONLY), read to the end in 64-byte reads, close.
    func cat(_ ino: UInt64) -> RefOutcome {
        let h: UInt64
        switch fs.open(ino: ino, flags: O_RDONLY) {
        case .failure(let e): return .err(e.errno)
        case .success(let x): h = x
        }
        defer { fs.release(handle: h) }
        var out: [UInt8] = []
        while true {
            switch fs.read(handle: h, offset: Int64(out.count), size: 64) {
            case .failure(let e): return .err(e.errno)
            case .success(let d):
                if d.isEmpty { return .data(out) }
                out += d
            }
        }
    }

    // MARK: - comparing visible state

    /// The paths an op touched (after it: a handle's current path).
    func touched(_ op: RefOp) -> [String] {
        switch op {
        case .mkdir(let p), .rmdir(let p), .create(let p, _), .openWrite(let p, _, _), .openRead(let p, _), .truncatePath(let p, _),
             .unlink(let p), .readdir(let p), .lookup(let p), .cat(let p):
            return [p]
        case .rename(let a, let b, _): return [a, b]
        case .oobPut(let k, _, _), .oobDelete(let k):
            return [k.hasSuffix("/") ? String(k.dropLast()) : k]
        case .write(let h, _, _, _), .read(let h, _, _), .truncate(let h, _), .flush(let h, _), .release(let h), .getattr(let h):
            return model.handles[h].map { [$0.path] } ?? []
        }
    }

    /// After a step: each touched path and its parent (stat, listing, a closed file's bytes),
    /// every open handle's size, and the bucket.
    func check(_ paths: [String]) -> String? {
        var done = Set<String>()
        for p in paths {
            for q in [RefModel.parent(p), p] where done.insert(q).inserted {
                if let m = checkPath(q) { return m }
            }
        }
        for (id, h) in model.handles.sorted(by: { $0.key < $1.key }) {
            guard let fh = open[id] else { return "#\(id) is open in the model only" }
            guard let size = model.fstat(id) else { continue }
            let want = RefOutcome.count(size)
            let got: RefOutcome
            switch fs.getattr(ino: fh.ino) {
            case .failure(let e): got = .err(e.errno)
            case .success(let a): got = .count(Int(a.size))
            }
            if got != want { return "fstat #\(id) (\(h.path)\(h.detached ? ", unlinked" : "")): the mount says \(got), the model \(want)" }
        }
        return checkStore(exact: false)
    }

    /// A path's stat, and its listing if a directory or its bytes if a closed file.
    func checkPath(_ p: String) -> String? {
        let shown = p.isEmpty ? "/" : p
        let (want, got) = (model.stat(p), stat(p))
        if Self.trace { print("     check \(shown): \(got)") }
        if want != got { return "stat \(shown): the mount says \(got), the model \(want)" }
        if want == .stat("dir") {
            let (lw, lg) = (model.listing(p), listing(p))
            if Self.trace { print("     check readdir \(shown): \(lg)") }
            if lw != lg { return "readdir \(shown): the mount lists \(lg), the model \(lw)" }
        } else if case .stat = want, model.writer(at: p) == nil {
            let data = model.objects[p] ?? []
            let got: RefOutcome
            switch walk(p) {
            case .success(.found(_, let a)): got = cat(a.ino)
            default: got = .err(ENOENT)
            }
            if got != .data(data) { return "cat \(shown): the mount reads \(got), the model \(RefOutcome.data(data))" }
        }
        return nil
    }

    /// Every path either side shows, from `dir` down.
    func checkTree(_ dir: String) -> String? {
        if let m = checkPath(dir) { return m }
        for (name, kind) in model.children(dir).sorted(by: { $0.key < $1.key }) where kind == .dir {
            if let m = checkTree(RefModel.join(dir, name)) { return m }
        }
        for (name, kind) in model.children(dir).sorted(by: { $0.key < $1.key }) where kind == .file {
            if let m = checkPath(RefModel.join(dir, name)) { return m }
        }
        return nil
    }

    /// The bucket holds what the model says (directory indexes aside). Mid-sequence, a key may
    /// still hold another object: that of a file unlinked while readers have it open (deleted at
    /// the last close), or where a file being written has changes to upload at its close (a
    /// rename of a file not in S3 yet leaves what the name held until then; after an unlink with
    /// readers, a new file of that name may carry the old object along).
    /// Keys of unlinks answered at once may stay until their batch is sent (at the end, all are).
    func checkStore(exact: Bool) -> String? {
        if exact { fs.deletes.flush() }
        let deferred = exact ? [] : Set(model.handles.values.filter { $0.deferred || ($0.writer && !$0.detached && $0.dirty) }.map { $0.path })
        let keys = Set(store.allKeys.filter { !$0.hasSuffix(".s3mount-meta") && !deferred.contains($0) })
            .filter { exact || model.objects[$0] != nil || !fs.deletes.hides(Self.b($0)) }
        let want = Set(model.objects.keys.filter { !deferred.contains($0) })
        if keys != want {
            return "the bucket holds \(keys.subtracting(want).sorted()) beyond the model and lacks \(want.subtracting(keys).sorted())"
        }
        for k in want.sorted() where store.data(k) != model.objects[k] {
            return "object \(k) holds \(RefOutcome.data(store.data(k) ?? [])), the model \(RefOutcome.data(model.objects[k]!))"
        }
        return nil
    }
}
