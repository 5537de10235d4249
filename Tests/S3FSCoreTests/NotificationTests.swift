import Foundation
import XCTest
import S3
@testable import S3FSCore

/// A queue in memory: what the listener receives, and what it deleted.
final class MemoryQueue: EventQueue, @unchecked Sendable {
    private let lock = NSLock()
    var pending: [QueueMessage] = []
    var deleted: [String] = []
    var failing: Error? = nil
    func push(_ body: String) {
        lock.lock()
        pending.append(QueueMessage(id: "m\(pending.count + deleted.count)", body: body, receiptHandle: "h\(pending.count + deleted.count)"))
        lock.unlock()
    }
    /// Bodies sent to the queue (the mount's probes); `sendsTo` takes them instead of this
    /// queue (another reader), `sendRefused` refuses them.
    var sent: [String] = []
    var sendsTo: MemoryQueue? = nil
    var sendRefused = false
    func receive(waitSeconds: Int) throws -> [QueueMessage] {
        lock.lock()
        if let e = failing { lock.unlock(); throw e }
        let out = Array(pending.prefix(10))
        pending.removeFirst(out.count)
        lock.unlock()
        // An empty queue answers after a while, as a long poll does.
        if out.isEmpty && waitSeconds > 0 { usleep(20_000) }
        return out
    }
    func backlog() throws -> Int? {
        lock.lock(); defer { lock.unlock() }
        return pending.count
    }
    func send(_ body: String) throws {
        lock.lock()
        let refused = sendRefused, other = sendsTo
        if !refused { sent.append(body) }
        lock.unlock()
        if refused { throw QueueCannotSend() }
        (other ?? self).push(body)
    }
    func delete(_ receiptHandles: [String]) throws -> [String] {
        lock.lock(); deleted += receiptHandles; lock.unlock()
        return []
    }
}

final class NotificationTests: XCTestCase {

    static func record(_ name: String, _ key: String, size: Int = 5, etag: String = "abc", time: String = "2026-12-03T10:00:00.000Z",
                       sequencer: String? = nil, bucket: String = "bkt") -> String {
        let seq = sequencer.map { ", \"sequencer\": \"\($0)\"" } ?? ""
        return """
        {"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "\(time)", "eventName": "\(name)",
         "s3": {"bucket": {"name": "\(bucket)"}, "object": {"key": "\(key)", "size": \(size), "eTag": "\(etag)"\(seq)}}}
        """
    }

    static func message(_ records: String...) -> String { "{\"Records\": [\(records.joined(separator: ","))]}" }

    // MARK: - parsing

    func testParsesRecordsKeysAndEnvelopes() {
        let body = Self.message(Self.record("ObjectCreated:Put", "a+b%2Fc%2Bd+%C3%A9.txt", size: 7, etag: "e1", sequencer: "0055AED6DCD90281E5"),
                                Self.record("ObjectRemoved:Delete", "x", time: "2026-12-03T10:00:01.500Z"))
        guard case .events(let evs) = S3EventParser.parse(body) else { return XCTFail("not parsed") }
        XCTAssertEqual(evs.count, 2)
        XCTAssertEqual(evs[0].key, Array("a b/c+d é.txt".utf8))
        XCTAssertEqual(evs[0].change, .created(size: 7, etag: "\"e1\""))
        XCTAssertEqual(evs[0].sequencer, "0055AED6DCD90281E5")
        XCTAssertEqual(evs[1].change, .removed)
        XCTAssertEqual(evs[1].time - evs[0].time, 1.5, accuracy: 0.001)
        // Through SNS without raw delivery: the S3 message is a string inside the envelope.
        let escaped = String(data: try! JSONSerialization.data(withJSONObject: ["Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:123456789012:bkt-events",
                                                                                "Message": body]), encoding: .utf8)!
        XCTAssertEqual(S3EventParser.parse(escaped), S3EventParser.parse(body))
        XCTAssertEqual(S3EventParser.parse("{\"Service\": \"Amazon S3\", \"Event\": \"s3:TestEvent\"}"), .test)
        // moto's form: no "Z", microseconds.
        guard case .events(let m) = S3EventParser.parse(Self.message(Self.record("ObjectCreated:Copy", "k", time: "2026-12-03T10:00:00.250000"))) else { return XCTFail() }
        XCTAssertEqual(m[0].time.truncatingRemainder(dividingBy: 1), 0.25, accuracy: 0.001)
    }

