import Foundation
import XCTest
@testable import S3

final class CredentialsTests: XCTestCase {
    let transport = CurlTransport()

    func tempFile(_ text: String) -> String {
        let p = NSTemporaryDirectory() + "/s3mount-cred-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: p, contents: Data(text.utf8))
        addTeardownBlock { unlink(p) }
        return p
    }

    /// Environment that points every file source at nothing and disables IMDS.
    func isolated(_ extra: [String: String] = [:]) -> [String: String] {
        var env = ["HOME": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/c", "AWS_CONFIG_FILE": "/nonexistent/f",
                   "AWS_EC2_METADATA_DISABLED": "true"]
        env.merge(extra) { _, b in b }
        return env
    }

    func testEnvironment() throws {
        let p = try CredentialsChain.resolve(.init(), env: isolated(["AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"]), transport: transport)
        let c = try p.credentials()!
        XCTAssertEqual(c.accessKeyId, "AKIAENV")
        XCTAssertEqual(c.sessionToken, "t")
        XCTAssertEqual(c.source, "environment")
    }

    func testProfilesFromCredentialsAndConfigFiles() throws {
        let credsFile = tempFile("[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\n[dev]\naws_access_key_id=AKIADEV\naws_secret_access_key=x\naws_session_token = tok\n")
        let configFile = tempFile("[profile cfgonly]\naws_access_key_id = AKIACFG\naws_secret_access_key = c\nregion = eu-west-1\n")
        let base = isolated(["AWS_SHARED_CREDENTIALS_FILE": credsFile, "AWS_CONFIG_FILE": configFile])
        XCTAssertEqual(try CredentialsChain.resolve(.init(), env: base, transport: transport).credentials()?.accessKeyId, "AKIADEFAULT")
        XCTAssertEqual(try CredentialsChain.resolve(.init(profile: "dev"), env: base, transport: transport).credentials()?.sessionToken, "tok")
        var env = base
        env["AWS_PROFILE"] = "cfgonly"
        XCTAssertEqual(try CredentialsChain.resolve(.init(), env: env, transport: transport).credentials()?.accessKeyId, "AKIACFG")
        XCTAssertEqual(AWSConfigFile.profile("cfgonly", env: env)?["region"], "eu-west-1")
        XCTAssertThrowsError(try CredentialsChain.resolve(.init(profile: "missing"), env: base, transport: transport)) { e in
            XCTAssertTrue("\(e)".contains("profile 'missing' not found"))
        }
    }

    func testNothingFound() {
        XCTAssertThrowsError(try CredentialsChain.resolve(.init(), env: isolated(), transport: transport)) { e in
            XCTAssertTrue("\(e)".contains("no credentials found"))
        }
        XCTAssertTrue(try CredentialsChain.resolve(.init(noSignRequest: true), env: isolated(), transport: transport).isAnonymous)
    }

    func testWebIdentityThroughSTS() throws {
        guard let moto = Helper.moto() else { throw XCTSkip("!!! moto_server could not start") }
        defer { moto.stop() }
        let token = tempFile("eyJhbGciOiJSUzI1NiJ9.fake.jwt\n")
        let env = isolated(["AWS_WEB_IDENTITY_TOKEN_FILE": token, "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/s3mount",
                            "AWS_ENDPOINT_URL": moto.endpoint])
        let p = try CredentialsChain.resolve(.init(), env: env, transport: transport)
        let c = try p.credentials()!
        XCTAssertEqual(c.source, "web identity")
        XCTAssertTrue(c.accessKeyId.hasPrefix("ASIA"))
        XCTAssertNotNil(c.sessionToken)
        XCTAssertNotNil(c.expiration)
    }

    func testContainerAndIMDSv2() throws {
        guard let fake = Helper.fakeMetadata(containerAuth: "secret-auth") else { throw XCTSkip("!!! fake metadata server could not start") }
        defer { fake.stop() }
        let container = try CredentialsChain.resolve(.init(), env: isolated([
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": fake.endpoint + "/container/creds", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "secret-auth"]),
            transport: transport)
        let cc = try container.credentials()!
        XCTAssertTrue(cc.accessKeyId.hasPrefix("ASIAECS"))
        XCTAssertEqual(cc.sessionToken, "ASIAECS-session-token")
        XCTAssertNotNil(cc.expiration)

        var env = isolated(["AWS_EC2_METADATA_SERVICE_ENDPOINT": fake.endpoint])
        env["AWS_EC2_METADATA_DISABLED"] = nil
        let imds = try CredentialsChain.resolve(.init(), env: env, transport: transport)
        let ic = try imds.credentials()!
        XCTAssertTrue(ic.accessKeyId.hasPrefix("ASIAIMDS"))
        XCTAssertEqual(ic.source, "EC2 instance metadata")
        let served = fake.served()
        XCTAssertTrue(served.contains("PUT /latest/api/token"), "IMDSv2 asks for a session token first: \(served)")
    }

    final class CountingSource: CredentialsSource, @unchecked Sendable {
        let lock = NSLock()
        var fetches = 0
        let lifetime: Double
        let delay: useconds_t
        var name: String { "counting" }
        init(lifetime: Double, delay: useconds_t) { self.lifetime = lifetime; self.delay = delay }
        func fetch() throws -> Credentials {
            usleep(delay)
            lock.lock(); fetches += 1; let n = fetches; lock.unlock()
            return Credentials(accessKeyId: "AKIA\(n)", secretAccessKey: "s", sessionToken: "t", expiration: Double(time(nil)) + lifetime, source: "counting")
        }
    }

    func testRefreshBeforeExpiryDoesNotBlockRequests() throws {
        // Credentials valid for 60 s, refreshed when fewer than 120 s remain: every call is "due".
        let src = CountingSource(lifetime: 60, delay: 300_000)
        let p = CredentialsProvider(source: src, refreshWindow: 120)
        XCTAssertEqual(try p.credentials()?.accessKeyId, "AKIA1")
        let t0 = monotonicSeconds()
        XCTAssertEqual(try p.credentials()?.accessKeyId, "AKIA1", "still-valid credentials are used while the refresh runs")
        XCTAssertLessThan(monotonicSeconds() - t0, 0.2, "the refresh ran in the background")
        usleep(600_000)
        XCTAssertEqual(try p.credentials()?.accessKeyId, "AKIA2")
    }
}
