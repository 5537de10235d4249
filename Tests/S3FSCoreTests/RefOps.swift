import Glibc
@testable import S3FSCore

// For ReferenceModelTests: the operations a sequence is made of, what they answer, and a seeded
// generator of sequences (RefModel.swift holds the model they are checked against).

/// SplitMix64: small, fast, and the same sequence on every platform.
struct SeededRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func int(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }
    mutating func int(_ r: ClosedRange<Int>) -> Int { r.lowerBound + int(r.count) }
    mutating func chance(_ percent: Int) -> Bool { int(100) < percent }
    mutating func pick<T>(_ a: [T]) -> T { a[int(a.count)] }
}

/// The bytes a write or an out-of-band put carries: derived from a fill byte, so ops print short.
func refBytes(_ len: Int, fill: UInt8) -> [UInt8] { (0..<len).map { fill &+ UInt8(truncatingIfNeeded: $0 &* 7) } }

/// One step of a sequence. Handles are named by the id the op that opened them gave (`#3`): when a
/// shrink drops that op, the ops on #3 are skipped, and the rest keeps its meaning.
enum RefOp: CustomStringConvertible {
    case mkdir(String)
    case rmdir(String)
    /// open(O_CREAT|O_WRONLY|O_TRUNC) as the kernel does it: lookup, then create or open.
    case create(String, h: Int)
    /// open of an existing file for writing: O_RDWR (download-modify-upload) or O_WRONLY|O_TRUNC.
    case openWrite(String, h: Int, trunc: Bool)
    case openRead(String, h: Int)
    case write(h: Int, offset: Int, len: Int, fill: UInt8)
    case read(h: Int, offset: Int, len: Int)
    /// ftruncate (setattr size with the handle).
    case truncate(h: Int, size: Int)
    /// truncate(2) by path (setattr size, no handle).
    case truncatePath(String, size: Int)
    /// close() of a duplicate descriptor (flush), or fsync.
    case flush(h: Int, fsync: Bool)
    /// The last close: flush, then release.
    case release(h: Int)
    /// fstat.
    case getattr(h: Int)
    case rename(String, String, noReplace: Bool)
    case unlink(String)
    case readdir(String)
    case lookup(String)
    /// open(O_RDONLY), read everything, close.
    case cat(String)
    /// Another S3 client puts an object (key relative to the mount root; "x/" is a marker).
    case oobPut(String, len: Int, fill: UInt8)
    /// Another S3 client deletes an object.
    case oobDelete(String)

    var description: String {
        func hex(_ b: UInt8) -> String { "0x" + String(b, radix: 16) }
        switch self {
        case .mkdir(let p): return "mkdir \(p)"
        case .rmdir(let p): return "rmdir \(p)"
        case .create(let p, let h): return "create \(p) -> #\(h)"
        case .openWrite(let p, let h, let t): return "open \(p) \(t ? "O_WRONLY|O_TRUNC" : "O_RDWR") -> #\(h)"
        case .openRead(let p, let h): return "open \(p) O_RDONLY -> #\(h)"
        case .write(let h, let o, let l, let f): return "write #\(h) offset \(o) len \(l) fill \(hex(f))"
        case .read(let h, let o, let l): return "read #\(h) offset \(o) len \(l)"
        case .truncate(let h, let s): return "ftruncate #\(h) \(s)"
        case .truncatePath(let p, let s): return "truncate \(p) \(s)"
        case .flush(let h, let f): return f ? "fsync #\(h)" : "flush #\(h)"
        case .release(let h): return "close #\(h)"
        case .getattr(let h): return "fstat #\(h)"
        case .rename(let a, let b, let n): return "rename \(a) -> \(b)\(n ? " RENAME_NOREPLACE" : "")"
        case .unlink(let p): return "unlink \(p)"
        case .readdir(let p): return "readdir \(p.isEmpty ? "/" : p)"
        case .lookup(let p): return "stat \(p)"
        case .cat(let p): return "cat \(p)"
        case .oobPut(let k, let l, let f): return "OUT-OF-BAND put \(k) len \(l) fill \(hex(f))"
        case .oobDelete(let k): return "OUT-OF-BAND delete \(k)"
        }
    }