    func testMalformedMessagesAreNamed() {
        for body in ["", "not json", "[1,2]", "{\"Records\": 5}", "{\"Records\": [{\"eventName\": \"ObjectCreated:Put\"}]}",
                     Self.message(Self.record("ObjectCreated:Put", "bad%zzkey")),
                     Self.message(Self.record("ObjectCreated:Put", "k", time: "yesterday"))] {
            guard case .malformed = S3EventParser.parse(body) else { return XCTFail("accepted: \(body)") }
        }
        // Events that change nothing a listing shows are skipped, not malformed.
        XCTAssertEqual(S3EventParser.parse(Self.message(Self.record("ObjectTagging:Put", "k"))), .events([]))
    }

    func testSequencersCompareAsHexNumbers() {
        XCTAssertTrue(ObjectEvent.sequencer("0055AED6DCD90281E6", isAfter: "0055AED6DCD90281E5"))
        XCTAssertFalse(ObjectEvent.sequencer("0055AED6DCD90281E5", isAfter: "0055AED6DCD90281E5"))
        XCTAssertTrue(ObjectEvent.sequencer("100", isAfter: "0FF"))
        XCTAssertTrue(ObjectEvent.sequencer("1000", isAfter: "FFF"))
        XCTAssertFalse(ObjectEvent.sequencer("00ff", isAfter: "100"))
    }

    // MARK: - applying

    func make(_ keys: [String], prefix: String = "") -> (Filesystem, InMemoryStore, Locked<[Invalidation]>) {
        let store = InMemoryStore()
        for k in keys { store.put(k) }
        var o = FSOptions()
        o.metadataTTL = .infinity
        o.notifications = true
        o.sweepCaches = false
        o.prefix = b(prefix)
        let fs = Filesystem(store: store, options: o)
        let seen = Locked<[Invalidation]>([])
        fs.invalidator = { i in seen.withLock { $0.append(i) } }
        return (fs, store, seen)
    }

    func event(_ key: String, _ change: ObjectEvent.Change, time: Double = 1_800_000_000, seq: String? = nil) -> ObjectEvent {
        ObjectEvent(bucket: "bkt", key: b(key), change: change, name: change == .removed ? "ObjectRemoved:Delete" : "ObjectCreated:Put", time: time, sequencer: seq)
    }

    func names(_ fs: Filesystem, _ ino: UInt64) -> [String] {
        readDirectory(fs, ino).map { $0.0 }.filter { $0 != "." && $0 != ".." }
    }

    func lookup(_ fs: Filesystem, _ parent: UInt64, _ name: String) -> Attributes? { try! fs.lookup(parent: parent, name: b(name)).get() }

    func testEventsKeepAListedDirectoryCurrentWithoutRequests() {
        let (fs, store, seen) = make(["d/a", "d/b", "top"])
        let d = lookup(fs, 1, "d")!
        XCTAssertEqual(names(fs, d.ino), ["a", "b"])
        XCTAssertEqual(names(fs, 1), ["d", "top"])
        XCTAssertNil(lookup(fs, d.ino, "c"))
        let lists = store.lists
        XCTAssertEqual(fs.applyEvent(event("d/c", .created(size: 42, etag: "\"c1\"")), bucket: "bkt"), .applied)
        XCTAssertEqual(lookup(fs, d.ino, "c")?.size, 42, "the negative answer was replaced")
        XCTAssertEqual(fs.applyEvent(event("d/a", .created(size: 9, etag: "\"a2\"")), bucket: "bkt"), .applied)
        XCTAssertEqual(lookup(fs, d.ino, "a")?.size, 9)
        XCTAssertEqual(fs.applyEvent(event("d/b", .removed), bucket: "bkt"), .applied)
        XCTAssertEqual(names(fs, d.ino), ["a", "c"])
        XCTAssertNil(lookup(fs, d.ino, "b"))
        // A key in a new directory: its ancestors appear, and it is complete (its keys all came as events).
        XCTAssertEqual(fs.applyEvent(event("n1/n2/f", .created(size: 1, etag: "\"f\"")), bucket: "bkt"), .applied)
        XCTAssertEqual(names(fs, 1), ["d", "top", "n1"])
        let n1 = lookup(fs, 1, "n1")!
        let n2 = lookup(fs, n1.ino, "n2")!
        XCTAssertEqual(names(fs, n2.ino), ["f"])
        XCTAssertEqual(store.lists, lists, "no request while following events")
        // The kernel was told: the entry of each changed name, and the directories' inodes.
        let told = seen.withLock { $0 }
        XCTAssertTrue(told.contains { if case .entry(d.ino, b("c")) = $0 { return true }; return false })
        XCTAssertTrue(told.contains { if case .inode(d.ino) = $0 { return true }; return false })
        XCTAssertTrue(told.contains { if case .entry(1, b("n1")) = $0 { return true }; return false })
    }

