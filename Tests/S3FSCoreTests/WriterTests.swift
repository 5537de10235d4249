import Foundation
import S3
import XCTest
@testable import S3FSCore

final class WriterTests: XCTestCase {
    /// A part rewritten while it is being sent can fail its checksum at S3 (BadDigest: the bytes
    /// changed under the upload). That failure only means "send it again": the file still uploads.
    func testAPartRewrittenWhileInFlightIsSentAgainWhenItsUploadFails() throws {
        let store = InMemoryStore()
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let firstTry = Locked(true)
        store.beforeUploadPart = { n in
            guard n == 1, firstTry.withLock({ t in defer { t = false }; return t }) else { return }
            entered.signal()
            release.wait()
            throw S3Error(kind: .clientError, status: 400, code: "BadDigest", message: "checksum mismatch", operation: "UploadPart")
        }
        let w = try FileWriter(store: store, key: Array("big".utf8), ino: 2, meta: PosixMeta(mode: 0o100644, uid: 0, gid: 0), spoolDir: NSTemporaryDirectory(),
                               multipartThreshold: 64 << 10, partSize: 32 << 10, parallelParts: 4)
        defer { w.close() }
        var expected = (0..<(100 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 131) }
        for off in stride(from: 0, to: expected.count, by: 4096) {
            let end = min(off + 4096, expected.count)
            _ = expected[off..<end].withUnsafeBytes { w.write(offset: Int64(off), data: $0) }
        }
        XCTAssertEqual(entered.wait(timeout: .now() + 10), .success, "part 1 leaves while the file is written")
        // Rewrite bytes of part 1 while it is in flight, then let its upload fail.
        let patch = Array("PATCH".utf8)
        _ = patch.withUnsafeBytes { w.write(offset: 100, data: $0) }
        expected.replaceSubrange(100..<105, with: patch)
        release.signal()
        guard case .success(let done?) = w.upload(final: true) else { return XCTFail("the upload must succeed") }
        XCTAssertEqual(done.size, Int64(expected.count))
        XCTAssertEqual(store.data("big"), expected)
    }
}
