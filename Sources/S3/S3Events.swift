import Foundation

/// One S3 event record, as S3 sends it to SQS (directly or through SNS), or Ceph RGW and MinIO
/// to AMQP: which object changed, how, and when.
public struct ObjectEvent: Sendable, Equatable {
    public enum Change: Sendable, Equatable {
        /// Put, Post, Copy, CompleteMultipartUpload, a restore or replication: the object now is
        /// this size with this ETag.
        case created(size: Int64, etag: String)
        /// Deleted, or hidden by a delete marker, or expired.
        case removed
    }

    public var bucket: String
    /// The key, decoded (S3 sends it form-URL-encoded: "+" for a space).
    public var key: [UInt8]
    public var change: Change
    /// e.g. "ObjectCreated:Put".
    public var name: String
    /// When S3 finished the request (epoch seconds).
    public var time: Double
    /// S3's per-key order (hex); moto sends none.
    public var sequencer: String?

    public init(bucket: String, key: [UInt8], change: Change, name: String, time: Double, sequencer: String? = nil) {
        self.bucket = bucket
        self.key = key
        self.change = change
        self.name = name
        self.time = time
        self.sequencer = sequencer
    }

    /// An ETag as S3's listings and headers give it (quoted); events send it bare.
    public static func quotedETag(_ e: String) -> String {
        if e.isEmpty || e.hasPrefix("\"") { return e }
        return "\"" + e + "\""
    }

    /// S3's sequencers are hex numbers of 16 to 20 digits. More than 32, or anything but hex,
    /// would let one forged event outrank every real one for its key.
    public static func isSequencer(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 32 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x46) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    /// Whether `a` comes after `b` in S3's order of events for one key: sequencers are hex
    /// numbers of any length (compared as numbers).
    public static func sequencer(_ a: String, isAfter b: String) -> Bool {
        func digits(_ s: String) -> Substring {
            let t = s.drop { $0 == "0" }
            return Substring(t.uppercased())
        }
        let x = digits(a), y = digits(b)
        if x.count != y.count { return x.count > y.count }
        return x > y
    }
}

/// What one queue message holds.
public enum EventMessage: Sendable, Equatable {
    case events([ObjectEvent])
    /// S3's "s3:TestEvent", sent when a notification configuration is saved.
    case test
    /// Not an S3 event (or not readable as one): logged and deleted.
    case malformed(String)
    /// A probe a mount sent to its queue (`S3EventParser.probe`): it should come back to that mount.
    case probe(mount: String, sequence: Int)
}

public enum S3EventParser {
    /// RGW's sequencer is the hex of its clock's `utime_t` as it lies in memory: seconds, then
    /// nanoseconds, each a little-endian 32-bit number ("854E176B274D8724": 0x6B174E85 s,
    /// 0x24874D27 ns). As a hex number it does not follow time (the first digits are the seconds'
    /// lowest byte): rewritten here as seconds then nanoseconds, big-endian, which does. Any other
    /// form (another Ceph version) gives none: events are then ordered as moto's are.
    static func cephSequencer(_ s: String) -> String? {
        let b = Array(s.utf8)
        guard b.count == 16, ObjectEvent.isSequencer(s) else { return nil }
        func byte(_ i: Int) -> UInt32 { UInt32(UInt8(String(decoding: b[(2 * i)..<(2 * i + 2)], as: UTF8.self), radix: 16)!) }
        let sec = byte(0) | byte(1) << 8 | byte(2) << 16 | byte(3) << 24
        let nsec = byte(4) | byte(5) << 8 | byte(6) << 16 | byte(7) << 24
        guard nsec < 1_000_000_000 else { return nil }
        func hex8(_ v: UInt32) -> String {
            let h = String(v, radix: 16, uppercase: true)
            return String(repeating: "0", count: 8 - h.count) + h
        }
        return hex8(sec) + hex8(nsec)
    }

    /// Reads a message body: S3's `{"Records": [...]}`, or the same inside an SNS envelope (a
    /// subscription without raw message delivery).
    public static func parse(_ body: String) -> EventMessage { parse(body, inEnvelope: false) }

    static let probeField = "s3mountProbe"

