import Crypto
import Ferry
import Foundation
import JWTKit

/// JWT bearer tokens for `ferry serve` (jwt-kit): for services that already have an identity
/// provider, so their users call the API with the tokens they hold instead of shared keys.
///
/// A token is accepted when its signature verifies with a configured key (HS256 with a shared
/// secret, RS256 or ES256 with a public key in PEM, or any key of a JWKS document), it has not
/// expired (`exp` is required), and its `iss` and `aud` match when those are configured. Its
/// `sub` names the caller, `scope` (space-separated: `publish read admin`) says what it may do,
/// and `ferry_queues` (an array) may limit the queues it sees. With ``Configuration/subjectIsKey``
/// the subject is every job's flow-control `key`, so per-key limits and quotas ("2 active jobs
/// per user") hold per user and a caller cannot publish under another's key.
public struct JWTAuthenticator: Sendable {
    /// Where the keys come from and what the claims must say.
    public struct Configuration: Sendable {
        /// HS256's shared secret.
        public var secret: [UInt8]?
        /// An RS256 or ES256 (P-256) public key in PEM.
        public var publicKeyPEM: String?
        /// A JWKS document (JSON): its RSA and EC keys, chosen by the token's `kid`.
        public var jwksJSON: String?
        /// The `iss` a token must have; any when nil.
        public var issuer: String?
        /// A value the token's `aud` must include; any when nil.
        public var audience: String?
        /// The subject is the job's `key` (``JWTAuthenticator``).
        public var subjectIsKey = false

        /// No keys: add at least one.
        public init() {}

        /// Whether any key is configured.
        public var hasKeys: Bool { secret != nil || publicKeyPEM != nil || jwksJSON != nil }
    }

    let keys: JWTKeyCollection
    let configuration: Configuration

    /// Loads the configured keys.
    ///
    /// - Throws: ``FerryError`` `invalidInput` when none is given or one does not parse.
    public init(_ configuration: Configuration) async throws(FerryError) {
        guard configuration.hasKeys else {
            throw FerryError(.invalidInput, "JWT authentication needs a key: a secret (HS256), a public key (PEM) or a JWKS file")
        }
        let keys = JWTKeyCollection()
        if let secret = configuration.secret {
            guard secret.count >= 32 else {
                throw FerryError(.invalidInput, "the HS256 secret is \(secret.count) bytes; use at least 32 random bytes")
            }
            await keys.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: .sha256)
        }
        if let pem = configuration.publicKeyPEM {
            if let rsa = try? Insecure.RSA.PublicKey(pem: pem) {
                await keys.add(rsa: rsa, digestAlgorithm: .sha256)
            } else if let ecdsa = try? ES256PublicKey(pem: pem) {
                await keys.add(ecdsa: ecdsa)
            } else {
                throw FerryError(.invalidInput, "the JWT public key is neither an RSA nor a P-256 public key in PEM")
            }
        }
        if let jwks = configuration.jwksJSON {
            do {
                try await keys.add(jwksJSON: jwks)
            } catch {
                throw FerryError(.invalidInput, "the JWKS document does not parse: \(error)")
            }
        }
        self.keys = keys
        self.configuration = configuration
    }

    /// The caller a token names, or a refusal (`unauthenticated`) saying why.
    func authenticate(token: String) async throws -> APIClient {
        let claims: FerryClaims
        do {
            claims = try await keys.verify(token, as: FerryClaims.self)
        } catch {
            throw APIProblem(.unauthenticated, "the bearer token is not accepted: \(Self.reason(error))")
        }
        if let issuer = configuration.issuer, claims.iss?.value != issuer {
            throw APIProblem(.unauthenticated, "the token's issuer is not \(issuer)")
        }
        if let audience = configuration.audience, claims.aud?.value.contains(audience) != true {
            throw APIProblem(.unauthenticated, "the token is not meant for audience \(audience)")
        }
        let scopes = (claims.scope ?? "").split(separator: " ").compactMap { APIKeys.Scope(rawValue: String($0)) }
        return APIClient(
            name: "token subject \(claims.sub.value)", identity: "sub:\(claims.sub.value)", scopes: Set(scopes),
            queues: claims.queues.map(Set.init),
            jobKey: configuration.subjectIsKey ? claims.sub.value : nil, expiresAt: claims.exp.value)
    }

    /// What went wrong, in words a caller can act on (jwt-kit's reasons, without type names).
    static func reason(_ error: any Error) -> String {
        if let error = error as? JWTError {
            switch error.errorType {
            case .claimVerificationFailure: return "a claim does not hold (expired?): \(error.reason ?? "")"
            case .signatureVerificationFailed: return "its signature does not verify with this server's keys"
            case .malformedToken: return "it is not a JWT"
            default: return error.reason ?? "\(error.errorType)"
            }
        }
        return "\(error)"
    }
}

/// The claims `ferry serve` reads from a token.
struct FerryClaims: JWTPayload {
    var sub: SubjectClaim
    var exp: ExpirationClaim
    var iss: IssuerClaim?
    var aud: AudienceClaim?
    /// Space-separated scopes: `publish`, `read`, `admin`.
    var scope: String?
    /// The queues the caller may see; every queue when absent.
    var queues: [String]?

    enum CodingKeys: String, CodingKey {
        case sub, exp, iss, aud, scope
        case queues = "ferry_queues"
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }
}
