import XCTest

extension XCTestCase {
    /// A string's UTF-8 bytes: keys, prefixes and names in the core are bytes.
    func b(_ s: String) -> [UInt8] { Array(s.utf8) }
}