    /// The handle the op works on, if any (ops that open one excluded).
    var handle: Int? {
        switch self {
        case .write(let h, _, _, _), .read(let h, _, _), .truncate(let h, _), .flush(let h, _), .release(let h), .getattr(let h): return h
        default: return nil
        }
    }

    /// Simpler versions of the op, for the shrinker (smaller numbers, no flags).
    var simpler: [RefOp] {
        switch self {
        case .write(let h, let o, let l, let f):
            var out: [RefOp] = []
            if o > 0 { out += [.write(h: h, offset: 0, len: l, fill: f), .write(h: h, offset: o / 2, len: l, fill: f)] }
            if l > 1 { out += [.write(h: h, offset: o, len: 1, fill: f), .write(h: h, offset: o, len: l / 2, fill: f)] }
            return out
        case .read(let h, let o, let l):
            return (o > 0 ? [RefOp.read(h: h, offset: 0, len: l)] : []) + (l > 1 ? [.read(h: h, offset: o, len: 1)] : [])
        case .truncate(let h, let s): return s > 0 ? [.truncate(h: h, size: 0), .truncate(h: h, size: s / 2)] : []
        case .truncatePath(let p, let s): return s > 0 ? [.truncatePath(p, size: 0), .truncatePath(p, size: s / 2)] : []
        case .flush(let h, true): return [.flush(h: h, fsync: false)]
        case .rename(let a, let b, true): return [.rename(a, b, noReplace: false)]
        case .openWrite(let p, let h, true): return [.openWrite(p, h: h, trunc: false)]
        case .oobPut(let k, let l, let f): return l > 0 ? [.oobPut(k, len: 0, fill: f), .oobPut(k, len: l / 2, fill: f)] : []
        default: return []
        }
    }
}

// MARK: - expected outcomes

/// What an op returned, on either side.
enum RefOutcome: Equatable, CustomStringConvertible {
    case ok
    case err(Int32)
    /// Bytes read; bytes written (write); size (fstat).
    case data([UInt8])
    case count(Int)
    /// stat: "dir", or "file SIZE".
    case stat(String)
    /// readdir: "name/" for directories, "name SIZE" for files, sorted.
    case entries([String])

    var description: String {
        switch self {
        case .ok: return "ok"
        case .err(let e): return refErrnoName(e)
        case .data(let d): return "\(d.count) bytes " + refHex(d)
        case .count(let n): return "\(n)"
        case .stat(let s): return s
        case .entries(let e): return "[" + e.joined(separator: ", ") + "]"
        }
    }
}

func refHex(_ d: [UInt8]) -> String {
    let shown = d.prefix(48).map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    return d.count > 48 ? shown + "…" : shown
}

func refErrnoName(_ e: Int32) -> String {
    let names: [Int32: String] = [ENOENT: "ENOENT", EEXIST: "EEXIST", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", ENOTEMPTY: "ENOTEMPTY",
                                  EINVAL: "EINVAL", EBADF: "EBADF", EIO: "EIO", ESTALE: "ESTALE", EPERM: "EPERM", EROFS: "EROFS"]
    return names[e] ?? "errno \(e)"
}

/// What the model allows an op to return.
enum RefExpect: CustomStringConvertible {
    /// Not run (on either side): its handle is not open, or it breaks a rule of the generator.
    case skip
    case exactly(RefOutcome)
    /// A read of a reader whose object changed since its open: those bytes, or an error.
    case dataOrError([UInt8])
    case someError
    case anything

    func allows(_ o: RefOutcome) -> Bool {
        switch self {
        case .skip, .anything: return true
        case .exactly(let e): return e == o
        case .dataOrError(let d): if case .err = o { return true } else { return o == .data(d) }
        case .someError: if case .err = o { return true } else { return false }
        }
    }

