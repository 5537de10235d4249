import Foundation
import XCTest
@testable import S3

/// Starts a helper process (moto_server, the fake metadata server) on loopback for a test class.
final class Helper {
    let process = Process()
    let output = Pipe()
    var port: Int = 0
    var lines: [String] = []
    private let lock = NSLock()

    var endpoint: String { "http://127.0.0.1:\(port)" }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    /// moto_server on a free port; nil (with a loud message) only when it truly cannot start.
    static func moto() -> Helper? {
        guard let exe = which("moto_server") else {
            print("!!! SKIPPING: moto_server not found; run scripts/setup.sh")
            return nil
        }
        let h = Helper()
        h.port = freePort()
        h.process.executableURL = URL(fileURLWithPath: exe)
        h.process.arguments = ["-H", "127.0.0.1", "-p", String(h.port)]
        return h.start(waitForPort: true) ? h : nil
    }

    static func fakeMetadata(containerAuth: String) -> Helper? {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures/fake_metadata.py").path
        guard let py = which("python3") else { return nil }
        let h = Helper()
        h.process.executableURL = URL(fileURLWithPath: py)
        h.process.arguments = [script, containerAuth]
        return h.start(waitForPort: false) ? h : nil
    }

    private func start(waitForPort: Bool) -> Bool {
        process.standardOutput = output
        process.standardError = output
        output.fileHandleForReading.readabilityHandler = { [weak self] fh in
            guard let self else { return }
            let d = fh.availableData
            guard !d.isEmpty else { return }
            let text = String(decoding: d, as: UTF8.self)
            self.lock.lock()
            for l in text.split(separator: "\n") {
                if self.port == 0, let p = Int(l.trimmingCharacters(in: .whitespaces)) { self.port = p } else { self.lines.append(String(l)) }
            }
            self.lock.unlock()
        }
        do { try process.run() } catch {
            print("!!! SKIPPING: cannot start \(process.executableURL!.path): \(error)")
            return false
        }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if !process.isRunning { return false }
            lock.lock()
            let p = port
            lock.unlock()
            if p != 0 {
                if !waitForPort { return true }
                if (try? CurlTransport().perform(HTTPRequest(method: "GET", url: "http://127.0.0.1:\(p)/moto-api/", timeoutMs: 1000))) != nil { return true }
            }
            usleep(100_000)
        }
        return false
    }

    func served() -> [String] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }

    func stop() {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
    }
}
