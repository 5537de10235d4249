/// S3's storage classes, as far as reading an object depends on them.
public enum StorageClass {
    /// Classes whose objects cannot be read until restored (GetObject answers 403 InvalidObjectState).
    public static let archived: Set<String> = ["GLACIER", "DEEP_ARCHIVE"]
    /// The classes `--storage-class` accepts (S3's list; a store may support fewer).
    public static let known: [String] = ["STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                                         "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "OUTPOSTS", "SNOW", "EXPRESS_ONEZONE"]
    public static func isArchived(_ name: String?) -> Bool { name.map(archived.contains) ?? false }
}

/// What RestoreObject answered.
public enum RestoreStarted: Sendable, Equatable { case started, alreadyInProgress, alreadyRestored }

/// The `x-amz-restore` header of an archived object: `ongoing-request="true"` while a restore
/// runs, `ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"` once its
/// temporary copy can be read. Absent: never restored (or the copy expired).
public enum RestoreStatus: Sendable, Equatable {
    case none
    case ongoing
    /// A readable copy, until `expiry` (seconds since 1970; nil when the header gave no date
    /// this parser can read).
    case restored(expiry: Double?)

    /// Outside bytes: anything this does not recognise is `.none` (the object is then treated as
    /// not restored: a refused open, never a GET storm).
    public static func parse(_ header: String) -> RestoreStatus {
        var fields: [String: String] = [:]
        var rest = Substring(header)
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "," || $0 == "\t" }
            guard let eq = rest.firstIndex(of: "=") else { break }
            let name = rest[..<eq].trimmingSpaces().lowercased()
            rest = rest[rest.index(after: eq)...]
            var value: Substring
            if rest.first == "\"" {
                let body = rest.dropFirst()
                guard let close = body.firstIndex(of: "\"") else { return .none }
                value = body[..<close]
                rest = body[body.index(after: close)...]
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = rest[..<end]
                rest = rest[end...]
            }
            if fields[name] == nil { fields[name] = String(value) }
        }
        switch fields["ongoing-request"] {
        case "true": return .ongoing
        case "false": return .restored(expiry: fields["expiry-date"].flatMap(AmzDate.parseHTTPDate))
        default: return .none
        }
    }
}

