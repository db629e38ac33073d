#pragma once

// Keys, signatures and digests. This library is the only code in upkeep that includes OpenSSL.
// Key formats follow the TUF specification ("Key objects"): ed25519 public keys are 64 hex
// characters; ecdsa (P-256) and rsa (RSASSA-PSS, >= 2048 bits) public keys are PEM
// SubjectPublicKeyInfo.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/result.hpp"

namespace upkeep::crypto {

enum class Errc {
  UnsupportedKeyType = 1,  // keytype/scheme pair upkeep does not implement
  InvalidKey = 2,          // public or private key material does not parse
  WeakKey = 3,             // e.g. RSA below 2048 bits
  BadSignature = 4,        // signature does not verify (including malformed signature bytes)
  SigningFailed = 5,       // the private key could not sign
  BadPassphrase = 6,  // an encrypted private key could not be decrypted (or a token PIN is wrong)
  Internal = 7,       // OpenSSL failed in a way input cannot explain
  TokenUnavailable = 8,  // the PKCS#11 module, token or key cannot be found
  KeyFileFailed = 9,     // a private key file cannot be created or written
};

}  // namespace upkeep::crypto

UPKEEP_DECLARE_ERRC(upkeep::crypto);

namespace upkeep::crypto {

enum class KeyAlgorithm { Ed25519, EcdsaP256, RsaPss };

// Overwrites the whole buffer of `secret` (OPENSSL_cleanse, which the compiler cannot elide) and
// empties it. For passphrases, PINs and private key PEM text once they are used.
void Cleanse(std::string& secret);

// A string holding a secret (a passphrase, private key PEM text): its memory is cleansed when it
// is destroyed, reassigned or moved from.
class SecretString {
 public:
  SecretString() = default;
  SecretString(std::string value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  SecretString(const char* value) : value_(value) {}             // NOLINT
  SecretString(const SecretString& other) : value_(other.value_) {}
  SecretString(SecretString&& other) noexcept : value_(other.value_) { Cleanse(other.value_); }
  SecretString& operator=(SecretString other) noexcept {
    Cleanse(value_);
    value_.swap(other.value_);
    return *this;
  }
  ~SecretString() { Cleanse(value_); }

  [[nodiscard]] const std::string& value() const { return value_; }
  [[nodiscard]] std::string_view view() const { return value_; }
  [[nodiscard]] bool empty() const { return value_.empty(); }

 private:
  std::string value_;
};

// Creates `path` with mode 0600 from its first byte and writes `content` to it: the file must not
// exist yet and a symbolic link at `path` is not followed (O_CREAT|O_EXCL|O_NOFOLLOW); the data
// is fsynced, then the directory. On failure nothing is left at `path`. Errc::KeyFileFailed.
[[nodiscard]] Result<void> WritePrivateKeyFile(const std::filesystem::path& path,
                                               std::string_view content);

// A private key held in a PKCS#11 token (an HSM, a smart card, softhsm2): the key never leaves it.
struct Pkcs11KeyRef {
  std::string module;  // path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so
  std::string token;   // token label
  std::string label;   // private key label
  std::string pin;     // user PIN (never logged)
};

struct PkeyHandle;  // wraps EVP_PKEY

// A verification key as described by a TUF key object.
class PublicKey {
 public:
  // keytype: "ed25519" | "ecdsa" (also legacy "ecdsa-sha2-nistp256") | "rsa";
  // scheme: "ed25519" | "ecdsa-sha2-nistp256" | "rsassa-pss-sha256"; the pair must match.
  [[nodiscard]] static Result<PublicKey> FromTuf(std::string_view keytype, std::string_view scheme,
                                                 std::string_view public_value);

  // Ok, or Errc::BadSignature. ECDSA signatures are DER; RSASSA-PSS uses MGF1-SHA256 and accepts
  // any salt length (interoperable with signers using digest-length or maximum salt).
  [[nodiscard]] Result<void> Verify(std::span<const std::uint8_t> message,
                                    std::span<const std::uint8_t> signature) const;

