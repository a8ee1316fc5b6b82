import Ferry
import FerryRedis
import FerryTestSupport
import Foundation
import Testing

/// ops/stunnel/ferry-redis.conf: Ferry through stunnel in client mode to a redis-server that
/// speaks only TLS, as the compose file and the Kubernetes manifests run it.
@Suite("TLS to Redis through the stunnel sidecar")
struct TLSSidecarTests {
    /// A CA and a server certificate for localhost, made with openssl.
    func makeCertificates(in directory: String) async throws {
        let script = """
            set -e
            cd "$1"
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=ferry-test-ca 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.ext 2>/dev/null
            openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.pem -days 1 -subj /CN=another-ca 2>/dev/null
            """
        let result = try await runProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", script, "sh", directory])
        #expect(result.status == 0, "\(result.standardError)")
    }

    /// The shipped stunnel configuration with the addresses and CA of this test.
    func stunnelConfiguration(accept: Int, connect: Int, caFile: String) throws -> String {
        let shipped = try String(contentsOf: repositoryRoot.appending(path: "ops/stunnel/ferry-redis.conf"), encoding: .utf8)
        return shipped.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            switch line.split(separator: "=").first?.trimmingCharacters(in: .whitespaces) {
            case "accept": "accept = 127.0.0.1:\(accept)"
            case "connect": "connect = 127.0.0.1:\(connect)"
            case "CAfile": "CAfile = \(caFile)"
            case "checkHost": "checkHost = localhost"
            default: String(line)
            }
        }.joined(separator: "\n")
    }

    @Test("publish and a worker run through stunnel to a TLS-only redis-server; a wrong CA is refused")
    func throughStunnel() async throws {
        let directory = FileManager.default.temporaryDirectory.appending(path: uniqueName("tls")).path()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await makeCertificates(in: directory)
        let tlsPort = try freeLoopbackPort()
        let redis = try ChildProcess(
            try executable(named: "redis-server"),
            [
                "--port", "0", "--tls-port", "\(tlsPort)", "--bind", "127.0.0.1", "--tls-cert-file", directory + "/server.pem",
                "--tls-key-file", directory + "/server.key", "--tls-ca-cert-file", directory + "/ca.pem", "--tls-auth-clients",
                "no",
                "--save", "", "--dir", directory,
            ], standardOutput: directory + "/redis.log")
        defer { redis.signal(SIGKILL) }

        func startStunnel(caFile: String) throws -> (ChildProcess, Int) {
            let port = try freeLoopbackPort()
            let file = directory + "/stunnel-\(port).conf"
            try stunnelConfiguration(accept: port, connect: tlsPort, caFile: caFile).write(
                toFile: file, atomically: true, encoding: .utf8)
            let process = try ChildProcess(
                try executable(named: "stunnel4"), [file], standardOutput: file + ".log", standardError: file + ".err")
            return (process, port)
        }
        let (stunnel, plainPort) = try startStunnel(caFile: directory + "/ca.pem")
        defer { stunnel.signal(SIGKILL) }
        let url = "redis://127.0.0.1:\(plainPort)"
        let queue = uniqueName("tls")
        #expect(
            await eventually {
                try await runProcess(
                    try ferryExecutable(), ["publish", queue, "--type", "t", "--data", "over tls", "--redis", url]
                )
                .status == 0
            })
        let worker = try ChildProcess(
            try ferryExecutable(), ["worker", queue, "--exec", "cat >> '\(directory)/done'"],
            environment: ProcessInfo.processInfo.environment.merging(["FERRY_REDIS_URL": url]) { $1 },
            standardOutput: directory + "/worker.log", standardError: directory + "/worker.err")
        defer { worker.signal(SIGKILL) }
        #expect(await eventually { (try? String(contentsOfFile: directory + "/done", encoding: .utf8)) == "over tls" })
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit() == 0)

        // A sidecar that does not trust the server's CA must not connect at all.
        let (untrusting, untrustingPort) = try startStunnel(caFile: directory + "/other-ca.pem")
        defer { untrusting.signal(SIGKILL) }
        try await Task.sleep(for: .milliseconds(300))
        let refused = try await runProcess(
            try ferryExecutable(),
            ["publish", queue, "--type", "t", "--data", "x", "--redis", "redis://127.0.0.1:\(untrustingPort)"])
        #expect(refused.status == 3, "no connection without a verified server: \(refused.standardError)")
    }
}
