#include "upkeep/crypto/crypto.hpp"

#include <fcntl.h>
#include <libp11.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "upkeep/common/encoding.hpp"

namespace upkeep::crypto {

struct PkeyHandle {
  explicit PkeyHandle(EVP_PKEY* p) : pkey(p) {}
  PkeyHandle(const PkeyHandle&) = delete;
  PkeyHandle& operator=(const PkeyHandle&) = delete;
  ~PkeyHandle() { EVP_PKEY_free(pkey); }  // before `token_session` goes
  EVP_PKEY* pkey;
  // For token keys: the PKCS#11 session the key lives in; signing uses legacy digests.
  std::shared_ptr<void> token_session;
};

namespace {

using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)>;

const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::UnsupportedKeyType:
      return "UnsupportedKeyType";
    case Errc::InvalidKey:
      return "InvalidKey";
    case Errc::WeakKey:
      return "WeakKey";
    case Errc::BadSignature:
      return "BadSignature";
    case Errc::SigningFailed:
      return "SigningFailed";
    case Errc::BadPassphrase:
      return "BadPassphrase";
    case Errc::Internal:
      return "Internal";
    case Errc::TokenUnavailable:
      return "TokenUnavailable";
    case Errc::KeyFileFailed:
      return "KeyFileFailed";
  }
  return "Unknown";
}

constexpr const char* kEd25519 = "ed25519";
constexpr const char* kEcdsa = "ecdsa";
constexpr const char* kEcdsaLegacy = "ecdsa-sha2-nistp256";
constexpr const char* kEcdsaScheme = "ecdsa-sha2-nistp256";
constexpr const char* kRsa = "rsa";
constexpr const char* kRsaScheme = "rsassa-pss-sha256";
constexpr int kMinRsaBits = 2048;
constexpr int kGeneratedRsaBits = 3072;

std::shared_ptr<PkeyHandle> Wrap(EVP_PKEY* p) { return std::make_shared<PkeyHandle>(p); }

BioPtr MemBio(std::string_view data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())), &BIO_free);
}

std::string BioString(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

std::vector<std::uint8_t> SpkiDer(EVP_PKEY* pkey) {
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(pkey, &der);
  if (len <= 0) return {};
  std::vector<std::uint8_t> out(der, der + len);
  OPENSSL_free(der);
  return out;
}

Result<std::string> PublicPem(EVP_PKEY* pkey) {
  BioPtr bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), pkey) != 1) {
    return Error(Errc::Internal, "cannot write public key PEM");
  }
  return BioString(bio.get());
}

// P-256 given by its OID. Explicit curve parameters are refused: they are another encoding of
// the same key (a different spki_der) and a classic source of parser bugs.
bool IsP256(EVP_PKEY* pkey) {
  char group[64] = {0};
  char encoding[32] = {0};
  std::size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) !=
          1 ||
      EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_EC_ENCODING, encoding, sizeof encoding,
                                     &len) != 1) {
    return false;
  }
  return (std::strcmp(group, "prime256v1") == 0 || std::strcmp(group, "P-256") == 0) &&
         std::strcmp(encoding, OSSL_PKEY_EC_ENCODING_GROUP) == 0;
}

// Hands OpenSSL the caller's passphrase. With no callback OpenSSL falls back to its default
// one, which prompts on the terminal: an encrypted key without a passphrase would block.
int PassphraseCallback(char* buf, int size, int /*rwflag*/, void* u) {
  const auto* pass = static_cast<const std::string_view*>(u);
  if (pass->empty() || size < 0 || pass->size() > static_cast<std::size_t>(size)) return -1;
  std::memcpy(buf, pass->data(), pass->size());
  return static_cast<int>(pass->size());
}

