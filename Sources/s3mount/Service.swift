import Glibc
import S3
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

    static func start(_ fs: Filesystem) {
        let t = Thread {
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGUSR1)
            var sig: Int32 = 0
            while sigwait(&set, &sig) == 0 {
                Log.info(fs.statsSummary())
            }
        }
        t.start()
    }
}

/// A minimal HTTP endpoint serving GET /metrics in the Prometheus text format.
final class MetricsServer: @unchecked Sendable {
    let fd: Int32
    let fs: Filesystem

    /// `address` is "HOST:PORT" (an IPv4 address, usually 127.0.0.1).
    init(address: String, fs: Filesystem) throws {
        self.fs = fs
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

    func start() {
        let t = Thread { [self] in
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { if errno == EINTR { continue }; return }
                serve(c)
            }
        }
        t.start()
    }

    private func serve(_ c: Int32) {
        defer { close(c) }
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = recv(c, &buf, buf.count, 0)
        guard n > 0 else { return }
        let request = String(decoding: buf[0..<n], as: UTF8.self)
        let ok = request.hasPrefix("GET /metrics") || request.hasPrefix("GET / ")
        let body = ok ? fs.prometheusText() : "not found; try /metrics\n"
        let head = "HTTP/1.1 \(ok ? "200 OK" : "404 Not Found")\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
        let all = Array((head + body).utf8)
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