    func testImpliedDirectoriesGoWithTheirLastKeyButMarkedOnesStay() {
        let (fs, store, _) = make(["imp/x", "marked/", "marked/y", "top"])
        _ = names(fs, 1)
        let imp = lookup(fs, 1, "imp")!, marked = lookup(fs, 1, "marked")!
        _ = names(fs, imp.ino)
        _ = names(fs, marked.ino)
        let lists = store.lists
        XCTAssertEqual(fs.applyEvent(event("imp/x", .removed), bucket: "bkt"), .applied)
        XCTAssertEqual(fs.applyEvent(event("marked/y", .removed), bucket: "bkt"), .applied)
        XCTAssertEqual(names(fs, 1), ["marked", "top"], "an implied directory is gone with its last key; a marked one stays")
        XCTAssertEqual(fs.applyEvent(event("marked/", .removed), bucket: "bkt"), .applied)
        XCTAssertEqual(names(fs, 1), ["top"])
        XCTAssertEqual(store.lists, lists)
    }

    func testStaleDuplicateOwnAndForeignEventsChangeNothing() {
        let (fs, store, _) = make(["d/a", "other/z"], prefix: "d/")
        _ = names(fs, 1)
        XCTAssertEqual(fs.applyEvent(event("d/a", .created(size: 2, etag: "\"v2\""), time: 1_800_000_010), bucket: "bkt"), .applied)
        // An older version delivered late, by eventTime and by sequencer.
        XCTAssertEqual(fs.applyEvent(event("d/a", .created(size: 1, etag: "\"v1\""), time: 1_800_000_005), bucket: "bkt"), .stale)
        XCTAssertEqual(lookup(fs, 1, "a")?.size, 2)
        XCTAssertEqual(fs.applyEvent(event("d/s", .created(size: 2, etag: "\"s2\""), seq: "00A2"), bucket: "bkt"), .applied)
        XCTAssertEqual(fs.applyEvent(event("d/s", .removed, time: 1_900_000_000, seq: "0099"), bucket: "bkt"), .stale,
                       "the sequencer orders, not the time")
        XCTAssertEqual(lookup(fs, 1, "s")?.size, 2)
        // A duplicate of the newest: nothing changes.
        XCTAssertEqual(fs.applyEvent(event("d/a", .created(size: 2, etag: "\"v2\""), time: 1_800_000_010), bucket: "bkt"), .ignored)
        // Outside the prefix, another bucket, unusable names.
        XCTAssertEqual(fs.applyEvent(event("other/q", .created(size: 1, etag: "\"q\"")), bucket: "bkt"), .ignored)
        XCTAssertEqual(fs.applyEvent(ObjectEvent(bucket: "elsewhere", key: b("d/q"), change: .removed, name: "ObjectRemoved:Delete", time: 0), bucket: "bkt"), .ignored)
        XCTAssertEqual(fs.applyEvent(event("d/x/../y", .created(size: 1, etag: "\"q\"")), bucket: "bkt"), .ignored)
        // The mount's own change coming back: consumed, even after a later change through the mount.
        let ownETag = try! fs.store.put(b("d/mine"), body: .bytes([1]), metadata: [])
        XCTAssertEqual(store.etag("d/mine"), ownETag)
        XCTAssertEqual(fs.applyEvent(event("d/mine", .created(size: 1, etag: ownETag)), bucket: "bkt"), .own)
        XCTAssertEqual(fs.applyEvent(event("d/mine", .created(size: 1, etag: ownETag)), bucket: "bkt"), .applied,
                       "a second delivery is not the mount's own any more (it only shows the file)")
    }

