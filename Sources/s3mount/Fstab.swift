import ArgumentParser
import FoundationEssentials
import MountOptions

/// The fstab form, `s3mount BUCKET MOUNTPOINT -o ro,allow_other,endpoint_url=URL` (what mount(8)
/// runs for fstab's type fuse.s3mount), translated into the options S3MountCommand declares:
/// `--read-only --allow-other --endpoint-url=URL`. Each option's fstab name is its long name
/// without the dashes, with `_` or `-` between words; a few have other names too (`aliases`), and
/// mount(8)'s generic options are accepted and ignored. Which names exist and which take a value
/// is read from the declarations themselves (the parser's own description of the command), so an
/// option added to S3MountCommand has its fstab form at once.
enum Fstab {
    /// fstab names that are not an option's long name, and generic mount options (MountOptions/FstabSyntax.swift).
    static var aliases: [(name: String, option: String)] { FstabSyntax.aliases }
    static var ignored: [String] { FstabSyntax.ignored }
    static var negations: [String: String] { FstabSyntax.negations }

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

    /// The command line with every `-o OPTS` (and `-oOPTS`) replaced by the options it stands for,
    /// and the fstab name of each long option last set there (FstabSyntax.translate).
    static func translate(_ argv: [String]) throws -> (args: [String], origin: [String: String]) {
        do { return try FstabSyntax.translate(argv, options: options) } catch { throw UsageError(error.description) }
    }

    /// "ro,uid=1000,_netdev" -> [("read-only", nil), ("uid", "1000")].
    static func expand(_ s: String) throws -> [(option: String, value: String?)] {
        do { return try FstabSyntax.expand(s, options: options) } catch { throw UsageError(error.description) }
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
