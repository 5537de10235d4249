import CRabbitMQ
import Glibc

public struct AMQPError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
    public init(_ message: String) { self.message = message }
}

/// Where an AMQP queue is: amqp[s]://USER@HOST[:PORT]/VHOST?queue=NAME. The password is never in
/// the URL (a command line is visible to every user in `ps`): it comes with `password`.
public struct AMQPEndpoint: Equatable, Sendable {
    public var tls: Bool
    public var user: String
    public var host: String
    public var port: Int
    public var vhost: String
    public var queue: String

    /// Whether `url` names an AMQP queue (amqp:// or amqps://) rather than an SQS one.
    public static func isAMQP(_ url: String) -> Bool {
        let l = url.lowercased()
        return l.hasPrefix("amqp://") || l.hasPrefix("amqps://")
    }

    /// Decodes %XX escapes; nil for a bad escape, for bytes that are not UTF-8 or for a control character.
    static func percentDecoded<S: StringProtocol>(_ s: S) -> String? {
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "%") {
                guard bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        guard let text = String(validating: out, as: UTF8.self), !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else { return nil }
        return text
    }

    /// The endpoint `url` names, or why it names none.
    public static func parse(_ url: String) -> Result<AMQPEndpoint, AMQPError> {
        func fail(_ why: String) -> Result<AMQPEndpoint, AMQPError> {
            .failure(AMQPError(why + " (expected amqp://USER@HOST[:PORT]/VHOST?queue=NAME, the vhost percent-encoded: %2F for \"/\")"))
        }
        // What a URL may hold unencoded: the URL is shown in logs and in the statistics' JSON.
        if let bad = url.unicodeScalars.first(where: { $0.value <= 0x20 || $0.value >= 0x7f || "\"\\<>`{}|^".unicodeScalars.contains($0) }) {
            return fail("U+\(String(bad.value, radix: 16, uppercase: true)) must be percent-encoded")
        }
        guard let sep = url.range(of: "://") else { return fail("not a URL") }
        let scheme = url[..<sep.lowerBound].lowercased()
        guard scheme == "amqp" || scheme == "amqps" else { return fail("the scheme must be amqp or amqps, not \"\(scheme)\"") }
        var rest = url[sep.upperBound...]
        if rest.contains("#") { return fail("a fragment (#) has no meaning here") }
        var query: Substring? = nil
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        let authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count)
        guard let at = authority.lastIndex(of: "@") else {
            return fail("the URL names no user (USER@HOST); the password comes from S3MOUNT_AMQP_PASSWORD or --notification-password-file")
        }
        let userinfo = authority[..<at]
        if userinfo.contains(":") {
            return .failure(AMQPError("the URL holds a password: the command line is visible to every user (ps); put the password in the environment variable S3MOUNT_AMQP_PASSWORD or in a file given with --notification-password-file, and write the URL as amqp://USER@HOST/..."))
        }
        guard let user = percentDecoded(userinfo), !user.isEmpty else { return fail("the user is empty or badly percent-encoded") }
        var hostport = authority[authority.index(after: at)...]
        var host: String
        if hostport.hasPrefix("[") {
            guard let close = hostport.firstIndex(of: "]") else { return fail("an IPv6 address lacks its \"]\"") }
            host = String(hostport[hostport.index(after: hostport.startIndex)..<close])
            hostport = hostport[hostport.index(after: close)...]
            if !hostport.isEmpty && !hostport.hasPrefix(":") { return fail("unexpected text after the IPv6 address") }
        } else {
            host = String(hostport.prefix { $0 != ":" })
            hostport = hostport.dropFirst(host.count)
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || ".-_:".contains($0) }) else { return fail("the host is empty or not a host name") }
        let tls = scheme == "amqps"
        var port = tls ? 5671 : 5672
        if hostport.hasPrefix(":") {
            let digits = hostport.dropFirst()
            guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let p = Int(digits), (1...65535).contains(p) else {
                return fail("the port must be 1 to 65535, not \"\(digits)\"")
            }
            port = p
        }
        // No path: the default vhost "/" (as the AMQP URI spec says); "/%2F": "/" too.
        var vhost = "/"
        if !path.isEmpty {
            let encoded = path.dropFirst()
            if encoded.contains("/") { return fail("the vhost must be one path segment (a \"/\" in it is written %2F)") }
            guard let v = percentDecoded(encoded), !v.isEmpty else { return fail("the vhost is empty or badly percent-encoded") }
            vhost = v
        }
        guard let query, !query.isEmpty else { return fail("the queue is missing (?queue=NAME)") }
        var queue: String? = nil
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2, kv[0] == "queue" else { return fail("unknown query parameter \"\(kv[0])\" (only queue=NAME)") }
            if queue != nil { return fail("queue= is given twice") }
            guard let q = percentDecoded(kv[1]), !q.isEmpty else { return fail("the queue name is empty or badly percent-encoded") }
            // AMQP's short strings: 255 bytes.
            if q.utf8.count > 255 { return fail("the queue name is longer than 255 bytes") }
            queue = q
        }
        guard let queue else { return fail("the queue is missing (?queue=NAME)") }
        if vhost.utf8.count > 255 || user.utf8.count > 255 { return fail("the vhost or the user is longer than 255 bytes") }
        return .success(AMQPEndpoint(tls: tls, user: user, host: host, port: port, vhost: vhost, queue: queue))
    }

    /// The endpoint as a URL (no password), for logs and statistics.
    public var display: String {
        func enc(_ s: String) -> String {
            var out = ""
            for b in s.utf8 {
                let c = Character(Unicode.Scalar(b))
                if b < 0x80, c.isLetter || c.isNumber || "-._~".contains(c) { out.append(c) } else { out += "%" + String(b, radix: 16, uppercase: true).leftPadded(2) }
            }
            return out
        }
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(tls ? "amqps" : "amqp")://\(enc(user))@\(h):\(port)/\(enc(vhost))?queue=\(enc(queue))"
    }
}

private extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

/// An AMQP 0-9-1 queue (RabbitMQ) that Ceph RGW or MinIO publish bucket notifications to, read
/// as the notification listener reads SQS: a consumer with manual acks and a prefetch window;
/// `receive` hands out what was delivered, `delete` acks it once applied. One connection, one lock:
/// several threads may receive and delete at once. A receive waits in short slices so that acks
/// from other threads get the connection in between. Any connection error is thrown and the next
/// call connects again; the broker then redelivers what was not acked (applying an event twice
/// changes nothing). A receipt handle is "GENERATION.TAG": tags of an older connection mean
/// nothing on a newer one (acking them there could ack another message, or close the channel),
/// so their acks are dropped.
public final class AMQPQueue: EventQueue, @unchecked Sendable {
    public let endpoint: AMQPEndpoint
    private let password: String
    /// PEM CA file for amqps (nil: the system's bundle).
    private let caFile: String?
    public let prefetch: Int
    public let maxMessages: Int
    /// Bodies larger than this are acked unread and handed on empty (the listener counts them malformed).
    public let maxBodyBytes: Int
    let timeoutSeconds: Int
    let heartbeatSeconds: Int
    /// How long one wait holds the lock.
    let sliceMs: Int

    private struct State {
        var conn: amqp_connection_state_t? = nil
        var generation = 0
        /// Tags delivered on the current connection and not acked yet.
        var unacked = Set<UInt64>()
        /// Whether the probe channel is open on the current connection.
        var probeChannelOpen = false
        /// Why the broker refused a probe (the user may not publish): no more are sent.
        var probesRefused: String? = nil
    }
    private let state = Locked(State())

    public init(endpoint: AMQPEndpoint, password: String, caFile: String? = nil, prefetch: Int = 100, maxMessages: Int = 10,
                maxBodyBytes: Int = 1 << 20, timeoutSeconds: Int = 10, heartbeatSeconds: Int = 30, sliceMs: Int = 200) {
        self.endpoint = endpoint
        self.password = password
        self.caFile = caFile
        self.prefetch = max(1, min(prefetch, 65535))
        self.maxMessages = max(1, maxMessages)
        self.maxBodyBytes = maxBodyBytes
        self.timeoutSeconds = timeoutSeconds
        self.heartbeatSeconds = heartbeatSeconds
        self.sliceMs = max(10, sliceMs)
    }

    public convenience init(url: String, password: String, caFile: String? = nil) throws {
        switch AMQPEndpoint.parse(url) {
        case .success(let e): self.init(endpoint: e, password: password, caFile: caFile)
        case .failure(let e): throw e
        }
    }

    deinit {
        state.withLock { s in
            if let c = s.conn { s3m_amqp_close(c, 0) }
            s.conn = nil
        }
    }