// The TUF form (keytype, scheme, public value) of an OpenSSL key.
Result<std::tuple<KeyAlgorithm, std::string, std::string, std::string>> TufForm(EVP_PKEY* pkey) {
  switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_ED25519: {
      std::uint8_t raw[32];
      std::size_t len = sizeof raw;
      if (EVP_PKEY_get_raw_public_key(pkey, raw, &len) != 1 || len != sizeof raw) {
        return Error(Errc::InvalidKey, "cannot read ed25519 public key");
      }
      return std::tuple{KeyAlgorithm::Ed25519, std::string(kEd25519), std::string(kEd25519),
                        HexEncode(std::span<const std::uint8_t>(raw, len))};
    }
    case EVP_PKEY_EC: {
      if (!IsP256(pkey)) return Error(Errc::UnsupportedKeyType, "only P-256 ECDSA keys");
      UPKEEP_ASSIGN_OR_RETURN(std::string pem, PublicPem(pkey));
      return std::tuple{KeyAlgorithm::EcdsaP256, std::string(kEcdsa), std::string(kEcdsaScheme),
                        pem};
    }
    case EVP_PKEY_RSA: {  // rsaEncryption only, as FromTuf accepts
      if (EVP_PKEY_get_bits(pkey) < kMinRsaBits) {
        return Error(Errc::WeakKey, "RSA keys must have at least 2048 bits");
      }
      UPKEEP_ASSIGN_OR_RETURN(std::string pem, PublicPem(pkey));
      return std::tuple{KeyAlgorithm::RsaPss, std::string(kRsa), std::string(kRsaScheme), pem};
    }
    default:
      return Error(Errc::UnsupportedKeyType, "unsupported key algorithm");
  }
}

// SHA-256/512 fetched once: implicit fetches on every use are a large part of OpenSSL 3's cost.
const EVP_MD* FetchedMd(HashAlgorithm algorithm) {
  static EVP_MD* sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  static EVP_MD* sha512 = EVP_MD_fetch(nullptr, "SHA512", nullptr);
  return algorithm == HashAlgorithm::Sha256 ? sha256 : sha512;
}

// Sets up an EVP_DigestSign/Verify context with the algorithm's parameters.
bool InitDigest(EVP_MD_CTX* ctx, KeyAlgorithm alg, const PkeyHandle& key, bool sign) {
  EVP_PKEY* pkey = key.pkey;
  // Token keys use OpenSSL's legacy key methods, which want the legacy digest object.
  const EVP_MD* md = alg == KeyAlgorithm::Ed25519 ? nullptr
                     : key.token_session          ? EVP_sha256()
                                                  : FetchedMd(HashAlgorithm::Sha256);
  EVP_PKEY_CTX* pctx = nullptr;
  const int ok = sign ? EVP_DigestSignInit(ctx, &pctx, md, nullptr, pkey)
                      : EVP_DigestVerifyInit(ctx, &pctx, md, nullptr, pkey);
  if (ok != 1) return false;
  if (alg == KeyAlgorithm::RsaPss) {
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1) return false;
    if (EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1) return false;
    if (EVP_PKEY_CTX_set_rsa_pss_saltlen(
            pctx, sign ? RSA_PSS_SALTLEN_DIGEST : RSA_PSS_SALTLEN_AUTO) != 1) {
      return false;
    }
  }
  return true;
}

}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("crypto", &ErrcName);
  return category;
}

// ---------------------------------------------------------------------------------------------
// PublicKey

Result<PublicKey> PublicKey::FromTuf(std::string_view keytype, std::string_view scheme,
                                     std::string_view public_value) {
  PublicKey key;
  EVP_PKEY* raw = nullptr;
  if (keytype == kEd25519 && scheme == kEd25519) {
    auto bytes = HexDecode(public_value);
    if (!bytes || bytes->size() != 32) {
      return Error(Errc::InvalidKey, "ed25519 public key must be 64 hex characters");
    }
    raw = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, bytes->data(), bytes->size());
    if (raw == nullptr) return Error(Errc::InvalidKey, "bad ed25519 public key");
    key.algorithm_ = KeyAlgorithm::Ed25519;
  } else if ((keytype == kEcdsa || keytype == kEcdsaLegacy) && scheme == kEcdsaScheme) {
    auto bio = MemBio(public_value);
    raw = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
    if (raw == nullptr) return Error(Errc::InvalidKey, "ecdsa public key is not PEM SPKI");
    // spki_der must be one encoding per key: compressed and uncompressed points are the same
    // key, and metadata counts a threshold by spki_der.
    if (EVP_PKEY_get_base_id(raw) != EVP_PKEY_EC || !IsP256(raw) ||
        EVP_PKEY_set_utf8_string_param(raw, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                       OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED) != 1) {
      EVP_PKEY_free(raw);
      return Error(Errc::InvalidKey, "ecdsa-sha2-nistp256 needs a P-256 key (named curve)");
    }
    key.algorithm_ = KeyAlgorithm::EcdsaP256;
  } else if (keytype == kRsa && scheme == kRsaScheme) {
    auto bio = MemBio(public_value);
    raw = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
    if (raw == nullptr) return Error(Errc::InvalidKey, "rsa public key is not PEM SPKI");
    // rsaEncryption only: the same modulus under the id-RSASSA-PSS identifier would be a
    // second spki_der for one key.
    if (EVP_PKEY_get_base_id(raw) != EVP_PKEY_RSA) {
      EVP_PKEY_free(raw);
      return Error(Errc::InvalidKey, "rsassa-pss-sha256 needs an rsaEncryption RSA key");
    }
    if (EVP_PKEY_get_bits(raw) < kMinRsaBits) {
      EVP_PKEY_free(raw);
      return Error(Errc::WeakKey, "RSA keys must have at least 2048 bits");
    }
    key.algorithm_ = KeyAlgorithm::RsaPss;
  } else {
    ERR_clear_error();
    return Error(Errc::UnsupportedKeyType,
                 "unsupported keytype/scheme " + std::string(keytype) + "/" + std::string(scheme));
  }
  ERR_clear_error();
  key.pkey_ = Wrap(raw);
  key.keytype_ = keytype;
  key.scheme_ = scheme;
  key.public_value_ = public_value;
  key.spki_der_ = SpkiDer(raw);
  return key;
}