    var description: String {
        switch self {
        case .skip: return "skipped"
        case .exactly(let o): return o.description
        case .dataOrError(let d): return "\(RefOutcome.data(d)) or an error"
        case .someError: return "an error"
        case .anything: return "anything"
        }
    }
}


// MARK: - generator


/// Builds sequences from a seed, simulating the model so that most ops make sense (existing paths,
/// open handles) and some do not (missing parents, names of the wrong kind), for the errors.
struct RefGenerator {
    var rng: SeededRNG
    /// Another client changes the bucket too (the sequence then runs with metadata TTL 0).
    let outOfBand: Bool
    static let names = ["a", "b", "c", "d"]

    init(seed: UInt64, outOfBand: Bool) {
        rng = SeededRNG(seed: seed)
        self.outOfBand = outOfBand
    }

    func existing(_ m: RefModel, _ kind: RefKind?) -> [String] {
        var out: [String] = []
        func visit(_ dir: String) {
            for (name, k) in m.children(dir).sorted(by: { $0.key < $1.key }) {
                let p = RefModel.join(dir, name)
                if kind == nil || kind == k { out.append(p) }
                if k == .dir { visit(p) }
            }
        }
        visit("")
        return out
    }

    /// An existing path of that kind most of the time, else a new name somewhere (at most 3 deep).
    mutating func path(_ m: RefModel, _ kind: RefKind?, existingPercent: Int = 70) -> String {
        let have = existing(m, kind)
        if !have.isEmpty && rng.chance(existingPercent) { return rng.pick(have) }
        var dirs = [""] + existing(m, .dir).filter { $0.split(separator: "/").count < 3 }
        if rng.chance(8) { dirs.append(rng.pick(Self.names)) } // maybe missing, maybe a file: errors
        return RefModel.join(rng.pick(dirs), rng.pick(Self.names))
    }

    /// For an op on an existing name: none of that kind yet usually means another op is picked
    /// (a missing name now and then, for the errors).
    mutating func target(_ m: RefModel, _ kind: RefKind?, existingPercent: Int) -> String? {
        if existing(m, kind).isEmpty && rng.chance(85) { return nil }
        return path(m, kind, existingPercent: existingPercent)
    }