    func testListenerAppliesDeletesAndSurvivesBadMessagesAndAFailingQueue() {
        let (fs, _, _) = make(["d/a"])
        _ = names(fs, 1)
        let d = lookup(fs, 1, "d")!
        _ = names(fs, d.ino)
        let q = MemoryQueue()
        let listener = NotificationListener(fs: fs, queue: q, queueName: "mem", bucket: "bkt", waitSeconds: 0)
        q.push(Self.message(Self.record("ObjectCreated:Put", "d/new", size: 3, time: "2030-01-01T00:00:00Z")))
        q.push("garbage")
        q.push("{\"Service\": \"Amazon S3\", \"Event\": \"s3:TestEvent\"}")
        let (_, log) = capturingLog { listener.process(try! q.receive(waitSeconds: 0)) }
        XCTAssertEqual(q.deleted, ["h0", "h1", "h2"], "applied, malformed and test messages are all deleted")
        // The malformed one is named in the log, once; nothing else is logged.
        let lines = log.split(separator: "\n").map { String($0.drop(while: { $0 != "]" }).dropFirst(2)) }
        XCTAssertEqual(lines, ["warning: notification message m1 is not an S3 event (not a JSON object); deleted",
                               "warning: notification queue mem: a message that is not an S3 event was dropped; caches are trusted for 60 s and revalidated until every event arrives again"], log)
        XCTAssertEqual(lookup(fs, d.ino, "new")?.size, 3)
        let s = listener.stats
        XCTAssertEqual([s.messages, s.events, s.applied, s.malformed, s.testEvents, s.gaps], [3, 1, 1, 1, 1, 1])
        XCTAssertNotNil(s.gap, "a dropped message is a gap")
        // Unhealthy: the short TTL; healthy again: the configured one.
        fs.setNotificationsHealthy(false)
        XCTAssertEqual(fs.currentMetadataTTL, 60)
        fs.setNotificationsHealthy(true)
        XCTAssertEqual(fs.currentMetadataTTL, .infinity)
    }

    // MARK: - bursts, probes and gaps

    func testParallelReceiversApplyABurstOnceEach() {
        let (fs, store, _) = make(["d/seed"])
        let d = lookup(fs, 1, "d")!
        _ = names(fs, d.ino)
        let lists = store.lists
        let q = MemoryQueue()
        for i in 0..<2000 {
            q.push(Self.message(Self.record("ObjectCreated:Put", "d/f\(i)", size: i, time: "2030-01-01T00:00:00Z")))
        }
        let listener = NotificationListener(fs: fs, queue: q, queueName: "mem", bucket: "bkt", waitSeconds: 1, receivers: 8, checkInterval: 0)
        listener.start()
        defer { listener.stop() }
        let deadline = monotonicSeconds() + 30
        while listener.stats.applied < 2000 && monotonicSeconds() < deadline { usleep(10_000) }
        let s = listener.stats
        XCTAssertEqual(s.applied, 2000)
        XCTAssertEqual(s.receivers, 8)
        XCTAssertEqual(Set(q.deleted).count, 2000, "each message deleted once")
        XCTAssertEqual(names(fs, d.ino).count, 2001)
        XCTAssertEqual(lookup(fs, d.ino, "f1999")?.size, 1999)
        XCTAssertEqual(store.lists, lists, "no listing: the burst came as events: \(store.listed)")
        // The queue's backlog was asked during the burst, and once after it.
        let until = monotonicSeconds() + 5
        while listener.stats.backlog != 0 && monotonicSeconds() < until { usleep(50_000) }
        XCTAssertEqual(listener.stats.backlog, 0)
    }

    func testProbesComeBackAndAProbeOfAnotherMountIsAGap() {
        let (fs, _, _) = make(["d/a"])
        let q = MemoryQueue()
        let listener = NotificationListener(fs: fs, queue: q, queueName: "mem", bucket: "bkt", waitSeconds: 1, receivers: 2, checkInterval: 1)
        fs.setNotificationsHealthy(false)
        let (_, log) = capturingLog {
            listener.start()
            let deadline = monotonicSeconds() + 20
            while listener.stats.probesBack < 2 && monotonicSeconds() < deadline { usleep(20_000) }
            XCTAssertGreaterThanOrEqual(listener.stats.probesBack, 2, "the mount's probes come back to it")
            XCTAssertEqual(fs.currentMetadataTTL, .infinity, "every event arrives: the long TTL")
            // Another mount reads the same queue: its probe arrives here.
            q.push(S3EventParser.probe(mount: "0123456789abcdef", sequence: 1))
            while listener.stats.gaps < 1 && monotonicSeconds() < deadline { usleep(20_000) }
            listener.stop()
        }
        let s = listener.stats
        XCTAssertEqual(s.foreignProbes, 1)
        XCTAssertEqual(s.gaps, 1)
        XCTAssertEqual(fs.currentMetadataTTL, 60, "a gap: the short TTL")
        XCTAssertTrue(log.contains("a probe of another mount arrived"), log)
        XCTAssertEqual(log.components(separatedBy: "another reader takes events").count, 2, "said once: \(log)")
    }

