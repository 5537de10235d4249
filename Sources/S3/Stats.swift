
/// Counters of every S3 request by operation and outcome, and bytes moved, since start.
public final class RequestStats: Sendable {
    public struct Snapshot: Sendable {
        /// operation -> outcome ("ok", "404", "4xx", "5xx", "error") -> count
        public var requests: [String: [String: Int]]
        public var bytesDown: Int64
        public var bytesUp: Int64
        public var retries: Int

        public func count(_ op: String) -> Int { requests[op]?.values.reduce(0, +) ?? 0 }
        public var total: Int { requests.values.reduce(0) { $0 + $1.values.reduce(0, +) } }
        public var notFound: Int { requests.values.reduce(0) { $0 + ($1["404"] ?? 0) } }
    }

    private let state = Locked(Snapshot(requests: [:], bytesDown: 0, bytesUp: 0, retries: 0))
    public init() {}

    public func record(operation: String, status: Int, bytesDown: Int64, bytesUp: Int64) {
        let outcome: String
        switch status {
        case 200..<400: outcome = "ok"
        case 404: outcome = "404"
        case 400..<500: outcome = "4xx"
        case 500...: outcome = "5xx"
        default: outcome = "error"
        }
        state.withLock { s in
            s.requests[operation, default: [:]][outcome, default: 0] += 1
            s.bytesDown += bytesDown
            s.bytesUp += bytesUp
        }
    }

    public func recordRetry() { state.withLock { $0.retries += 1 } }
    public func snapshot() -> Snapshot { state.withLock { $0 } }
}
