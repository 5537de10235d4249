import Glibc

/// Names stored back to back in memory that never moves: an inode keeps pointing at its name in
/// here while the directory's table grows, is compacted or is dropped. Bytes are written once,
/// under the filesystem's lock, before anything can point at them, and never changed after.
final class NameBlock: @unchecked Sendable {
    let base: UnsafeMutablePointer<UInt8>
    let capacity: Int
    /// Bytes written so far (guarded by the filesystem's lock).
    var used = 0

    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(capacity: max(capacity, 1))
    }

    deinit { base.deallocate() }

    /// Largest block: a name's start must fit 16 bits.
    static let maxCapacity = 1 << 16

    func append(_ name: UnsafeRawBufferPointer) -> UInt16 {
        let start = used
        if let src = name.baseAddress { (base + start).update(from: src.assumingMemoryBound(to: UInt8.self), count: name.count) }
        used += name.count
        return UInt16(start)
    }
}

/// A name inside a `NameBlock`: 12 bytes instead of an array of its own (about 64 on the heap).
struct StoredName: @unchecked Sendable {
    let block: NameBlock
    let start: UInt16
    let count: UInt16

    static let empty = StoredName(block: NameBlock(capacity: 0), start: 0, count: 0)

    /// A name that belongs to no directory table (created, renamed to, looked up outside a listing).
    init(copying name: [UInt8]) {
        let b = NameBlock(capacity: name.count)
        block = b
        count = UInt16(name.count)
        start = name.withUnsafeBytes { b.append($0) }
    }

    init(block: NameBlock, start: UInt16, count: UInt16) {
        self.block = block
        self.start = start
        self.count = count
    }

    var raw: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: block.base + Int(start), count: Int(count)) }
    var bytes: [UInt8] { Array(raw) }

    func equals(_ other: UnsafeRawBufferPointer) -> Bool {
        other.count == Int(count) && (count == 0 || memcmp(block.base + Int(start), other.baseAddress!, Int(count)) == 0)
    }
}

@inline(__always) func hashName(_ name: UnsafeRawBufferPointer, _ extra: UInt64 = 0) -> Int {
    var h = Hasher()
    h.combine(extra)
    h.combine(bytes: name)
    return h.finalize()
}

/// What one directory's names are, compactly: entries in an array (48 bytes each, name location
/// included), their names in shared blocks, and an open-addressing index of 32-bit slot numbers.
/// About 75 bytes a name, where a dictionary keyed by full key took about 300.
struct DirTable {
    /// One name's entry. `entry` nil marks a removed name (its index position stays valid and is
    /// reused if the name comes back). Field order packs it in 48 bytes.
    struct Slot {
        var entry: CachedEntry?
        var nameCount: UInt16
        var block: UInt16
        var start: UInt16
    }

    private(set) var slots: [Slot] = []
    private var blocks: [NameBlock] = []
    /// Slot number + 1, or 0 for empty; the size is a power of two at least twice the slots.
    private var index: [UInt32] = []
    private(set) var live = 0
    /// When the directory was listed completely: its live entries are then all its names.
    var listedAt: Double? = nil
    /// The complete listing (by its `listedAt`) the kernel last read through readdir, and may
    /// still hold in its own cache of the directory.
    var kernelHas: Double? = nil

    init(listedAt: Double? = nil) { self.listedAt = listedAt }

    func storedName(of slot: Slot) -> StoredName {
        StoredName(block: blocks[Int(slot.block)], start: slot.start, count: slot.nameCount)
    }

    private func position(of name: UnsafeRawBufferPointer) -> (pos: Int, slot: Int?) {
        if index.isEmpty { return (0, nil) }
        let mask = index.count - 1
        var i = hashName(name) & mask
        while true {
            let v = index[i]
            if v == 0 { return (i, nil) }
            if storedName(of: slots[Int(v - 1)]).equals(name) { return (i, Int(v - 1)) }
            i = (i + 1) & mask
        }
    }

    func slotIndex(_ name: [UInt8]) -> Int? { name.withUnsafeBytes { position(of: $0).slot } }

    func entry(_ name: UnsafeRawBufferPointer) -> CachedEntry? { position(of: name).slot.flatMap { slots[$0].entry } }

    subscript(name: [UInt8]) -> CachedEntry? { name.withUnsafeBytes { entry($0) } }

    func storedName(_ name: [UInt8]) -> StoredName? {
        slotIndex(name).map { storedName(of: slots[$0]) }
    }

    mutating func set(_ name: [UInt8], _ entry: CachedEntry?) {
        name.withUnsafeBytes { raw in
            if let i = position(of: raw).slot {
                live += (entry != nil ? 1 : 0) - (slots[i].entry != nil ? 1 : 0)
                slots[i].entry = entry
                return
            }
            guard let entry else { return }
            if (slots.count + 1) * 2 > index.count { rebuildIndex(capacity: max(16, index.count * 2)) }
            append(raw, entry)
        }
        compactIfSparse()
    }

