import Glibc
import S3
import FuseBridge
import S3FSCore

/// The systemd notify protocol, spoken directly: one datagram to $NOTIFY_SOCKET.
enum SdNotify {
    @discardableResult
    static func send(_ state: String) -> Bool {
        guard let path = getenv("NOTIFY_SOCKET").map({ String(cString: $0) }), !path.isEmpty else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == 0x40 { bytes[0] = 0 } // "@name": abstract namespace
        let maxLen = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < maxLen else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let sent = state.withCString { msg in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, msg, strlen(msg), 0, $0, len) }
            }
        }
        return sent >= 0
    }
}

/// SIGUSR1 writes the statistics to the log. The signal is blocked in every thread (the mask is
/// set before any thread starts) and taken by one thread with sigwait.
enum StatsSignal {
    static func blockInAllThreads() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGUSR1)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    static func start(_ bridge: FuseBridge) {
        let t = Thread {
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGUSR1)
            var sig: Int32 = 0
            while sigwait(&set, &sig) == 0 {
                Log.info(bridge.statsSummary())
            }
        }
        t.start()
    }
}

/// A minimal HTTP endpoint serving GET /metrics in the Prometheus text format.
final class MetricsServer: @unchecked Sendable {
    let fd: Int32
    let bridge: FuseBridge

    /// `address` is "HOST:PORT" (an IPv4 address, usually 127.0.0.1).
    init(address: String, bridge: FuseBridge) throws {
        self.bridge = bridge
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw MountFailure("invalid --metrics-address \(address) (expected HOST:PORT)")
        }
        let host = String(address[..<colon])
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host.isEmpty ? "127.0.0.1" : host, &addr.sin_addr) == 1 else {
            throw MountFailure("invalid --metrics-address host \(host) (expected an IPv4 address)")
        }
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0, listen(fd, 16) == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw MountFailure("cannot listen on --metrics-address \(address): \(e)")
        }
    }

    /// Connections served at once; more wait in the listen backlog (a few idle or slow clients
    /// never hold up a scrape).
    static let maxConnections = 16
    /// Request heads larger than this are refused (431).
    static let maxHead = 8192
    private let active = Locked(0)

    func start() {
        let t = Thread { [self] in
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { if errno == EINTR || errno == ECONNABORTED || errno == EMFILE { usleep(10_000); continue }; return }
                let admitted = active.withLock { n -> Bool in
                    if n >= Self.maxConnections { return false }
                    n += 1
                    return true
                }
                guard admitted else {
                    respond(c, status: "503 Service Unavailable", body: "busy\n")
                    close(c)
                    continue
                }
                let worker = Thread { [self] in
                    serve(c)
                    active.withLock { $0 -= 1 }
                }
                worker.start()
            }
        }
        t.start()
    }

    /// One request: GET (or HEAD) /metrics is 200 with the statistics, any other path 404, any
    /// other method 405, a head over 8 KiB 431; a client silent for 2 s is dropped.
    private func serve(_ c: Int32) {
        defer { close(c) }
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var head = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 2048)
        while !Self.containsEnd(head) {
            if head.count > Self.maxHead { respond(c, status: "431 Request Header Fields Too Large", body: "request head too large\n"); return }
            let n = recv(c, &buf, buf.count, 0)
            if n <= 0 { return }
            head += buf[0..<n]
        }
        let line = String(decoding: head.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self).split(separator: " ")
        guard line.count >= 2 else { respond(c, status: "400 Bad Request", body: "bad request\n"); return }
        let method = line[0], path = line[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard method == "GET" || method == "HEAD" else { respond(c, status: "405 Method Not Allowed", body: "GET /metrics\n"); return }
        guard path == "/metrics" else { respond(c, status: "404 Not Found", body: "not found; try /metrics\n"); return }
        respond(c, status: "200 OK", body: bridge.prometheusText(), headOnly: method == "HEAD")
    }

    private static func containsEnd(_ b: [UInt8]) -> Bool {
        var i = 0
        while i + 3 < b.count {
            if b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return true }
            i += 1
        }
        return false
    }

    private func respond(_ c: Int32, status: String, body: String, headOnly: Bool = false) {
        let head = "HTTP/1.1 \(status)\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        let all = Array((headOnly ? head : head + body).utf8)
        var off = 0
        while off < all.count {
            let w = all[off...].withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if w <= 0 { return }
            off += w
        }
    }
}

/// s3fs refuses a credentials file others can read; so do we.
enum CredentialsFileCheck {
    static func check(_ path: String, what: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw MountFailure("\(what) \(path) does not exist") }
        if st.st_mode & 0o077 != 0 {
            throw MountFailure("\(what) \(path) can be read by others (mode \(String(st.st_mode & 0o777, radix: 8))); run: chmod 600 \(path)")
        }
    }
}

/// The SSE-C key file: private to its owner like a credentials file, and holding exactly an
/// AES-256 key. Its path may be logged; its contents never are.
enum CustomerKeyFile {
    static func read(_ path: String) throws -> CustomerKey {
        try CredentialsFileCheck.check(path, what: "SSE-C key file")
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw MountFailure("SSE-C key file \(path) cannot be read: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard let bytes = readRegularFile(fd, maxBytes: 4096), let key = CustomerKey(fileContents: bytes) else {
            throw MountFailure("SSE-C key file \(path) must hold a 256-bit key: 32 bytes, or their base64 (44 characters) on one line")
        }
        return key
    }
}

/// The password of an AMQP notification queue's user: from the file given with
/// --notification-password-file (private, and its owner the mounting user or root, as it may be
/// read by a mount running as root), else S3MOUNT_AMQP_PASSWORD. Never logged.
enum AMQPPassword {
    static func read(file: String?, env: [String: String]) throws -> String {
        guard let path = file else {
            guard let p = env["S3MOUNT_AMQP_PASSWORD"], !p.isEmpty else {
                throw MountFailure("an amqp:// notification queue needs its user's password: set S3MOUNT_AMQP_PASSWORD or give --notification-password-file (never in the URL)")
            }
            return p
        }
        try CredentialsFileCheck.check(path, what: "notification password file")
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw MountFailure("notification password file \(path) cannot be read: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw MountFailure("notification password file \(path) cannot be read: \(String(cString: strerror(errno)))") }
        if st.st_mode & 0o077 != 0 {
            throw MountFailure("notification password file \(path) can be read by others (mode \(String(st.st_mode & 0o777, radix: 8))); run: chmod 600 \(path)")
        }
        if st.st_uid != getuid() && st.st_uid != 0 {
            throw MountFailure("notification password file \(path) is owned by uid \(st.st_uid): it must be yours (uid \(getuid())) or root's")
        }
        guard let bytes = readRegularFile(fd, maxBytes: 4096) else {
            throw MountFailure("notification password file \(path) must be a regular file of at most 4 KiB")
        }
        // One line; the newline an editor adds is not part of it.
        var text = String(decoding: bytes, as: UTF8.self)
        while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
        guard !text.isEmpty, !text.contains("\n") else {
            throw MountFailure("notification password file \(path) must hold the password on one line")
        }
        return text
    }
}
