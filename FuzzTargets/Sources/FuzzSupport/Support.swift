import Glibc
@testable import S3

/// Once per process: warnings the parsers log (unreadable keys, ...) go to /dev/null, so that the
/// fuzzer's output stays readable and its speed is not the terminal's.
public let quietLogs: Void = {
    let fd = open("/dev/null", O_WRONLY)
    if fd >= 0 { Log.shared.setOutput(fd: fd) }
}()

/// The fuzzer's input as bytes.
@inline(__always)
public func input(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// A transport that answers every request with the given status and body (what a hostile or
/// broken endpoint could send), and records the requests.
public final class CannedTransport: HTTPTransport, @unchecked Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: [UInt8]
    public private(set) var requests: [HTTPRequest] = []

    public init(status: Int = 200, headers: [String: String] = [:], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func perform(_ request: HTTPRequest, sink: BodySink?) throws -> HTTPResponse {
        requests.append(request)
        if let sink, (200..<300).contains(status) {
            _ = body.withUnsafeBytes { sink($0) }
            return HTTPResponse(status: status, headers: headers, body: [], bytesReceived: Int64(body.count))
        }
        return HTTPResponse(status: status, headers: headers, body: body, bytesReceived: Int64(body.count))
    }
}

/// Splits the input into "name: value" header lines (lower-cased names, as the transport gives them).
public func headerLines(_ b: [UInt8]) -> [String: String] {
    var h: [String: String] = [:]
    for line in String(decoding: b, as: UTF8.self).split(separator: "\n") {
        guard let colon = line.firstIndex(of: ":") else { continue }
        h[line[..<colon].lowercased()] = String(line[line.index(after: colon)...]).trimmingCharacters(in: " \r\n\t")
    }
    return h
}

/// Fails the run (libFuzzer reports it as a crash, with the input) when an invariant is broken.
public func check(_ ok: @autoclosure () -> Bool, _ what: @autoclosure () -> String) {
    if !ok() {
        fputs("invariant broken: \(what())\n", stderr)
        abort()
    }
}