    /// Adds a name not in the table (the index has room).
    private mutating func append(_ name: UnsafeRawBufferPointer, _ entry: CachedEntry) {
        let (block, start) = store(name)
        slots.append(Slot(entry: entry, nameCount: UInt16(name.count), block: block, start: start))
        live += 1
        index[position(of: name).pos] = UInt32(slots.count)
    }

    /// Rewrites the table once removed names outnumber live ones.
    private mutating func compactIfSparse() {
        if slots.count - live > max(64, live) { compact() }
    }

    /// Writes a name into the last block, or a new one twice as big (up to 64 KiB).
    private mutating func store(_ name: UnsafeRawBufferPointer) -> (UInt16, UInt16) {
        if let last = blocks.last, last.capacity - last.used >= name.count {
            return (UInt16(blocks.count - 1), last.append(name))
        }
        let size = max(name.count, min(NameBlock.maxCapacity, max(256, (blocks.last?.capacity ?? 0) * 2)))
        blocks.append(NameBlock(capacity: size))
        return (UInt16(blocks.count - 1), blocks[blocks.count - 1].append(name))
    }

    private mutating func rebuildIndex(capacity: Int) {
        index = [UInt32](repeating: 0, count: capacity)
        let mask = capacity - 1
        for (n, slot) in slots.enumerated() {
            var i = hashName(storedName(of: slot).raw) & mask
            while index[i] != 0 { i = (i + 1) & mask }
            index[i] = UInt32(n + 1)
        }
    }

    /// Live entries in the order they were learned.
    var entries: [([UInt8], CachedEntry)] {
        var out: [([UInt8], CachedEntry)] = []
        out.reserveCapacity(live)
        for slot in slots { if let e = slot.entry { out.append((storedName(of: slot).bytes, e)) } }
        return out
    }

    /// The live entries at positions `from` and on of the table's order (a listing's order) that
    /// fall within `count` positions, `accept`ed ones only, with their positions.
    func entries(from: Int, count: Int, accept: (CachedEntry) -> Bool) -> [([UInt8], CachedEntry, Int)] {
        guard from < slots.count else { return [] }
        var out: [([UInt8], CachedEntry, Int)] = []
        for i in from..<min(slots.count, from + count) {
            if let e = slots[i].entry, accept(e) { out.append((storedName(of: slots[i]).bytes, e, i)) }
        }
        return out
    }

    /// Removes the entries `drop` accepts; returns how many.
    mutating func removeAll(where drop: (CachedEntry) -> Bool) -> Int {
        var removed = 0
        for i in slots.indices {
            if let e = slots[i].entry, drop(e) { slots[i].entry = nil; removed += 1 }
        }
        live -= removed
        compactIfSparse()
        return removed
    }

    /// Rewrites the table with live entries only, names in fresh blocks and arrays sized to fit
    /// (inodes still pointing at the old blocks keep them alive).
    mutating func compact() {
        var fresh = DirTable(listedAt: listedAt)
        fresh.kernelHas = kernelHas
        fresh.slots.reserveCapacity(live)
        fresh.rebuildIndex(capacity: max(16, Int(UInt(live * 2).nextPowerOfTwo)))
        var bytes = 0
        for slot in slots where slot.entry != nil { bytes += Int(slot.nameCount) }
        if bytes > 0 { fresh.blocks.append(NameBlock(capacity: min(bytes, NameBlock.maxCapacity))) }
        for slot in slots {
            if let e = slot.entry { fresh.append(storedName(of: slot).raw, e) }
        }
        self = fresh
    }

    /// After a big listing: drop the growth slack of the slot array.
    mutating func trim() {
        if slots.capacity > slots.count + slots.count / 4 + 16 {
            slots = slots.withUnsafeBufferPointer { Array($0) }
        }
    }
}

extension UInt {
    var nextPowerOfTwo: UInt { self <= 1 ? 1 : 1 << (UInt(bitWidth) - UInt((self - 1).leadingZeroBitCount)) }
}

/// The attribute cache: what every name is, learned from listings (and lookups and changes), one
/// `DirTable` per directory key prefix. Entry keys (directory prefix + name) address it the way
/// lookups and listings both build them.
struct AttrCache {
    private(set) var tables: [[UInt8]: DirTable] = [:]

    /// Splits an entry key into its directory's prefix and the name.
    @inline(__always) static func split(_ key: [UInt8]) -> ([UInt8], [UInt8]) {
        if let i = key.lastIndex(of: Names.slash) { return (Array(key[...i]), Array(key[(i + 1)...])) }
        return ([], key)
    }

    subscript(key: [UInt8]) -> CachedEntry? {
        get { let (d, n) = Self.split(key); return tables[d]?[n] }
        set { let (d, n) = Self.split(key); self[dir: d, name: n] = newValue }
    }