Result<void> PublicKey::Verify(std::span<const std::uint8_t> message,
                               std::span<const std::uint8_t> signature) const {
  MdCtxPtr ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  bool ok = ctx && InitDigest(ctx.get(), algorithm_, *pkey_, /*sign=*/false) &&
            EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(),
                             message.size()) == 1;
  ERR_clear_error();
  if (!ok) return Error(Errc::BadSignature, "signature does not verify");
  return Ok();
}

// ---------------------------------------------------------------------------------------------
// PrivateKey

Result<PrivateKey> PrivateKey::Generate(KeyAlgorithm algorithm) {
  EVP_PKEY* raw = nullptr;
  switch (algorithm) {
    case KeyAlgorithm::Ed25519:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
      break;
    case KeyAlgorithm::EcdsaP256:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
      break;
    case KeyAlgorithm::RsaPss:
      raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(kGeneratedRsaBits));
      break;
  }
  if (raw == nullptr) return Error(Errc::Internal, "key generation failed");
  return FromOwnedPkey(new PkeyHandle(raw));
}

Result<PrivateKey> PrivateKey::FromOwnedPkey(PkeyHandle* raw_handle) {
  PrivateKey key;
  key.pkey_.reset(raw_handle);
  UPKEEP_ASSIGN_OR_RETURN(auto form, TufForm(raw_handle->pkey));
  key.algorithm_ = std::get<0>(form);
  UPKEEP_ASSIGN_OR_RETURN(
      key.public_key_, PublicKey::FromTuf(std::get<1>(form), std::get<2>(form), std::get<3>(form)));
  return key;
}

Result<PrivateKey> PrivateKey::FromPem(std::string_view pem, std::string_view passphrase) {
  auto bio = MemBio(pem);
  EVP_PKEY* raw = PEM_read_bio_PrivateKey(bio.get(), nullptr, &PassphraseCallback, &passphrase);
  if (raw == nullptr) {
    const bool encrypted = pem.find("ENCRYPTED") != std::string_view::npos;
    ERR_clear_error();
    if (encrypted) return Error(Errc::BadPassphrase, "cannot decrypt private key");
    return Error(Errc::InvalidKey, "not a PEM private key");
  }
  return FromOwnedPkey(new PkeyHandle(raw));
}

namespace {

// A loaded PKCS#11 module with its slots; token keys keep it alive while they exist.
struct Pkcs11Session {
  PKCS11_CTX* ctx = PKCS11_CTX_new();
  PKCS11_SLOT* slots = nullptr;
  unsigned int slot_count = 0;
  bool loaded = false;
  Pkcs11Session() = default;
  Pkcs11Session(const Pkcs11Session&) = delete;
  Pkcs11Session& operator=(const Pkcs11Session&) = delete;
  ~Pkcs11Session() {
    if (slots != nullptr) PKCS11_release_all_slots(ctx, slots, slot_count);
    if (loaded) PKCS11_CTX_unload(ctx);
    if (ctx != nullptr) PKCS11_CTX_free(ctx);
  }
};

}  // namespace

