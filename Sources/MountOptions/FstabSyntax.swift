/// The syntax of the fstab form `-o ro,allow_other,endpoint_url=URL`: splitting the option string
/// and translating each name into the long option it stands for. Pure (no argument parser, no
/// I/O), so that the fuzz target in FuzzTargets/ can reach it; the s3mount CLI (Fstab.swift) supplies the
/// table of options its command declares and turns `FstabSyntax.Problem` into its usage error.
public enum FstabSyntax {
    /// A mistake in the option string, worded for the user.
    public struct Problem: Error, CustomStringConvertible, Equatable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// fstab names (with `-` for `_`) that are not an option's long name.
    public static let aliases: [(name: String, option: String)] = [
        ("ro", "read-only"), ("endpoint", "endpoint-url"), ("url", "endpoint-url"),
        ("use-path-request-style", "force-path-style"), ("path-style", "force-path-style"),
        ("public-bucket", "no-sign-request"), ("noexec", "no-exec"),
    ]

    /// mount(8)'s words for the defaults: each cancels the option written before it
    /// (`suid,nosuid` is nosuid, as mount reads it).
    public static let negations: [String: String] = ["nosuid": "suid", "nodev": "dev", "exec": "no-exec"]

    /// Generic mount options that mean nothing to s3mount; so do `x-*` (x-systemd.automount, ...)
    /// and `comment=...`.
    public static let ignored: [String] = ["_netdev", "nofail", "auto", "noauto", "user", "users", "nouser", "owner", "defaults",
                                           "atime", "noatime", "relatime",
                                           "nodiratime", "sync", "async", "rw", "default_permissions", "nonempty"]

    /// The command line with every `-o OPTS` (and `-oOPTS`) replaced by the options it stands for.
    /// `options`: the long options that have an fstab form -> whether each takes a value.
    /// `origin` maps a long option whose last occurrence came from the fstab form to its fstab name
    /// (`file_mode`), so that a bad value there is reported by that name.
    public static func translate(_ argv: [String], options: [String: Bool]) throws(Problem) -> (args: [String], origin: [String: String]) {
        var out: [String] = []
        var origin: [String: String] = [:]
        var i = 0
        while i < argv.count {
            let a = argv[i]
            if a == "--" { out += argv[i...]; break }
            if a == "-o" || (a.hasPrefix("-o") && a.count > 2) {
                var opts = String(a.dropFirst(2))
                if a == "-o" {
                    i += 1
                    guard i < argv.count else { throw Problem("option -o needs a value") }
                    opts = argv[i]
                }
                for (option, value) in try expand(opts, options: options) {
                    out.append(value.map { "--\(option)=\($0)" } ?? "--\(option)")
                    origin[option] = option.replacingDashes()
                }
            } else if a.hasPrefix("--") {
                out.append(a)
                let name = String(a.dropFirst(2).prefix { $0 != "=" })
                origin[name] = nil
                // A value given as the next argument is copied as it is, even if it reads "-o".
                if !a.contains("="), options[name] == true, i + 1 < argv.count {
                    i += 1
                    out.append(argv[i])
                }
            } else {
                out.append(a)
            }
            i += 1
        }
        return (out, origin)
    }

    /// "ro,uid=1000,_netdev" -> [("read-only", nil), ("uid", "1000")].
    public static func expand(_ s: String, options: [String: Bool]) throws(Problem) -> [(option: String, value: String?)] {
        var result: [(String, String?)] = []
        for opt in s.split(separator: ",").map(String.init) where !opt.isEmpty {
            let parts = opt.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let written = parts[0]
            if let cancelled = negations[written] {
                result.removeAll { $0.0 == cancelled }
                continue
            }
            if ignored.contains(written) || written.hasPrefix("x-") || written == "comment" { continue }
            let key = written.replacingUnderscores()
            let option = aliases.first { $0.name == key }?.option ?? key
            guard let takesValue = options[option] else { throw Problem("unknown mount option \"\(written)\"") }
            if takesValue {
                guard parts.count > 1, !parts[1].isEmpty else { throw Problem("option \(written) needs a value (\(written)=...)") }
                result.append((option, parts[1]))
            } else {
                result.append((option, nil))  // a flag: a value, if any, is ignored
            }
        }
        return result
    }
}

extension String {
    public func replacingUnderscores() -> String { String(map { $0 == "_" ? "-" : $0 }) }
    public func replacingDashes() -> String { String(map { $0 == "-" ? "_" : $0 }) }
}