    mutating func nextOp(_ m: RefModel, id: inout Int) -> RefOp {
        let open = m.handles.keys.sorted()
        let writers = open.filter { m.handles[$0]!.writer }
        while true {
            let roll = rng.int(outOfBand ? 118 : 100)
            switch roll {
            case 0..<8: return .mkdir(path(m, nil, existingPercent: 20))
            case 8..<13:
                guard let p = target(m, .dir, existingPercent: 80) else { continue }
                return .rmdir(p)
            case 13..<24:
                let p = path(m, .file, existingPercent: 30)
                if m.writer(at: p) != nil { continue }
                id += 1
                return .create(p, h: id)
            case 24..<29:
                guard let p = target(m, .file, existingPercent: 90) else { continue }
                if m.writer(at: p) != nil { continue }
                id += 1
                return .openWrite(p, h: id, trunc: rng.chance(30))
            case 29..<32:
                guard let p = target(m, .file, existingPercent: 90) else { continue }
                if m.writer(at: p) != nil { continue }
                id += 1
                return .openRead(p, h: id)
            case 32..<48:
                guard !writers.isEmpty else { continue }
                let h = rng.pick(writers)
                let size = m.handles[h]!.data.count
                let big = rng.chance(5)
                let offset = rng.chance(50) ? size : rng.int(0...(size + (big ? 0 : 40)))
                return .write(h: h, offset: offset, len: big ? rng.int(200...700) : rng.int(1...40), fill: UInt8(rng.int(256)))
            case 48..<54:
                guard !open.isEmpty else { continue }
                let h = rng.pick(open)
                let size = m.handles[h]!.data.count
                return .read(h: h, offset: rng.int(0...(size + 5)), len: rng.int(1...(size + 10)))
            case 54..<58:
                guard !writers.isEmpty else { continue }
                let h = rng.pick(writers)
                return .truncate(h: h, size: rng.int(0...(m.handles[h]!.data.count + 30)))
            case 58..<61:
                guard let p = target(m, .file, existingPercent: 90) else { continue }
                return .truncatePath(p, size: rng.int(0...(m.size(p) + 30)))
            case 61..<65:
                guard !writers.isEmpty else { continue }
                return .flush(h: rng.pick(writers), fsync: rng.chance(25))
            case 65..<74:
                guard !open.isEmpty else { continue }
                return .release(h: rng.pick(open))
            case 74..<77:
                guard !open.isEmpty else { continue }
                return .getattr(h: rng.pick(open))
            case 77..<87:
                guard let src = target(m, rng.chance(60) ? .file : .dir, existingPercent: 90) else { continue }
                let srcKind = (try? m.walk(src).get()) ?? nil
                var dst = path(m, rng.chance(50) ? nil : srcKind, existingPercent: 40)
                if rng.chance(5) { dst = RefModel.join(src, rng.pick(Self.names)) } // into itself: EINVAL
                return .rename(src, dst, noReplace: src != dst && rng.chance(25))
            case 87..<93:
                guard let p = target(m, .file, existingPercent: 85) else { continue }
                return .unlink(p)
            case 93..<96: return .readdir(rng.chance(80) ? rng.pick([""] + existing(m, .dir)) : path(m, nil))
            case 96..<98: return .lookup(path(m, nil))
            case 98..<100:
                guard let p = target(m, .file, existingPercent: 90) else { continue }
                if m.writer(at: p) != nil { continue }
                return .cat(p)
            case 100..<111:
                // Another client: a file (existing, or new somewhere, perhaps deeper: an implicit
                // directory), now and then a directory marker.
                var key = path(m, .file, existingPercent: 50)
                if rng.chance(15) { key = RefModel.join(key, rng.pick(Self.names)) }
                if rng.chance(10) { key = path(m, .dir, existingPercent: 60) + "/" }
                let op = RefOp.oobPut(key, len: key.hasSuffix("/") ? 0 : rng.int(0...50), fill: UInt8(rng.int(256)))
                if RefGenerator.allowedOutOfBand(m, key, delete: false) { return op }
            default:
                let keys = m.objects.keys.sorted()
                guard !keys.isEmpty else { continue }
                let key = rng.pick(keys)
                if RefGenerator.allowedOutOfBand(m, key, delete: true) { return .oobDelete(key) }
            }
        }
    }

    /// Out-of-band changes the model does not cover:
    /// - another client removing the last key of a directory that holds a file still being written
    ///   through the mount (what the mount shows of that directory before the file's upload is not
    ///   specified);
    /// - another client writing a key unlinked through the mount while a reader still has it open:
    ///   the mount hides that key until the last reader closes, then deletes it — the other
    ///   client's object with it (a known limitation: without a conditional delete the mount cannot
    ///   tell a new object from the one it unlinked, which may even have the same bytes and ETag).
    static func allowedOutOfBand(_ m: RefModel, _ key: String, delete: Bool) -> Bool {
        if m.handles.values.contains(where: { !$0.writer && $0.detached && $0.path == key }) { return false }
        var after = Set(m.objects.keys)
        if delete { after.remove(key) } else { after.insert(key) }
        for w in m.attachedWriterPaths {
            for a in RefModel.ancestors(w) where !after.contains(where: { $0.hasPrefix(a + "/") }) { return false }
            // A put that makes the written file's name a directory (shadowing it) is not covered either.
            if after.contains(where: { $0.hasPrefix(w + "/") }) { return false }
        }
        return true
    }

    /// A whole sequence; `apply` keeps the model in step (the same function the runner uses).
    mutating func sequence(length: Int, apply: (inout RefModel, RefOp) -> Void) -> [RefOp] {
        var m = RefModel()
        var ops: [RefOp] = []
        var id = 0
        for _ in 0..<length {
            let op = nextOp(m, id: &id)
            ops.append(op)
            apply(&m, op)
        }
        return ops
    }
}