    /// The open connection, connecting first if there is none. Under the lock.
    private func connection(_ s: inout State) throws -> amqp_connection_state_t {
        if let c = s.conn { return c }
        var err = [CChar](repeating: 0, count: 512)
        let e = endpoint
        let c = s3m_amqp_open(e.host, Int32(e.port), e.tls ? 1 : 0, caFile, e.vhost, e.user, password, e.queue,
                              UInt16(prefetch), Int32(heartbeatSeconds), Int32(timeoutSeconds), &err, err.count)
        guard let c else { throw AMQPError(String(cString: err)) }
        s.conn = c
        s.generation += 1
        s.unacked = []
        s.probeChannelOpen = false
        return c
    }

    /// Drops the connection after an error: the broker requeues what it had not seen acked.
    private func drop(_ s: inout State) {
        if let c = s.conn { s3m_amqp_close(c, 0) }
        s.conn = nil
        s.unacked = []
    }

    /// One step under the lock: the next delivery, nil when none came within `waitMs`.
    private func next(waitMs: Int) throws -> QueueMessage? {
        try state.withLock { s -> QueueMessage? in
            let c = try connection(&s)
            var tag: UInt64 = 0
            var body: UnsafeMutableRawPointer? = nil
            var len = 0
            var err = [CChar](repeating: 0, count: 512)
            let rc = s3m_amqp_next(c, Int32(waitMs), Int32(timeoutSeconds), UInt64(maxBodyBytes), &tag, &body, &len, &err, err.count)
            defer { free(body) }
            switch rc {
            case Int32(S3M_AMQP_NOTHING):
                return nil
            case Int32(S3M_AMQP_PROBES_REFUSED):
                s.probesRefused = String(cString: err)
                s.probeChannelOpen = false
                return nil
            case Int32(S3M_AMQP_MESSAGE), Int32(S3M_AMQP_TOO_LARGE):
                s.unacked.insert(tag)
                var text = ""
                if rc == Int32(S3M_AMQP_MESSAGE), let body, len > 0 {
                    text = String(decoding: UnsafeRawBufferPointer(start: body, count: len), as: UTF8.self)
                }
                // A body too large is handed on empty: the listener finds it no event, counts it
                // malformed and acks it.
                let handle = "\(s.generation).\(tag)"
                return QueueMessage(id: handle, body: text, receiptHandle: handle)
            default:
                drop(&s)
                throw AMQPError(String(cString: err))
            }
        }
    }

    public func receive(waitSeconds: Int) throws -> [QueueMessage] {
        var out: [QueueMessage] = []
        // The first: waited for in slices, the lock let go between them.
        let deadline = monotonicSeconds() + Double(max(0, waitSeconds))
        while true {
            let left = Int((deadline - monotonicSeconds()) * 1000)
            if let m = try next(waitMs: max(0, min(sliceMs, left))) { out.append(m); break }
            if left <= 0 { return [] }
        }
        // Then what has arrived already, without waiting. A failure now still hands on what came:
        // applied, their acks find the connection gone and are dropped, and the broker gives them
        // again (applying an event twice changes nothing); the next call reconnects or throws.
        while out.count < maxMessages {
            guard let m = try? next(waitMs: 0) else { break }
            out.append(m)
        }
        return out
    }

    /// A probe of the mount (`NotificationListener`): published to this queue through the default
    /// exchange, on a channel of its own. A broker that refuses it closes only that channel; the
    /// next send then says why, and the listener stops probing.
    public func send(_ body: String) throws {
        try state.withLock { s in
            if let why = s.probesRefused { throw QueueCannotSend(why) }
            let c = try connection(&s)
            var err = [CChar](repeating: 0, count: 512)
            let bytes = Array(body.utf8)
            let open = s.probeChannelOpen ? Int32(0) : Int32(1)
            let rc = bytes.withUnsafeBytes { s3m_amqp_publish(c, open, endpoint.queue, $0.baseAddress, $0.count, &err, err.count) }
            if rc != 0 {
                drop(&s)
                throw AMQPError(String(cString: err))
            }
            s.probeChannelOpen = true
        }
    }

    public func delete(_ receiptHandles: [String]) throws -> [String] {
        try state.withLock { s in
            guard let c = s.conn else { return [] }
            for h in receiptHandles {
                let parts = h.split(separator: ".")
                // Tags of an earlier connection: that broker session is gone, the message comes again.
                guard parts.count == 2, Int(parts[0]) == s.generation, let tag = UInt64(parts[1]), s.unacked.contains(tag) else { continue }
                let rc = s3m_amqp_ack(c, tag)
                if rc != 0 {
                    drop(&s)
                    throw AMQPError("acknowledging messages: \(String(cString: s3m_amqp_error(rc)))")
                }
                s.unacked.remove(tag)
            }
            return []
        }
    }
}
