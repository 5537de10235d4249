import Glibc
import Synchronization

/// Minimal leveled logger: one line per event to stderr or a file. Callers never pass secrets;
/// `Credentials` has a redacting description so an accidental interpolation prints no key.
public final class Log: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case debug = 0, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var label: String { ["debug", "info", "warning", "error"][rawValue] }
    }

    public static let shared = Log()
    private struct State { var level: Level = .info; var fd: Int32 = 2; var onceKeys = Set<String>() }
    private let state = Mutex(State())

    public var level: Level {
        get { state.withLock { $0.level } }
        set { state.withLock { $0.level = newValue } }
    }

    public func setOutput(fd: Int32) { state.withLock { $0.fd = fd } }
    public func enabled(_ l: Level) -> Bool { l >= level }

    public func write(_ l: Level, _ message: @autoclosure () -> String) {
        let (min, fd) = state.withLock { ($0.level, $0.fd) }
        guard l >= min else { return }
        var tv = timeval()
        gettimeofday(&tv, nil)
        let line = "\(AmzDate.format(tv.tv_sec)) s3mount[\(getpid())] \(l.label): \(message())\n"
        _ = line.withCString { Glibc.write(fd, $0, strlen($0)) }
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
