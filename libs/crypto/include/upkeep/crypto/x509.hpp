#pragma once

// X.509 for mutual TLS between devices and the fleet server: TLS identity keys, certificate
// signing requests made on the device, a device CA that issues client certificates (and the
// server's own TLS certificate), and parsing and checking a peer certificate.
//
// Times are always parameters; nothing here reads the system clock. Every parser bounds its input
// (kMaxInputBytes) and accepts exactly one PEM block (or one DER object) and nothing around it.
// Device IDs are [A-Za-z0-9._-]{1,64}; a client certificate names its device both as subject CN
// and as the SAN URI "urn:upkeep:device:<device_id>".

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/result.hpp"

namespace upkeep::crypto::x509 {

enum class Errc {
  Malformed = 1,           // not exactly one well-formed PEM/DER certificate or CSR, or an
                           // unusable encoding inside it (bad time, negative serial, bad
                           // extension, unhandled critical extension)
  TooLarge = 2,            // input longer than kMaxInputBytes
  BadSignature = 3,        // a CSR's self-signature or a certificate's signature does not verify
  UnsupportedKeyType = 4,  // a key other than ECDSA P-256 (named curve) or Ed25519
  InvalidName = 5,         // a device ID, common name, DNS name or IP address that is not allowed
  InvalidArgument = 6,     // e.g. not_before not before not_after, a time X.509 cannot hold
  Expired = 7,             // the certificate (or its CA) is past not_after at the given time
  NotYetValid = 8,         // the certificate (or its CA) is before not_before at the given time
  WrongIssuer = 9,         // the certificate was not issued by the given CA (name or key id)
  NotAClientCertificate = 10,  // a CA certificate, or no clientAuth extended key usage
  NotACaCertificate = 11,      // the CA certificate given lacks CA:TRUE or keyCertSign
  KeyMismatch = 12,            // the CA key given is not the CA certificate's key
  Internal = 13,               // OpenSSL failed in a way input cannot explain
};

}  // namespace upkeep::crypto::x509

UPKEEP_DECLARE_ERRC(upkeep::crypto::x509);

namespace upkeep::crypto::x509 {

// Longest certificate or CSR accepted, PEM or DER (an upkeep certificate is under 1 KiB).
inline constexpr std::size_t kMaxInputBytes = 16 * 1024;
inline constexpr std::size_t kMaxDeviceIdLength = 64;
inline constexpr std::string_view kDeviceUriPrefix = "urn:upkeep:device:";

// [A-Za-z0-9._-]{1,64}, except "." and "..": safe in logs, URLs and as a path component.
[[nodiscard]] bool IsValidDeviceId(std::string_view device_id);

enum class TlsKeyType { EcdsaP256, Ed25519 };

// A public key as a certificate or CSR carries it.
struct SubjectPublicKey {
  TlsKeyType type = TlsKeyType::EcdsaP256;
  std::vector<std::uint8_t> spki_der;  // DER SubjectPublicKeyInfo (EC points uncompressed)
  friend bool operator==(const SubjectPublicKey&, const SubjectPublicKey&) = default;
};

// A TLS identity's private key (a device's, the device CA's, the server's).
class TlsKey {
 public:
  // A fresh key; ECDSA P-256 unless asked otherwise.
  [[nodiscard]] static Result<TlsKey> Generate(TlsKeyType type = TlsKeyType::EcdsaP256);
  // Unencrypted PEM ("PRIVATE KEY" PKCS#8, or "EC PRIVATE KEY"). Errc::Malformed,
  // Errc::UnsupportedKeyType, Errc::TooLarge.
  [[nodiscard]] static Result<TlsKey> FromPem(std::string_view pem);
  // Unencrypted PKCS#8 PEM, as boost::asio::ssl::context::use_private_key(..., pem) takes it.
  // The caller decides where it is written (and with which permissions).
  [[nodiscard]] Result<std::string> ToPem() const;

  [[nodiscard]] TlsKeyType type() const { return public_key_.type; }
  [[nodiscard]] const SubjectPublicKey& public_key() const { return public_key_; }

