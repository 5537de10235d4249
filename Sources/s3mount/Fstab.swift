import ArgumentParser
import FoundationEssentials

/// The fstab form, `s3mount BUCKET MOUNTPOINT -o ro,allow_other,endpoint_url=URL` (what mount(8)
/// runs for fstab's type fuse.s3mount), translated into the options S3MountCommand declares:
/// `--read-only --allow-other --endpoint-url=URL`. Each option's fstab name is its long name
/// without the dashes, with `_` or `-` between words; a few have other names too (`aliases`), and
/// mount(8)'s generic options are accepted and ignored. Which names exist and which take a value
/// is read from the declarations themselves (the parser's own description of the command), so an
/// option added to S3MountCommand has its fstab form at once.
enum Fstab {
    /// fstab names (with `-` for `_`) that are not an option's long name.
    static let aliases: [(name: String, option: String)] = [
        ("ro", "read-only"), ("endpoint", "endpoint-url"), ("url", "endpoint-url"),
        ("use-path-request-style", "force-path-style"), ("path-style", "force-path-style"),
        ("public-bucket", "no-sign-request"), ("noexec", "no-exec"),
    ]

    /// mount(8)'s words for the defaults: each cancels the option written before it
    /// (`suid,nosuid` is nosuid, as mount reads it).
    static let negations: [String: String] = ["nosuid": "suid", "nodev": "dev", "exec": "no-exec"]

    /// Generic mount options that mean nothing to s3mount; so do `x-*` (x-systemd.automount, ...)
    /// and `comment=...`.
    static let ignored: [String] = ["_netdev", "nofail", "auto", "noauto", "user", "users", "nouser", "owner", "defaults",
                                    "atime", "noatime", "relatime",
                                    "nodiratime", "sync", "async", "rw", "default_permissions", "nonempty"]

    /// The long options of S3MountCommand that have an fstab form: name -> takes a value.
    /// (Not --help, --version, nor -o itself.)
    static let options: [String: Bool] = {
        struct Dump: Decodable { var command: Command }
        struct Command: Decodable { var arguments: [Argument]? }
        struct Argument: Decodable { var kind: String; var names: [Name]? }
        struct Name: Decodable { var kind: String; var name: String }
        guard let dump = try? JSONDecoder().decode(Dump.self, from: Data(S3MountCommand._dumpHelp().utf8)) else {
            fatalError("s3mount: cannot read the command line's declarations (the argument parser's dump changed?)")
        }
        var options: [String: Bool] = [:]
        for a in dump.command.arguments ?? [] where a.kind == "option" || a.kind == "flag" {
            for n in a.names ?? [] where n.kind == "long" && n.name != "help" && n.name != "version" {
                options[n.name] = a.kind == "option"
            }
        }
        return options
    }()

    /// The -o option's help: the names that are not simply the long option's, and what is ignored.
    /// (scripts/gen-cli-files.py reads the aliases from this sentence for the man page.)
    static var help: String {
        let byOption = Dictionary(grouping: aliases, by: \.option)
        let names = byOption.keys.sorted().map { option in
            byOption[option]!.map { $0.name.replacingDashes() }.joined(separator: " and ") + " for --" + option
        }
        return "Each option's fstab form is its name without the dashes, with _ between words, and =VALUE for a value; also "
            + names.joined(separator: ", ") + "; "
            + negations.keys.sorted().joined(separator: ", ") + " cancel what was written before them. "
            + "Generic mount options (" + ignored.joined(separator: ", ") + ", x-*, comment=...) are ignored; an unknown option is an error."
    }

    /// The command line with every `-o OPTS` (and `-oOPTS`) replaced by the options it stands for.
    /// `origin` maps a long option whose last occurrence came from the fstab form to its fstab name
    /// (`file_mode`), so that a bad value there is reported by that name.
    static func translate(_ argv: [String]) throws -> (args: [String], origin: [String: String]) {
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
                    guard i < argv.count else { throw UsageError("option -o needs a value") }
                    opts = argv[i]
                }
                for (option, value) in try expand(opts) {
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
    static func expand(_ s: String) throws -> [(option: String, value: String?)] {
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
            guard let takesValue = options[option] else { throw UsageError("unknown mount option \"\(written)\"") }
            if takesValue {
                guard parts.count > 1, !parts[1].isEmpty else { throw UsageError("option \(written) needs a value (\(written)=...)") }
                result.append((option, parts[1]))
            } else {
                result.append((option, nil))  // a flag: a value, if any, is ignored
            }
        }
        return result
    }

    /// Completions of the word after -o: the comma-separated list so far, and the next option.
    static func complete(_ prefix: String) -> [String] {
        var head = "", item = prefix
        if let comma = prefix.lastIndex(of: ",") {
            head = String(prefix[...comma])
            item = String(prefix[prefix.index(after: comma)...])
        }
        // The long names (ro for read_only), and the generic options fstab lines use most.
        var names = options.map { $0.key == "read-only" ? "ro" : $0.key.replacingDashes() + ($0.value ? "=" : "") }
        names += ["_netdev", "nofail", "noauto", "x-systemd.automount"]
        return names.filter { $0.hasPrefix(item) }.sorted().map { head + $0 }
    }
}

extension String {
    func replacingUnderscores() -> String { String(map { $0 == "_" ? "-" : $0 }) }
    func replacingDashes() -> String { String(map { $0 == "-" ? "_" : $0 }) }
}