Result<PrivateKey> PrivateKey::FromPkcs11(const Pkcs11KeyRef& ref) {
  auto session = std::make_shared<Pkcs11Session>();
  if (session->ctx == nullptr) return Error(Errc::Internal, "cannot create a PKCS#11 context");
  if (PKCS11_CTX_load(session->ctx, ref.module.c_str()) != 0) {
    ERR_clear_error();
    return Error(Errc::TokenUnavailable, "cannot load PKCS#11 module " + ref.module);
  }
  session->loaded = true;
  if (PKCS11_enumerate_slots(session->ctx, &session->slots, &session->slot_count) != 0) {
    ERR_clear_error();
    return Error(Errc::TokenUnavailable, "cannot list the module's slots");
  }
  PKCS11_SLOT* slot = nullptr;
  for (unsigned int i = 0; i < session->slot_count; ++i) {
    PKCS11_TOKEN* token = session->slots[i].token;
    if (token != nullptr && token->label != nullptr && ref.token == token->label) {
      slot = &session->slots[i];
      break;
    }
  }
  if (slot == nullptr) return Error(Errc::TokenUnavailable, "no token labelled " + ref.token);
  if (PKCS11_open_session(slot, 0) != 0 || PKCS11_login(slot, 0, ref.pin.c_str()) != 0) {
    ERR_clear_error();
    return Error(Errc::BadPassphrase, "cannot log in to token " + ref.token);
  }
  PKCS11_KEY* keys = nullptr;
  unsigned int key_count = 0;
  if (PKCS11_enumerate_keys(slot->token, &keys, &key_count) != 0) {
    ERR_clear_error();
    return Error(Errc::TokenUnavailable, "cannot list the token's keys");
  }
  PKCS11_KEY* key = nullptr;
  for (unsigned int i = 0; i < key_count; ++i) {
    if (keys[i].isPrivate && keys[i].label != nullptr && ref.label == keys[i].label) key = &keys[i];
  }
  if (key == nullptr) return Error(Errc::TokenUnavailable, "no private key labelled " + ref.label);
  EVP_PKEY* raw = PKCS11_get_private_key(key);
  if (raw == nullptr) {
    ERR_clear_error();
    return Error(Errc::TokenUnavailable, "cannot use private key " + ref.label);
  }
  PrivateKey out;
  out.pkey_ = std::make_shared<PkeyHandle>(raw);
  out.pkey_->token_session = session;
  // The public half, through DER so OpenSSL treats it as an ordinary provider key.
  const std::vector<std::uint8_t> der = SpkiDer(raw);
  const unsigned char* p = der.data();
  EVP_PKEY* pub = der.empty() ? nullptr : d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size()));
  if (pub == nullptr) {
    ERR_clear_error();
    return Error(Errc::InvalidKey, "cannot read the public half of " + ref.label);
  }
  auto pub_form = TufForm(pub);
  EVP_PKEY_free(pub);
  if (!pub_form) return pub_form.error();
  out.algorithm_ = std::get<0>(*pub_form);
  if (out.algorithm_ == KeyAlgorithm::Ed25519) {
    return Error(Errc::UnsupportedKeyType, "token keys must be ECDSA P-256 or RSA");
  }
  UPKEEP_ASSIGN_OR_RETURN(
      out.public_key_,
      PublicKey::FromTuf(std::get<1>(*pub_form), std::get<2>(*pub_form), std::get<3>(*pub_form)));
  return out;
}

Result<std::string> PrivateKey::ToPem(std::string_view passphrase) const {
  if (pkey_->token_session) {
    return Error(Errc::UnsupportedKeyType, "a key held in a PKCS#11 token cannot be exported");
  }
  // Secure memory BIO: the PEM text is cleared when the BIO is freed.
  BioPtr bio(BIO_new(BIO_s_secmem()), &BIO_free);
  if (!bio) return Error(Errc::Internal, "out of memory");
  int ok = 0;
  if (passphrase.empty()) {
    ok = PEM_write_bio_PKCS8PrivateKey(bio.get(), pkey_->pkey, nullptr, nullptr, 0, nullptr,
                                       nullptr);
  } else {
    std::string pass(passphrase);
    ok = PEM_write_bio_PKCS8PrivateKey(bio.get(), pkey_->pkey, EVP_aes_256_cbc(), pass.data(),
                                       static_cast<int>(pass.size()), nullptr, nullptr);
    OPENSSL_cleanse(pass.data(), pass.size());
  }
  if (ok != 1) {
    ERR_clear_error();
    return Error(Errc::Internal, "cannot write private key");
  }
  return BioString(bio.get());
}

Result<std::vector<std::uint8_t>> PrivateKey::Sign(std::span<const std::uint8_t> message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  std::size_t len = 0;
  if (!ctx || !InitDigest(ctx.get(), algorithm_, *pkey_, /*sign=*/true) ||
      EVP_DigestSign(ctx.get(), nullptr, &len, message.data(), message.size()) != 1) {
    ERR_clear_error();
    return Error(Errc::SigningFailed, "cannot sign");
  }
  std::vector<std::uint8_t> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()) != 1) {
    ERR_clear_error();
    return Error(Errc::SigningFailed, "cannot sign");
  }
  sig.resize(len);
  return sig;
}

