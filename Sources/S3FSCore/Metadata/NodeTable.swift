/// An inode: what the kernel holds a reference to.
struct Node {
    var ino: UInt64
    var parent: UInt64
    /// Key prefix of the parent directory (one array shared by siblings).
    var parentPath: [UInt8]
    var storedName: StoredName
    /// Kernel references; 32 bits (saturating) so a node packs in 48 bytes.
    var lookups: UInt32
    var kind: EntryKind

    var name: [UInt8] { storedName.bytes }
    var entryKey: [UInt8] { parentPath + storedName.raw }
    /// Key of a file; key prefix (ending in "/") of a directory.
    var path: [UInt8] { kind == .directory ? entryKey + [Names.slash] : entryKey }
}

/// The inodes, in an array indexed by slot, with an open-addressing index by (parent, name, kind).
/// An inode number is its slot in the low 32 bits and the slot's reuse count in the high 32, so a
/// freed slot is reused but a number never is during a mount. About 60 bytes an inode, where two
/// dictionaries (by number, by path) took about 170.
struct NodeTable {
    /// Slot 0 is never used (0 marks an empty index position); a slot with no lookups is free.
    private var slots: [Node]
    private var free: [UInt32] = []
    /// Slot numbers, 0 for empty; a power of two at least twice the live nodes.
    private var index: [UInt32] = [UInt32](repeating: 0, count: 16)
    private(set) var count = 0
    /// Reuse count for slots appended at the end: above any a slot given back by `shrinkIfSparse` had.
    private var appendGeneration: UInt64 = 0

    init(root: UInt64) {
        let unused = Node(ino: 0, parent: 0, parentPath: [], storedName: .empty, lookups: 0, kind: .directory)
        slots = [unused, Node(ino: root, parent: root, parentPath: [], storedName: .empty, lookups: 1, kind: .directory)]
        count = 1
    }

    static func slot(_ ino: UInt64) -> Int { Int(truncatingIfNeeded: ino & 0xFFFF_FFFF) }

    subscript(ino: UInt64) -> Node? {
        let i = Self.slot(ino)
        guard i > 0, i < slots.count, slots[i].ino == ino, slots[i].lookups > 0 else { return nil }
        return slots[i]
    }

    private static func hash(parent: UInt64, kind: EntryKind, _ name: UnsafeRawBufferPointer) -> Int {
        hashName(name, parent &* 2 &+ (kind == .directory ? 1 : 0))
    }

    private func hash(of n: Node) -> Int { Self.hash(parent: n.parent, kind: n.kind, n.storedName.raw) }

    func find(parent: UInt64, name: [UInt8], kind: EntryKind) -> Node? {
        name.withUnsafeBytes { raw in
            let mask = index.count - 1
            var i = Self.hash(parent: parent, kind: kind, raw) & mask
            while index[i] != 0 {
                let n = slots[Int(index[i])]
                if n.parent == parent && n.kind == kind && n.storedName.equals(raw) { return n }
                i = (i + 1) & mask
            }
            return nil
        }
    }

    /// A new inode with one lookup reference.
    mutating func add(parent: UInt64, parentPath: [UInt8], name: StoredName, kind: EntryKind) -> Node {
        var n = Node(ino: 0, parent: parent, parentPath: parentPath, storedName: name, lookups: 1, kind: kind)
        if let s = free.popLast() {
            n.ino = ((slots[Int(s)].ino >> 32) + 1) << 32 | UInt64(s)
            slots[Int(s)] = n
        } else {
            precondition(slots.count < Int(UInt32.max), "inode slots exhausted")
            n.ino = appendGeneration << 32 | UInt64(slots.count)
            slots.append(n)
        }
        count += 1
        if count * 2 > index.count { rebuildIndex(capacity: index.count * 2) }
        insert(Self.slot(n.ino))
        return n
    }

