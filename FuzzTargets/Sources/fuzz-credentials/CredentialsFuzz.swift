import FuzzSupport
@testable import S3

/// ~/.aws/credentials and ~/.aws/config (INI), and the JSON the container-credentials endpoint and
/// EC2 instance metadata answer (through the real sources, with a transport that answers the input).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCredentials(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    _ = quietLogs
    let b = input(data, size)
    let sections = AWSConfigFile.parse(String(decoding: b, as: UTF8.self))
    for (_, s) in sections { _ = s["aws_access_key_id"] }
    _ = MiniJSON.parseObject(b)
    _ = try? CredentialsJSON.parse(b, source: "fuzz")
    let transport = CannedTransport(body: b)
    _ = try? ContainerCredentialsSource(url: "http://169.254.170.2/creds", authorization: "x", transport: transport).fetch()
    _ = try? IMDSCredentialsSource(endpoint: "http://169.254.169.254", transport: transport).fetch()
    return 0
}