    func testLostProbesAndTheirRecovery() {
        // Pure: the watch decides, with time as an argument.
        var w = EventWatch(probeTimeout: 10, quiet: 30)
        let p1 = w.probeSent(at: 0)
        XCTAssertNil(w.probeReceived(sequence: p1, mine: true, at: 1))
        _ = w.probeSent(at: 2)
        XCTAssertNil(w.checkProbes(at: 11))
        XCTAssertNil(w.checkProbes(at: 13), "the queue was not read to its end since: the probe may be behind a backlog")
        w.caughtUp(at: 6)
        XCTAssertNil(w.checkProbes(at: 13), "read to its end too soon after the probe")
        w.caughtUp(at: 8)
        XCTAssertEqual(w.checkProbes(at: 13), .probesLost(1))
        XCTAssertTrue(w.note(.probesLost(1), at: 13), "the first gap is said")
        XCTAssertTrue(w.needsRevalidation(at: 13))
        w.revalidationBegins(at: 13)
        XCTAssertFalse(w.needsRevalidation(at: 13.5))
        w.revalidationEnded()
        XCTAssertFalse(w.note(.sharedQueue, at: 14), "later ones while it lasts are not said")
        XCTAssertFalse(w.needsRevalidation(at: 20), "at most every `quiet` seconds")
        // Quiet for 30 s after the last gap, but the revalidation began before it: not yet.
        XCTAssertFalse(w.recover(at: 50))
        XCTAssertTrue(w.needsRevalidation(at: 50))
        w.revalidationBegins(at: 50)
        w.revalidationEnded()
        XCTAssertFalse(w.recover(at: 51), "no probe came back since the gap")
        let p3 = w.probeSent(at: 51)
        XCTAssertNil(w.probeReceived(sequence: p3, mine: true, at: 52))
        XCTAssertTrue(w.recover(at: 52))
        XCTAssertNil(w.gap)
        // Without probes (a source that cannot take them), the quiet time and a revalidation do.
        var v = EventWatch(probeTimeout: 10, quiet: 30)
        v.probeUnsent(v.probeSent(at: 0))
        XCTAssertFalse(v.probing)
        XCTAssertTrue(v.note(.ownChangesLost(3), at: 5))
        v.revalidationBegins(at: 6)
        v.revalidationEnded()
        XCTAssertFalse(v.recover(at: 20))
        XCTAssertTrue(v.recover(at: 36))
    }

    func testRevalidationFindsWhatNoEventTold() {
        let (fs, store, seen) = make(["d/a", "d/b", "d/sub/x"])
        let d = lookup(fs, 1, "d")!
        XCTAssertEqual(names(fs, d.ino), ["a", "b", "sub"])
        // Changed behind the mount, with no event: a rewritten, b gone, c new, sub gone, e/ new.
        store.put("d/a", "changed")
        store.remove("d/b")
        store.put("d/c")
        store.remove("d/sub/x")
        store.put("d/e/y")
        XCTAssertEqual(names(fs, d.ino), ["a", "b", "sub"], "still trusted")
        seen.withLock { $0 = [] }
        let r = fs.revalidateListings(bucket: "bkt", limit: 100)
        XCTAssertEqual(r.directories, 2, "/ and d/")
        XCTAssertGreaterThanOrEqual(r.changes, 4)
        XCTAssertEqual(lookup(fs, d.ino, "a")?.size, 7)
        XCTAssertEqual(names(fs, d.ino), ["a", "c", "e"], "listed again: the directories changed too")
        XCTAssertTrue(seen.withLock { $0 }.contains { if case .entry(d.ino, b("b")) = $0 { return true }; return false }, "the kernel is told")
        // Nothing changed: nothing found, and one listing a directory.
        let lists = store.lists
        let again = fs.revalidateListings(bucket: "bkt", limit: 100)
        XCTAssertEqual(again.changes, 0)
        XCTAssertEqual(store.lists - lists, again.directories)
    }

    func testOwnChangesThatDoNotComeBackAreLostOnlyOnceTheirKindCameBack() {
        let own = OwnChanges()
        own.note(b("a"), .created("e1"))
        own.note(b("gone"), .removed)
        let later = monotonicSeconds() + 100
        XCTAssertEqual(own.takeOverdue(after: 90, at: later), 0, "nothing came back yet: perhaps no event is configured at all")
        own.note(b("b"), .created("e2"))
        XCTAssertTrue(own.consume(event("b", .created(size: 1, etag: "e2"))))
        XCTAssertEqual(own.takeOverdue(after: 90, at: monotonicSeconds() + 1), 0, "not late yet")
        XCTAssertEqual(own.takeOverdue(after: 90, at: later), 1, "the creation of a; removals never came back, so the removal does not count")
        XCTAssertEqual(own.takeOverdue(after: 90, at: later), 0, "counted once")
        XCTAssertFalse(own.consume(event("a", .created(size: 1, etag: "e1"))), "forgotten")
    }
}
