import Foundation
import Glibc
import S3

/// Runs `body` with the log going to an unnamed temporary file instead of stderr and returns what
/// it wrote, so that warnings a test provokes on purpose are asserted rather than printed among
/// the results. (The log is process-wide: run nothing else that logs meanwhile.)
func capturingLog<T>(_ body: () throws -> T) rethrows -> (result: T, log: String) {
    guard let file = tmpfile() else { fatalError("tmpfile: \(String(cString: strerror(errno)))") }
    defer { fclose(file) }
    let fd = fileno(file)
    Log.shared.setOutput(fd: fd)
    let result: T
    do {
        defer { Log.shared.setOutput(fd: 2) }
        result = try body()
    }
    var text = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    var off: off_t = 0
    while true {
        let n = pread(fd, &buf, buf.count, off)
        if n <= 0 { break }
        text += buf[0..<n]
        off += off_t(n)
    }
    return (result, String(decoding: text, as: UTF8.self))
}

/// The log sent to an unnamed temporary file while `body` runs, read piece by piece: `take()`
/// returns what was written since the last take. For a loop of many steps, each checked for what
/// it logged, without a file per step. (Process-wide, like capturingLog.)
final class LogTap {
    private let file: UnsafeMutablePointer<FILE>
    private var read: off_t = 0
    private var buf = [UInt8](repeating: 0, count: 65536)

    private init() {
        guard let f = tmpfile() else { fatalError("tmpfile: \(String(cString: strerror(errno)))") }
        file = f
    }

    static func during<T>(_ body: (LogTap) throws -> T) rethrows -> T {
        let tap = LogTap()
        defer { fclose(tap.file) }
        Log.shared.setOutput(fd: fileno(tap.file))
        defer { Log.shared.setOutput(fd: 2) }
        return try body(tap)
    }

    func take() -> String {
        var text = [UInt8]()
        while true {
            let n = pread(fileno(file), &buf, buf.count, read)
            if n <= 0 { break }
            text += buf[0..<n]
            read += off_t(n)
        }
        return String(decoding: text, as: UTF8.self)
    }
}
