import CBuildInfo

/// The release version (the Debian package's too: scripts/package.sh reads it from
/// `s3mount --version`) and the commit recorded at build time.
enum Version {
    static let number = "0.1.0"

    static var commit: String? {
        let c = String(cString: s3m_build_commit())
        return c.isEmpty ? nil : c
    }

    /// "s3mount 0.1.0 (commit 0123456789ab)", or a plain `swift build`'s "(development build, commit not recorded)".
    static var line: String {
        "s3mount \(number) (" + (commit.map { "commit \($0)" } ?? "development build, commit not recorded") + ")"
    }
}
