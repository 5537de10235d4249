import CFuse3
import Glibc
import S3
import S3FSCore
import Synchronization

/// A mounted FUSE session: mount, serve on worker threads until unmounted or signalled, unmount.
public final class FuseSession: @unchecked Sendable {
    let bridge: FuseBridge
    let ops: UnsafeMutablePointer<fuse_lowlevel_ops>
    var session: OpaquePointer?
    var args: fuse_args
    public let mountpoint: String

    public struct MountOptions {
        public var fsname: String
        public var allowOther = false
        public var allowRoot = false
        public var readOnly = false
        /// The kernel's mount flags for what the bucket may grant: nosuid and nodev unless asked.
        public var suid = false
        public var dev = false
        public var exec = true
        /// Kernel read-ahead for the mount in KiB; 0 keeps the kernel's default.
        public var readAheadKiB = 0
        public init(fsname: String) { self.fsname = fsname }
    }

    public init(bridge: FuseBridge, mountpoint: String, options: MountOptions, debug: Bool) throws {
        self.bridge = bridge
        self.mountpoint = mountpoint
        ops = .allocate(capacity: 1)
        ops.initialize(to: bridge.makeOperations())
        var o = ["fsname=\(options.fsname.replacingCommas())", "subtype=s3mount", "default_permissions"]
        if options.allowOther { o.append("allow_other") }
        if options.allowRoot { o.append("allow_root") }
        if options.readOnly { o.append("ro") }
        // noatime: S3 keeps no access times, and reads must not cost a write (docs/SEMANTICS.md).
        o += [options.suid ? "suid" : "nosuid", options.dev ? "dev" : "nodev", options.exec ? "exec" : "noexec", "noatime"]
        var argv = ["s3mount", "-o", o.joined(separator: ",")]
        if debug { argv.append("-d") }
        let cargv = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: argv.count + 1)
        for (i, a) in argv.enumerated() { cargv[i] = strdup(a) }
        cargv[argv.count] = nil
        args = fuse_args(argc: Int32(argv.count), argv: cargv, allocated: 0)
        let ud = Unmanaged.passRetained(bridge).toOpaque()
        guard let se = s3m_session_new(&args, ops, ud) else {
            throw FuseError("could not create the FUSE session (bad mount options?)")
        }
        session = se
        bridge.installInvalidator(session: se)
        guard fuse_set_signal_handlers(se) == 0 else { throw FuseError("could not install signal handlers") }
        // Resolved before mounting: afterwards a stat of the mountpoint would wait on this very session.
        if let real = realpath(mountpoint, nil) {
            bridge.mountpoint = String(cString: real)
            free(real)
        } else {
            bridge.mountpoint = mountpoint
        }
        guard fuse_session_mount(se, mountpoint) == 0 else {
            fuse_remove_signal_handlers(se)
            fuse_session_destroy(se)
            session = nil
            throw FuseError("could not mount on \(mountpoint) (is /dev/fuse available and fusermount3 installed?)")
        }
        bridge.pendingReadAhead.store(options.readAheadKiB, ordering: .relaxed)
    }

    /// Serves requests until unmount or SIGINT/SIGTERM; then unmounts.
    public func run(maxThreads: UInt32 = 64) -> Int32 {
        guard let se = session else { return 1 }
        // Idle workers stay (as libfuse's own default since 3.12): the kernel's parallel
        // read-ahead keeps ~20 reads of one file waiting at once, and with a cap of 10 idle
        // workers libfuse started and ended about 130 threads per GiB read, each with a new 1 MiB
        // buffer to fault in.
        let rc = s3m_session_loop_mt(se, maxThreads, maxThreads)
        bridge.fs.invalidator = nil
        fuse_session_unmount(se)
        fuse_remove_signal_handlers(se)
        fuse_session_destroy(se)
        session = nil
        return rc
    }
}

public struct FuseError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

extension String {
    func replacingCommas() -> String { String(map { $0 == "," ? "_" : $0 }) }
}

/// The mounts this process sees (/proc/self/mountinfo), in mount order.
public enum MountTable {
    public struct Entry {
        /// "MAJ:MIN"
        public var device: String
        public var mountpoint: String
        public var fstype: String
    }

    public static func entries() -> [Entry] {
        guard let f = fopen("/proc/self/mountinfo", "r") else { return [] }
        defer { fclose(f) }
        var out: [Entry] = []
        var line: UnsafeMutablePointer<CChar>? = nil
        var cap = 0
        while getline(&line, &cap, f) > 0 {
            // id parent MAJ:MIN root mountpoint options ... - fstype source superoptions
            let fields = String(cString: line!).split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
            out.append(Entry(device: String(fields[2]), mountpoint: unescape(fields[4]), fstype: String(fields[dash + 1])))
        }
        free(line)
        return out
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo octal escapes.
    static func unescape(_ s: Substring) -> String {
        var out = [UInt8]()
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 3 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