  [[nodiscard]] KeyAlgorithm algorithm() const { return algorithm_; }
  [[nodiscard]] const std::string& keytype() const { return keytype_; }
  [[nodiscard]] const std::string& scheme() const { return scheme_; }
  [[nodiscard]] const std::string& public_value() const { return public_value_; }
  // DER SubjectPublicKeyInfo: equal for the same key material however it was written.
  [[nodiscard]] const std::vector<std::uint8_t>& spki_der() const { return spki_der_; }

 private:
  PublicKey() = default;
  KeyAlgorithm algorithm_ = KeyAlgorithm::Ed25519;
  std::string keytype_, scheme_, public_value_;
  std::vector<std::uint8_t> spki_der_;
  std::shared_ptr<PkeyHandle> pkey_;
  friend class PrivateKey;
};

class PrivateKey {
 public:
  // Fresh key (RSA: 3072 bits).
  [[nodiscard]] static Result<PrivateKey> Generate(KeyAlgorithm algorithm);
  // PKCS#8 PEM, encrypted ("ENCRYPTED PRIVATE KEY") when a passphrase is given.
  [[nodiscard]] static Result<PrivateKey> FromPem(std::string_view pem,
                                                  std::string_view passphrase = {});
  // Errc::UnsupportedKeyType for token-held keys, which never leave their token.
  [[nodiscard]] Result<std::string> ToPem(std::string_view passphrase = {}) const;
  // A token-held ECDSA P-256 or RSA key (through libp11). Signing happens inside the token.
  // Errc::TokenUnavailable, Errc::BadPassphrase for a wrong PIN, Errc::UnsupportedKeyType.
  [[nodiscard]] static Result<PrivateKey> FromPkcs11(const Pkcs11KeyRef& ref);

  // Ed25519: pure; ECDSA P-256: SHA-256, DER signature; RSA: PSS, SHA-256, salt = digest length.
  [[nodiscard]] Result<std::vector<std::uint8_t>> Sign(std::span<const std::uint8_t> message) const;

  [[nodiscard]] KeyAlgorithm algorithm() const { return algorithm_; }
  // The TUF form of the public half (ed25519 hex; "ecdsa"/"rsa" with PEM SPKI).
  [[nodiscard]] const PublicKey& public_key() const { return public_key_; }

 private:
  PrivateKey() = default;
  // Takes ownership of `handle` and derives the public half.
  [[nodiscard]] static Result<PrivateKey> FromOwnedPkey(PkeyHandle* handle);
  KeyAlgorithm algorithm_ = KeyAlgorithm::Ed25519;
  std::shared_ptr<PkeyHandle> pkey_;
  PublicKey public_key_;
};

enum class HashAlgorithm { Sha256, Sha512 };

// "sha256" / "sha512"; nullopt for anything else.
[[nodiscard]] std::optional<HashAlgorithm> HashAlgorithmFromName(std::string_view name);
[[nodiscard]] std::size_t DigestSize(HashAlgorithm algorithm);

// Streaming digest.
class Hasher {
 public:
  explicit Hasher(HashAlgorithm algorithm);
  Hasher(Hasher&&) noexcept;
  Hasher& operator=(Hasher&&) noexcept;
  ~Hasher();
  void Update(std::span<const std::uint8_t> data);
  void Update(std::string_view data);
  // Ends the digest; the Hasher must not be used afterwards.
  [[nodiscard]] std::vector<std::uint8_t> Final();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

[[nodiscard]] std::vector<std::uint8_t> Digest(HashAlgorithm algorithm, std::string_view data);
[[nodiscard]] std::vector<std::uint8_t> Sha256(std::string_view data);

// HMAC-SHA256 (RFC 2104, FIPS 198-1) of `data` under `key` (any length; keys longer than 64
// bytes are hashed first, as the RFC says): 32 bytes. Errc::Internal when OpenSSL fails.
[[nodiscard]] Result<std::vector<std::uint8_t>> HmacSha256(std::string_view key,
                                                           std::string_view data);

// Compares two byte strings in time that depends only on their lengths.
[[nodiscard]] bool ConstantTimeEqual(std::span<const std::uint8_t> a,
                                     std::span<const std::uint8_t> b);

}  // namespace upkeep::crypto
