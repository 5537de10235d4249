import CCurlShim
import Glibc
import XCTest
@testable import S3

/// The worker pools and the request gate: bounded, and bulk work never takes the last slots.
final class PoolTests: XCTestCase {
    func testAPoolRunsEveryJobOnAtMostItsThreads() {
        let pool = WorkerPool(name: "t-pool", maxThreads: 3)
        let cond = Condition()
        var running = 0, most = 0, done = 0
        for _ in 0..<30 {
            pool.submit {
                cond.broadcast { running += 1; most = max(most, running) }
                usleep(2_000)
                cond.broadcast { running -= 1; done += 1 }
            }
        }
        XCTAssertTrue(cond.wait(timeout: 10, until: { done == 30 }))
        XCTAssertLessThanOrEqual(most, 3)
        XCTAssertEqual(pool.load.threads, 3)
    }

    func testBulkRequestsLeaveTheReservedSlotsToInteractiveOnes() {
        let gate = RequestGate(limit: 4, reserved: 2)
        let bulk = WorkerPool(name: "t-bulk", maxThreads: 4, bulk: true)
        let cond = Condition()
        var holding = 0, finished = 0
        var release = false
        for _ in 0..<4 {
            bulk.submit {
                gate.acquire()
                cond.broadcast { holding += 1 }
                cond.wait(until: { release })
                gate.release()
                cond.broadcast { holding -= 1; finished += 1 }
            }
        }
        // Two bulk requests get slots; the other two wait for them.
        XCTAssertTrue(cond.wait(timeout: 5, until: { holding == 2 }))
        usleep(100_000)
        XCTAssertEqual(cond.locked { holding }, 2)
        XCTAssertEqual(gate.load.inFlight, 2)
        // A request from a thread that is not bulk (a FUSE thread) goes at once, even past the limit.
        gate.acquire()
        gate.acquire()
        gate.acquire()
        XCTAssertEqual(gate.load.inFlight, 5)
        gate.release(); gate.release(); gate.release()
        cond.broadcast { release = true }
        XCTAssertTrue(cond.wait(timeout: 5, until: { finished == 4 }))
        XCTAssertEqual(gate.load.inFlight, 0)
        XCTAssertGreaterThanOrEqual(gate.load.waits, 2, "the bulk requests past the bulk share waited")
    }
}
