import CCurlShim
import Glibc
import Logging

/// Logging for every layer: a swift-log `Logger` whose handler writes one line per event to
/// stderr (foreground, or the journal under systemd), a log file, or syslog (background daemon).
/// Callers never pass secrets; `Credentials` has a redacting description so an accidental
/// interpolation prints no key.
public final class Log: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case debug = 0, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var swiftLog: Logger.Level { [.debug, .info, .warning, .error][rawValue] }
    }

    public enum Destination: Sendable { case fd(Int32), syslog }

    public static let shared = Log()
    private struct State { var level: Level = .info; var onceKeys = Set<String>() }
    private let state = Locked(State())
    let output = Locked<Destination>(.fd(2))
    private let logger: Locked<Logger>

    init() {
        var l = Logger(label: "s3mount", factory: { _ in LineLogHandler() })
        l.logLevel = .info
        logger = Locked(l)
    }

    public var level: Level {
        get { state.withLock { $0.level } }
        set {
            state.withLock { $0.level = newValue }
            logger.withLock { $0.logLevel = newValue.swiftLog }
        }
    }

    public func setOutput(fd: Int32) { output.withLock { $0 = .fd(fd) } }
    public func useSyslog() {
        s3m_openlog("s3mount")
        output.withLock { $0 = .syslog }
    }
    public func enabled(_ l: Level) -> Bool { l >= level }

    public func write(_ l: Level, _ message: @autoclosure () -> String) {
        guard l >= level else { return }
        let text = Log.escapingControls(message())
        let lg = logger.withLock { $0 }
        lg.log(level: l.swiftLog, "\(text)")
    }

    /// The text with control characters written as escapes (`\n`, `\x1b`, …): a key, a name or a
    /// server's error message can hold any byte, and one holding a newline must not forge a log
    /// line of its own (nor an escape sequence repaint a terminal).
    public static func escapingControls(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) || s.unicodeScalars.contains(where: { (0x80...0x9F).contains($0.value) || $0 == "\u{2028}" || $0 == "\u{2029}" }) else { return s }
        var out = ""
        out.reserveCapacity(s.utf8.count + 8)
        for u in s.unicodeScalars {
            switch u {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7F || (0x80...0x9F).contains(u.value) || u == "\u{2028}" || u == "\u{2029}" {
                    let h = String(u.value, radix: 16)
                    out += u.value <= 0xFF ? "\\x" + (h.count == 1 ? "0" : "") + h : "\\u{" + h + "}"
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out
    }

    /// Logs a message only the first time `key` is seen (for per-key warnings during listings).
    public func once(_ l: Level, key: String, _ message: @autoclosure () -> String) {
        let first = state.withLock { s -> Bool in
            if s.onceKeys.count > 10_000 { s.onceKeys.removeAll() }
            return s.onceKeys.insert(key).inserted
        }
        if first { write(l, message()) }
    }

    public static func debug(_ m: @autoclosure () -> String) { shared.write(.debug, m()) }
    public static func info(_ m: @autoclosure () -> String) { shared.write(.info, m()) }
    public static func warning(_ m: @autoclosure () -> String) { shared.write(.warning, m()) }
    public static func error(_ m: @autoclosure () -> String) { shared.write(.error, m()) }
}

/// The swift-log handler: "TIME s3mount[PID] LEVEL: message", or the message alone to syslog.
struct LineLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) { emit(level: event.level, message: event.message) }

    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        emit(level: level, message: message)
    }

    private func emit(level: Logger.Level, message: Logger.Message) {
        switch Log.shared.output.withLock({ $0 }) {
        case .syslog:
            let prio: Int32 = level >= .error ? 3 : level == .warning ? 4 : level == .debug || level == .trace ? 7 : 6
            "\(level): \(message)".withCString { s3m_syslog(prio, $0) }
        case .fd(let fd):
            var tv = timeval()
            gettimeofday(&tv, nil)
            let text = "\(AmzDate.format(tv.tv_sec)) s3mount[\(getpid())] \(level): \(message)\n"
            _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        }
    }
}