    /// Stores changed fields of a live node other than parent, name and kind (see `move`).
    mutating func update(_ n: Node) {
        let i = Self.slot(n.ino)
        assert(slots[i].ino == n.ino && slots[i].parent == n.parent && slots[i].kind == n.kind, "update changes no key")
        slots[i] = n
    }

    /// Frees the node (its number is never handed out again).
    mutating func remove(_ ino: UInt64) {
        guard self[ino] != nil else { return }
        let i = Self.slot(ino)
        unindex(i)
        slots[i] = Node(ino: ino, parent: 0, parentPath: [], storedName: .empty, lookups: 0, kind: .file)
        free.append(UInt32(i))
        count -= 1
    }

    /// The node stays (the kernel still holds it) but its name no longer finds it: the name was
    /// removed, and a new object of that name gets a new inode.
    mutating func detach(_ ino: UInt64) {
        if self[ino] != nil { unindex(Self.slot(ino)) }
    }

    /// Detaches the node of that name, if there is one.
    mutating func detach(parent: UInt64, name: [UInt8], kind: EntryKind) {
        if let n = find(parent: parent, name: name, kind: kind) { unindex(Self.slot(n.ino)) }
    }

    /// Gives a node a new parent and name (rename).
    mutating func move(_ ino: UInt64, parent: UInt64, parentPath: [UInt8], name: StoredName) {
        guard var n = self[ino] else { return }
        let i = Self.slot(ino)
        unindex(i)
        n.parent = parent
        n.parentPath = parentPath
        n.storedName = name
        slots[i] = n
        insert(i)
    }

    /// Changes every live node (never its parent, name or kind).
    mutating func updateAll(_ body: (inout Node) -> Void) {
        for i in 1..<slots.count where slots[i].lookups > 0 {
            let (ino, parent, kind) = (slots[i].ino, slots[i].parent, slots[i].kind)
            body(&slots[i])
            assert(slots[i].ino == ino && slots[i].parent == parent && slots[i].kind == kind, "updateAll changes no key")
        }
    }

    private mutating func insert(_ slot: Int) {
        let mask = index.count - 1
        var i = hash(of: slots[slot]) & mask
        while index[i] != 0 {
            if Int(index[i]) == slot { return }
            i = (i + 1) & mask
        }
        index[i] = UInt32(slot)
    }

    /// Removes a slot from the index, shifting later entries of its probe run back.
    private mutating func unindex(_ slot: Int) {
        let mask = index.count - 1
        var i = hash(of: slots[slot]) & mask
        while index[i] != 0 && Int(index[i]) != slot { i = (i + 1) & mask }
        if index[i] == 0 { return } // detached already
        var j = i
        while true {
            j = (j + 1) & mask
            if index[j] == 0 { break }
            let home = hash(of: slots[Int(index[j])]) & mask
            // Move j's entry into the hole at i unless its home lies cyclically in (i, j].
            let stays = i <= j ? (home > i && home <= j) : (home > i || home <= j)
            if !stays {
                index[i] = index[j]
                i = j
            }
        }
        index[i] = 0
    }

    private mutating func rebuildIndex(capacity: Int) {
        let old = index
        index = [UInt32](repeating: 0, count: capacity)
        for s in old where s != 0 { insert(Int(s)) }
    }

    /// After the kernel forgot most inodes: give back the slots above the highest live one and
    /// size the index to what is left. Returns whether memory was freed.
    mutating func shrinkIfSparse() -> Bool {
        guard slots.count > 4096, count * 4 < slots.count else { return false }
        var end = slots.count
        while end > 2 && slots[end - 1].lookups == 0 { end -= 1 }
        for n in slots[end...] { appendGeneration = max(appendGeneration, (n.ino >> 32) + 1) }
        slots = slots[..<end].withUnsafeBufferPointer { Array($0) }
        free = free.filter { Int($0) < end }
        let capacity = max(16, Int(UInt(count * 2).nextPowerOfTwo))
        if capacity < index.count { rebuildIndex(capacity: capacity) }
        return true
    }
}
