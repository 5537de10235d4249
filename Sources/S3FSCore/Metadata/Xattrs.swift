import Glibc

/// Extended attributes (`--xattr`): the `user.*` namespace is kept in each object's metadata as
/// s3fs keeps it (`x-amz-meta-xattr`) and in its directory's index, so that a listing knows them
/// without a HeadObject; it travels with uploads, copies and renames like the mode. The other
/// namespaces are answered here without a request: `security.*` and `system.*` hold nothing
/// (no SELinux label, no ACL: `ls -l` asks for both on every file), and cannot be set.
extension Filesystem {
    /// setxattr's flags (<sys/xattr.h>).
    public static let xattrCreate: Int32 = 1
    public static let xattrReplace: Int32 = 2

    static func isUserAttribute(_ name: String) -> Bool { name.hasPrefix("user.") && name.utf8.count > 5 }

    /// The inode's extended attributes, its directory's index read first; a file the index does
    /// not cover (written by another tool) is asked once with HeadObject.
    func xattrs(of ino: UInt64) -> Result<[String: [UInt8]], FSError> {
        guard options.metadata != .none else { return .success([:]) }
        if case .failure(let e) = getattr(ino: ino) { return .failure(e) }
        guard let n = state.withLock({ $0.nodes[ino] }) else { return .failure(FSError(ENOENT)) }
        if n.kind == .file, !handles.hasWriters || handles.writer(where: { $0.ino == ino }) == nil,
           let e = state.withLock({ $0.attrs.entry(of: n) }), needsHeaders(dir: n.parentPath, name: n.name, e) {
            learnHeaders(dir: n.parentPath, name: n.name)
        }
        return .success(currentMeta(n).xattrs)
    }

    public func getxattr(ino: UInt64, name: String) -> Result<[UInt8], FSError> {
        guard Self.isUserAttribute(name) else { return .failure(FSError(ENODATA)) }
        return xattrs(of: ino).flatMap { x in x[name].map { .success($0) } ?? .failure(FSError(ENODATA)) }
    }

    /// The names, sorted.
    public func listxattr(ino: UInt64) -> Result<[String], FSError> {
        xattrs(of: ino).map { $0.keys.sorted() }
    }

    public func setxattr(ino: UInt64, name: String, value: [UInt8], flags: Int32) -> FSError? {
        if let e = checkXattrChange(name) { return e }
        guard XattrCodec.storable(name) else { return FSError(EINVAL) }
        return changeXattrs(ino) { x in
            if flags & Self.xattrCreate != 0 && x[name] != nil { return FSError(EEXIST) }
            if flags & Self.xattrReplace != 0 && x[name] == nil { return FSError(ENODATA) }
            x[name] = value
            // S3 keeps 2 KB of user metadata per object: what does not fit is refused as a full
            // local filesystem refuses it.
            return XattrCodec.encode(x).utf8.count > XattrCodec.maxEncodedBytes ? FSError(ENOSPC) : nil
        }
    }

    public func removexattr(ino: UInt64, name: String) -> FSError? {
        if let e = checkXattrChange(name) { return e.errno == ENOTSUP ? FSError(ENODATA) : e }
        return changeXattrs(ino) { x in x.removeValue(forKey: name) == nil ? FSError(ENODATA) : nil }
    }

    private func checkXattrChange(_ name: String) -> FSError? {
        if options.readOnly { return FSError(EROFS) }
        if options.metadata == .none || !Self.isUserAttribute(name) { return FSError(ENOTSUP) }
        return nil
    }

    private func changeXattrs(_ ino: UInt64, _ edit: @escaping (inout [String: [UInt8]]) -> FSError?) -> FSError? {
        if case .failure(let e) = xattrs(of: ino) { return e }
        guard let n = state.withLock({ $0.nodes[ino] }) else { return FSError(ENOENT) }
        return changeMeta(n, handle: nil) { m in edit(&m.xattrs) }
    }
}