 private:
  struct Handle;  // wraps EVP_PKEY (defined in x509.cpp)
  friend struct TlsKeyAccess;
  TlsKey() = default;
  std::shared_ptr<Handle> handle_;
  SubjectPublicKey public_key_;
};

// A certificate's validity window; not_before must be before not_after.
struct Validity {
  std::chrono::sys_seconds not_before;
  std::chrono::sys_seconds not_after;
};

// ---------------------------------------------------------------------------------------------
// Certificate signing requests (made on the device, parsed by the server)

// A PEM CSR with subject CN = `subject_common_name`, self-signed by `key` (SHA-256 for P-256).
// Errc::InvalidName unless the name is a valid device ID.
[[nodiscard]] Result<std::string> CreateCsr(const TlsKey& key,
                                            std::string_view subject_common_name);

struct CsrInfo {
  std::string common_name;      // the subject CN, a valid device ID
  std::string subject;          // the whole subject, RFC 2253, non-ASCII and control bytes escaped
  SubjectPublicKey public_key;  // the key whose signature the CSR carries
};

// Checks a PEM CSR's self-signature (proof of possession of the key). Extensions the CSR asks
// for are ignored: the CA decides every extension of what it issues.
// Errc::TooLarge, Errc::Malformed, Errc::UnsupportedKeyType, Errc::BadSignature,
// Errc::InvalidName (no CN, several CNs, or a CN that is not a device ID).
[[nodiscard]] Result<CsrInfo> ParseCsr(std::string_view pem);

// ---------------------------------------------------------------------------------------------
// Device CA

// A self-signed CA certificate (PEM): subject and issuer CN = `common_name` (printable ASCII,
// 1..64), basicConstraints CA:TRUE (critical), keyUsage keyCertSign|cRLSign (critical),
// subjectKeyIdentifier, random serial.
[[nodiscard]] Result<std::string> CreateCa(const TlsKey& key, std::string_view common_name,
                                           const Validity& validity);

struct IssuedCertificate {
  std::string pem;
  std::string serial_hex;          // lowercase hex of a random 128-bit positive serial
  std::string sha256_fingerprint;  // lowercase hex SHA-256 of the DER certificate
};

// A client certificate for `device_id`: subject CN = device_id, SAN URI
// urn:upkeep:device:<device_id>, basicConstraints CA:FALSE (critical), keyUsage
// digitalSignature (critical), extendedKeyUsage clientAuth, authority and subject key
// identifiers, a fresh random serial (record it: it is what blocks the device later).
// Errc::InvalidName, Errc::InvalidArgument, Errc::UnsupportedKeyType, Errc::Malformed,
// Errc::NotACaCertificate, Errc::KeyMismatch.
[[nodiscard]] Result<IssuedCertificate> IssueClientCertificate(std::string_view ca_cert_pem,
                                                               const TlsKey& ca_key,
                                                               const SubjectPublicKey& device_key,
                                                               std::string_view device_id,
                                                               const Validity& validity);

// Names a server certificate is valid for; at least one in all.
struct ServerNames {
  std::vector<std::string> dns_names;     // e.g. "localhost", "updates.example.com"
  std::vector<std::string> ip_addresses;  // e.g. "127.0.0.1", "::1"
};

// The server's TLS certificate: SAN dNSName/iPAddress entries, subject CN = the first name,
// basicConstraints CA:FALSE, keyUsage digitalSignature, extendedKeyUsage serverAuth.
// Same errors as IssueClientCertificate.
[[nodiscard]] Result<IssuedCertificate> IssueServerCertificate(std::string_view ca_cert_pem,
                                                               const TlsKey& ca_key,
                                                               const SubjectPublicKey& server_key,
                                                               const ServerNames& names,
                                                               const Validity& validity);

// ---------------------------------------------------------------------------------------------
// Peer certificates

struct CertificateInfo {
  // From the SAN URI urn:upkeep:device:<id>; without one, the subject CN if it is a valid device
  // ID; otherwise empty (e.g. a server certificate for an IP address).
  std::string device_id;
  std::string serial_hex;  // lowercase hex, even length, no sign
  std::chrono::sys_seconds not_before;
  std::chrono::sys_seconds not_after;
  std::string issuer;              // RFC 2253, non-ASCII and control bytes escaped
  std::string subject;             // RFC 2253, non-ASCII and control bytes escaped
  std::string sha256_fingerprint;  // lowercase hex SHA-256 of the DER certificate
  SubjectPublicKey public_key;
  std::vector<std::string> dns_names;     // SAN dNSName entries (printable ASCII ones)
  std::vector<std::string> ip_addresses;  // SAN iPAddress entries, e.g. "127.0.0.1", "::1"
};

// One certificate, PEM ("CERTIFICATE") or DER. Checks structure only, not who signed it.
// Errc::TooLarge, Errc::Malformed, Errc::UnsupportedKeyType, Errc::InvalidName (a SAN device
// URI that is not a device ID, several of them, or one that disagrees with the CN).
[[nodiscard]] Result<CertificateInfo> ParseCertificate(std::string_view pem_or_der);

// Whether `cert` (PEM or DER) is a client certificate `ca_cert` (PEM or DER) issued and that is
// valid at `at`: the CA is a CA and valid at `at`; the issuer name and key identifier match; the
// signature verifies (ECDSA-SHA256 or Ed25519); not_before <= at <= not_after; CA:FALSE;
// extendedKeyUsage includes clientAuth; keyUsage (if present) includes digitalSignature; it names
// a device. Checked in that order after both parse; the first failure is returned:
// Errc::Malformed, Errc::TooLarge, Errc::UnsupportedKeyType, Errc::InvalidName (as
// ParseCertificate), Errc::NotACaCertificate, Errc::WrongIssuer, Errc::BadSignature,
// Errc::NotYetValid, Errc::Expired (the CA's validity, then the certificate's),
// Errc::NotAClientCertificate, Errc::InvalidName (names no device).
// Whether the serial is blocked is the caller's check (on the returned serial_hex).
[[nodiscard]] Result<CertificateInfo> VerifyIssuedBy(std::string_view cert,
                                                     std::string_view ca_cert,
                                                     std::chrono::sys_seconds at);

// The DER form of one certificate given as PEM or DER (same checks as ParseCertificate's
// encoding checks).
[[nodiscard]] Result<std::string> CertificateDer(std::string_view pem_or_der);

}  // namespace upkeep::crypto::x509