// ---------------------------------------------------------------------------------------------
// Digests

std::optional<HashAlgorithm> HashAlgorithmFromName(std::string_view name) {
  if (name == "sha256") return HashAlgorithm::Sha256;
  if (name == "sha512") return HashAlgorithm::Sha512;
  return std::nullopt;
}

std::size_t DigestSize(HashAlgorithm algorithm) {
  return algorithm == HashAlgorithm::Sha256 ? 32 : 64;
}

struct Hasher::State {
  MdCtxPtr ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
};

Hasher::Hasher(HashAlgorithm algorithm) : state_(std::make_unique<State>()) {
  if (!state_->ctx || EVP_DigestInit_ex(state_->ctx.get(), FetchedMd(algorithm), nullptr) != 1) {
    std::abort();
  }
}
Hasher::Hasher(Hasher&&) noexcept = default;
Hasher& Hasher::operator=(Hasher&&) noexcept = default;
Hasher::~Hasher() = default;

void Hasher::Update(std::span<const std::uint8_t> data) {
  EVP_DigestUpdate(state_->ctx.get(), data.data(), data.size());
}
void Hasher::Update(std::string_view data) {
  EVP_DigestUpdate(state_->ctx.get(), data.data(), data.size());
}
std::vector<std::uint8_t> Hasher::Final() {
  std::vector<std::uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  EVP_DigestFinal_ex(state_->ctx.get(), out.data(), &len);
  out.resize(len);
  return out;
}

std::vector<std::uint8_t> Digest(HashAlgorithm algorithm, std::string_view data) {
  Hasher h(algorithm);
  h.Update(data);
  return h.Final();
}

std::vector<std::uint8_t> Sha256(std::string_view data) {
  return Digest(HashAlgorithm::Sha256, data);
}

Result<std::vector<std::uint8_t>> HmacSha256(std::string_view key, std::string_view data) {
  // Fetched once, like the digests: the context below is per call, so this is thread-safe.
  static EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (hmac == nullptr) return Error(Errc::Internal, "HMAC is not available");
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(EVP_MAC_CTX_new(hmac),
                                                                &EVP_MAC_CTX_free);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  // A zero-length key still needs a valid pointer: OpenSSL reads NULL as "keep the old key".
  static const unsigned char kNoKey = 0;
  const auto* key_bytes =
      key.empty() ? &kNoKey : reinterpret_cast<const unsigned char*>(key.data());
  std::vector<std::uint8_t> out(EVP_MAX_MD_SIZE);
  std::size_t len = 0;
  if (!ctx || EVP_MAC_init(ctx.get(), key_bytes, key.size(), params) != 1 ||
      EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1 ||
      EVP_MAC_final(ctx.get(), out.data(), &len, out.size()) != 1) {
    ERR_clear_error();
    return Error(Errc::Internal, "HMAC-SHA256 failed");
  }
  out.resize(len);
  return out;
}

bool ConstantTimeEqual(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void Cleanse(std::string& secret) {
  // Cover the whole buffer, including bytes past size() left by earlier, longer contents.
  secret.resize(secret.capacity());
  OPENSSL_cleanse(secret.data(), secret.size());
  secret.clear();
}

Result<void> WritePrivateKeyFile(const std::filesystem::path& path, std::string_view content) {
  auto fail = [&](const char* what) {
    return Error(Errc::KeyFileFailed, path.string() + ": " + what + ": " + std::strerror(errno));
  };
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return fail("cannot create");
  auto remove = [&] { ::unlink(path.c_str()); };
  // The umask can only remove bits; make the mode exactly 0600 whatever it is.
  if (::fchmod(fd, 0600) != 0) {
    Error e = fail("cannot set mode 0600");
    ::close(fd);
    remove();
    return e;
  }
  std::size_t written = 0;
  while (written < content.size()) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Error e = fail("cannot write");
      ::close(fd);
      remove();
      return e;
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    Error e = fail("cannot fsync");
    ::close(fd);
    remove();
    return e;
  }
  if (::close(fd) != 0) {
    Error e = fail("cannot close");
    remove();
    return e;
  }
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return fail("cannot open directory");
  const int synced = ::fsync(dir_fd);
  ::close(dir_fd);
  if (synced != 0) return fail("cannot fsync directory");
  return Ok();
}

}  // namespace upkeep::crypto