    /// The body of a probe mount `mount` sends to its own queue.
    public static func probe(mount: String, sequence: Int) -> String {
        "{\"\(probeField)\": {\"mount\": \"\(mount)\", \"sequence\": \(sequence)}}"
    }

    private static func parse(_ body: String, inEnvelope: Bool) -> EventMessage {
        guard let data = body.data(using: .utf8),
              let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            return .malformed("not a JSON object")
        }
        if json["Type"] as? String == "Notification", let inner = json["Message"] as? String {
            // One envelope, from an SNS topic: an envelope in an envelope is no message SNS sends.
            guard !inEnvelope else { return .malformed("an SNS envelope inside another") }
            guard let topic = json["TopicArn"] as? String, topic.hasPrefix("arn:"), topic.split(separator: ":", omittingEmptySubsequences: false).dropFirst(2).first == "sns" else {
                return .malformed("an SNS envelope without the ARN of an SNS topic")
            }
            return parse(inner, inEnvelope: true)
        }
        if json["Event"] as? String == "s3:TestEvent" { return .test }
        if !inEnvelope, let p = json[probeField] as? [String: Any] {
            guard let mount = p["mount"] as? String, (1...64).contains(mount.utf8.count),
                  let n = p["sequence"] as? NSNumber, let sequence = Int(exactly: n.doubleValue), sequence > 0 else {
                return .malformed("a probe without a mount and a sequence number")
            }
            return .probe(mount: mount, sequence: sequence)
        }
        guard let records = json["Records"] as? [[String: Any]] else { return .malformed("no \"Records\"") }
        var out: [ObjectEvent] = []
        for r in records {
            guard var name = r["eventName"] as? String else { return .malformed("a record without \"eventName\"") }
            // The configuration's form ("s3:ObjectCreated:Put"), as some stores write it in records too.
            if name.hasPrefix("s3:") { name.removeFirst(3) }
            // Ceph RGW (eventSource "ceph:s3") sends the key as it is, not form-encoded as S3 and MinIO do.
            let ceph = r["eventSource"] as? String == "ceph:s3"
            guard let s3 = r["s3"] as? [String: Any], let object = s3["object"] as? [String: Any],
                  let rawKey = object["key"] as? String else { return .malformed("a record without \"s3.object.key\"") }
            guard let key = ceph ? Optional(Array(rawKey.utf8)) : URIEncoding.decodeForm(rawKey) else { return .malformed("an undecodable key \"\(rawKey)\"") }
            let bucket = (s3["bucket"] as? [String: Any])?["name"] as? String ?? ""
            guard let timeText = r["eventTime"] as? String, let time = AmzDate.parseISO8601(timeText) else {
                return .malformed("a record without a readable \"eventTime\"")
            }
            let change: ObjectEvent.Change
            if name.hasPrefix("ObjectRemoved:") || name.hasPrefix("LifecycleExpiration:") {
                change = .removed
            } else if name.hasPrefix("ObjectCreated:") || name.hasPrefix("ObjectRestore:Completed") || name.hasPrefix("Replication:") && name.contains("Completed") {
                // A JSON number past Int64 reads as a double (or a clamped value): checked as text.
                let sizeText = (object["size"] as? NSNumber)?.stringValue ?? (object["size"] as? String)
                guard let size = sizeText.flatMap({ ObjectSize.listed($0) }) else {
                    Log.shared.once(.warning, key: "event-size:" + rawKey, "skipping an event for \"\(rawKey.prefix(200))\": \(name) gives no size an object can have (\(sizeText?.prefix(40) ?? "none"))")
                    continue
                }
                change = .created(size: size, etag: ObjectEvent.quotedETag(object["eTag"] as? String ?? ""))
            } else {
                continue // tagging, ACL, transitions, restores begun: nothing a listing shows changes
            }
            var sequencer = object["sequencer"] as? String
            if ceph { sequencer = sequencer.flatMap(cephSequencer) }
            if let sq = sequencer, !ObjectEvent.isSequencer(sq) {
                Log.shared.once(.warning, key: "event-sequencer:" + rawKey, "skipping an event for \"\(rawKey.prefix(200))\": its sequencer \"\(sq.prefix(40))\" is not one S3 sends")
                continue
            }
            out.append(ObjectEvent(bucket: bucket, key: key, change: change, name: name, time: time, sequencer: sequencer))
        }
        return .events(out)
    }
}