    subscript(dir dir: [UInt8], name name: [UInt8]) -> CachedEntry? {
        get { tables[dir]?[name] }
        set {

            if newValue == nil {
                tables[dir]?.set(name, nil)
            } else {
                tables[dir, default: DirTable()].set(name, newValue)
            }
        }
    }

    /// Sets many names of one directory with one table lookup.
    mutating func update(dir: [UInt8], _ body: (inout DirTable) -> Void) {
        body(&tables[dir, default: DirTable()])
    }

    func storedName(dir: [UInt8], name: [UInt8]) -> StoredName? { tables[dir]?.storedName(name) }

    /// What an inode's name is, without building its key.
    func entry(of n: Node) -> CachedEntry? { tables[n.parentPath]?.entry(n.storedName.raw) }

    /// Live entries in all tables.
    var count: Int { tables.values.reduce(0) { $0 + $1.live } }

    /// Live entries that `matches` accepts, in every table (a walk of all of them: for statistics).
    func count(where matches: (CachedEntry) -> Bool) -> Int {
        tables.values.reduce(0) { n, t in n + t.entries.reduce(0) { $0 + (matches($1.1) ? 1 : 0) } }
    }
    var completeCount: Int { tables.values.reduce(0) { $0 + ($1.listedAt == nil ? 0 : 1) } }

    /// The directories listed completely, most recently listed first.
    var completeDirectories: [[UInt8]] {
        tables.compactMap { k, t in t.listedAt.map { (k, $0) } }.sorted { $0.1 > $1.1 }.map { $0.0 }
    }

    func listedAt(_ dir: [UInt8]) -> Double? { tables[dir]?.listedAt }

    /// Whether anything is known of the directory (a listing, a lookup, a change).
    func hasTable(_ dir: [UInt8]) -> Bool { tables[dir] != nil }

    /// The kernel's copy of the directory's listing is out of date (changed by an event).
    mutating func forgetKernelRead(_ dir: [UInt8]) { tables[dir]?.kernelHas = nil }

    /// Records that the kernel read the listing recorded at `listedAt`.
    mutating func noteKernelRead(_ dir: [UInt8], listedAt: Double) { tables[dir]?.kernelHas = listedAt }

    /// Whether what the kernel read of the directory is the complete listing held now.
    func kernelIsCurrent(_ dir: [UInt8]) -> Bool {
        guard let t = tables[dir], let l = t.listedAt else { return false }
        return t.kernelHas == l
    }

    func isEmpty(_ dir: [UInt8]) -> Bool { (tables[dir]?.live ?? 0) == 0 }

    /// A name's position in its directory's order, and the next entries after it (see DirTable).
    func position(dir: [UInt8], name: [UInt8]) -> Int? { tables[dir]?.slotIndex(name) }
    func entries(dir: [UInt8], from: Int, count: Int, accept: (CachedEntry) -> Bool) -> [([UInt8], CachedEntry, Int)] {
        tables[dir]?.entries(from: from, count: count, accept: accept) ?? []
    }

    /// The directory's live entries, when it was listed completely (nil otherwise).
    func completeEntries(_ dir: [UInt8]) -> [([UInt8], CachedEntry)]? {
        guard let t = tables[dir], t.listedAt != nil else { return nil }
        return t.entries
    }

    /// Records a complete listing that began at `started`: its names were all learned since then,
    /// so whatever was learned before and not seen again is gone from S3.
    mutating func markComplete(_ dir: [UInt8], at started: Double) {
        update(dir: dir) { t in
            _ = t.removeAll(where: { $0.at < started })
            t.listedAt = started
            t.trim()
        }
    }

    /// A directory just created: complete and empty.
    mutating func markEmpty(_ dir: [UInt8], at t: Double) { tables[dir] = DirTable(listedAt: t) }

    mutating func forgetListings(where drop: ([UInt8]) -> Bool) {
        for k in Array(tables.keys) where drop(k) { tables[k]?.listedAt = nil }
    }

    mutating func removeTables(where drop: ([UInt8]) -> Bool) {
        for k in Array(tables.keys) where drop(k) { tables[k] = nil }
    }

    mutating func removeTable(_ dir: [UInt8]) { tables[dir] = nil }

    /// Drops entries `fresh` rejects and listings it rejects; a table that lost an entry is no
    /// longer complete. Returns how many entries and listings went.
    mutating func sweep(fresh: (Double) -> Bool) -> Int {
        var removed = 0
        for dir in Array(tables.keys) {
            let n = tables[dir]!.removeAll(where: { !fresh($0.at) })
            removed += n
            if let l = tables[dir]!.listedAt, n > 0 || !fresh(l) { tables[dir]!.listedAt = nil; removed += 1 }
            if tables[dir]!.live == 0 && tables[dir]!.listedAt == nil { tables[dir] = nil }
        }
        return removed
    }
}
