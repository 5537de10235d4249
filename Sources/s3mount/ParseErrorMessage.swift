import ArgumentParser

/// The argument parser's messages for what it finds wrong, in the words s3mount has always used
/// ("unknown option --x", "option --region needs a value", ...); any other passes as it is.
enum ParseErrorMessage {
    static func describe(_ error: Error) -> String {
        let m = S3MountCommand.message(for: error)
        if let rest = m.after("Unknown option '") {
            let option = rest.prefix { $0 != "'" }
            if let suggestion = rest.after("Did you mean '") {
                return "unknown option \(option) (did you mean \(suggestion.prefix { $0 != "'" })?)"
            }
            return "unknown option \(option)"
        }
        if let rest = m.after("Missing value for '") {
            return "option \(rest.prefix { $0 != " " && $0 != "'" }) needs a value"
        }
        if m.hasPrefix("Missing expected argument") {
            return "expected BUCKET[:PREFIX] and MOUNTPOINT"
        }
        if let rest = m.after("Unexpected argument '") ?? m.after("unexpected arguments: '") {
            return "unexpected argument \(rest.prefix { $0 != "'" })"
        }
        guard let first = m.first else { return "\(error)" }
        return first.lowercased() + m.dropFirst()
    }
}

extension StringProtocol {
    /// The text after the first occurrence of `marker`.
    func after(_ marker: String) -> SubSequence? {
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(marker) { return self[index(i, offsetBy: marker.count)...] }
            i = index(after: i)
        }
        return nil
    }
}
