import S3

extension Filesystem {
    /// After events may have been missed (see `EventWatch`): lists again the directories the mount
    /// holds complete, the `limit` most recently listed (the others are forgotten, and listed again
    /// at their next use), and applies what differs from what it holds as the events would have
    /// (`applyEvents`), which tells the kernel. Files are compared by ETag and size; a directory
    /// that appeared or went makes its parent's listing be read again at the next use. Names the
    /// mount is writing, or deleting in a batch, are left to their writers and deleters. Returns
    /// the directories listed and the changes found.
    public func revalidateListings(bucket: String, limit: Int) -> (directories: Int, changes: Int) {
        let dirs: [[UInt8]] = state.withLock { s in
            let all = s.attrs.completeDirectories
            if all.count > limit {
                let rest = Set(all[limit...])
                s.attrs.forgetListings(where: { rest.contains($0) })
            }
            return Array(all.prefix(limit))
        }
        var listed = 0, changes = 0
        for dir in dirs {
            // An entry learned after the listing began is newer than what it shows (`listedAt`).
            let started = Timestamp.now().seconds
            let startedMono = now()
            guard let page = try? listWhole(dir) else {
                state.withLock { $0.attrs.forgetListings(where: { $0 == dir }) }
                continue
            }
            listed += 1
            let skip = unlinkedKeys(listingStartedAt: startedMono)
            var events: [ObjectEvent] = []
            var directoriesDiffer = false
            let held: [[UInt8]: CachedEntry] = state.withLock { s in
                guard let entries = s.attrs.completeEntries(dir) else { return [:] }
                var m: [[UInt8]: CachedEntry] = [:]
                for (name, e) in entries where handles.writer(where: { $0.key == dir + name }) == nil { m[name] = e }
                return m
            }
            var objectNames = Set<[UInt8]>()
            var indexETag: String? = nil
            for o in page.objects where o.key.count > dir.count && !skip.contains(o.key) {
                let name = Array(o.key[dir.count...])
                if MetadataIndex.isIndex(name: name) { indexETag = o.etag; continue }
                objectNames.insert(name)
                if let h = held[name] {
                    if h.kind == .directory || (MetadataIndex.sameETag(h.etag, o.etag) && h.size == o.size) { continue }
                } else if handles.writer(where: { $0.key == o.key }) != nil {
                    continue
                }
                events.append(ObjectEvent(bucket: bucket, key: o.key, change: .created(size: o.size, etag: o.etag),
                                          name: "Revalidation", time: started, sequencer: nil))
            }
            let prefixNames = Set(page.commonPrefixes.filter { $0.count > dir.count + 1 }.map { Array($0[dir.count..<($0.count - 1)]) })
            for (name, e) in held {
                if e.kind == .directory {
                    if !prefixNames.contains(name) && !objectNames.contains(name) { directoriesDiffer = true }
                } else if !objectNames.contains(name) {
                    events.append(ObjectEvent(bucket: bucket, key: dir + name, change: .removed, name: "Revalidation", time: started, sequencer: nil))
                }
            }
            for name in prefixNames where held[name]?.kind != .directory { directoriesDiffer = true }
            if !events.isEmpty {
                changes += applyEvents(events, bucket: bucket, listedAt: startedMono).filter { $0 == .applied }.count
            }
            if directoriesDiffer {
                // Listed again, with its directories, at the next use.
                changes += 1
                let ino: UInt64? = state.withLock { s in
                    s.attrs.forgetListings(where: { $0 == dir })
                    s.attrs.forgetKernelRead(dir)
                    return nodeIno(s, ofDir: dir)
                }
                if let ino { invalidator?(.inode(ino)) }
            }
            if meta.listedETag(dir).map({ known in !MetadataIndex.sameETag(known ?? "", indexETag ?? "") }) ?? (indexETag != nil) {
                _ = applyIndexEvent(ObjectEvent(bucket: bucket, key: MetadataIndex.key(dir: dir),
                                                change: indexETag.map { .created(size: 0, etag: $0) } ?? .removed,
                                                name: "Revalidation", time: started, sequencer: nil), dir: dir)
                changes += 1
            }
        }
        return (listed, changes)
    }

    /// Every page of a directory's listing, as one.
    func listWhole(_ dir: [UInt8]) throws -> ListPage {
        var whole = ListPage()
        var token: String? = nil
        repeat {
            let page = try store.list(prefix: dir, delimiter: "/", continuationToken: token, startAfter: nil, maxKeys: nil)
            whole.objects += page.objects
            whole.commonPrefixes += page.commonPrefixes
            token = page.isTruncated ? page.nextContinuationToken : nil
        } while token != nil
        return whole
    }
}
