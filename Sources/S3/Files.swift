import Glibc

/// The whole text of a (small) file: a credentials or config file, a token; nil when it cannot
/// be opened, is no regular file (a FIFO would block the caller for good) or is larger than
/// `maxBytes` (a sparse file of a terabyte would be read into memory).
public func readTextFile(_ path: String, maxBytes: Int = 1 << 20) -> String? {
    let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return readRegularFile(fd, maxBytes: maxBytes).map { String(decoding: $0, as: UTF8.self) }
}

/// The bytes of the open regular file `fd`, from its start; nil for anything else, or when it
/// holds more than `maxBytes`.
public func readRegularFile(_ fd: Int32, maxBytes: Int) -> [UInt8]? {
    var st = stat()
    guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size <= maxBytes else { return nil }
    var out = [UInt8](repeating: 0, count: Int(st.st_size) + 1)
    var total = 0
    // Past the size fstat gave (the file may grow meanwhile): one byte more tells it is too large.
    while total < out.count {
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + total, $0.count - total, off_t(total)) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        total += n
    }
    guard total <= maxBytes else { return nil }
    return Array(out[..<min(total, Int(st.st_size))])
}

/// Up to `count` bytes of `fd` from `offset`, fewer only at the end of the file; nil on an error
/// (errno says which).
public func preadFully(_ fd: Int32, count: Int, at offset: Int64) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: max(0, count))
    var done = 0
    while done < out.count {
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(offset) + off_t(done)) }
        if n < 0 && errno == EINTR { continue }
        if n < 0 { return nil }
        if n == 0 { break }
        done += n
    }
    out.removeSubrange(done...)
    return out
}

/// Files in folders that other parts of the host may reach: opened without following a link at
/// the last step and without blocking (a FIFO planted there opens at once, and is then refused),
/// and kept only when they are regular files that this process's user owns.
public enum OwnedFile {
    /// `O_TRUNC` in `flags` takes effect after the checks (root could otherwise truncate another
    /// user's file before seeing whose it is).
    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o600) -> Int32? {
        let fd = Glibc.open(path, (flags & ~O_TRUNC) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode)
        guard fd >= 0 else { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid() else {
            close(fd)
            errno = EPERM
            return nil
        }
        // Back to blocking I/O for a regular file (it never blocks, but flock and friends expect it).
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        if flags & O_TRUNC != 0 && ftruncate(fd, 0) != 0 {
            close(fd)
            return nil
        }
        return fd
    }
}

/// Folders the daemon keeps its files in (the spool, the data cache): they hold other users' data
/// and steer what the daemon reads back, so nobody but this user (and root) may own or write them.
public enum PrivateFolder {
    /// Why `path` is no safe folder for `what`, or nil when it is: it must be a directory (not a
    /// link to one), owned by this user or root, writable by no group and no other user.
    public static func problem(_ path: String, what: String) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return "\(what) \(path) does not exist" }
        if st.st_mode & S_IFMT == S_IFLNK { return "\(what) \(path) is a symbolic link: give the folder it points to" }
        guard st.st_mode & S_IFMT == S_IFDIR else { return "\(what) \(path) is not a directory" }
        let me = geteuid()
        if st.st_uid != me && st.st_uid != 0 {
            return "\(what) \(path) belongs to uid \(st.st_uid), not to this user (uid \(me)): use a folder of your own"
        }
        if st.st_mode & 0o022 != 0 {
            return "\(what) \(path) can be written by other users (mode \(String(st.st_mode & 0o7777, radix: 8))): use a folder only you can write (chmod 700)"
        }
        return nil
    }

    /// Makes `path` (mode 0700) if it is missing, or checks the one there: this user's own, a real
    /// directory, and then made private (0700) if it was not. Returns why it cannot be used, or nil.
    public static func make(_ path: String, what: String) -> String? {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            return "\(what) \(path) cannot be created: \(String(cString: strerror(errno)))"
        }
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            return errno == ELOOP || errno == ENOTDIR ? "\(what) \(path) is not a directory of its own (a link or a file is there)"
                                                       : "\(what) \(path) cannot be opened: \(String(cString: strerror(errno)))"
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return "\(what) \(path) cannot be read" }
        guard st.st_uid == geteuid() else {
            return "\(what) \(path) belongs to uid \(st.st_uid), not to this user (uid \(geteuid())): remove it, or give another folder"
        }
        if st.st_mode & 0o077 != 0 { _ = fchmod(fd, 0o700) }
        return nil
    }
}

/// The bytes that hex digits (either case) stand for; nil for an odd count or a non-digit.
public func bytesOfHex<S: StringProtocol>(_ hex: S) -> [UInt8]? {
    let digits = Array(hex.utf8)
    guard digits.count % 2 == 0 else { return nil }
    var out = [UInt8]()
    out.reserveCapacity(digits.count / 2)
    func value(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
    var i = 0
    while i < digits.count {
        // Digits only: UInt8("+f", radix: 16) would read a sign.
        guard let h = value(digits[i]), let l = value(digits[i + 1]) else { return nil }
        out.append(h << 4 | l)
        i += 2
    }
    return out
}
