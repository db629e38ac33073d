#include "upkeep/crypto/x509.hpp"

#include <arpa/inet.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <ctime>
#include <optional>
#include <span>
#include <utility>

#include "upkeep/common/encoding.hpp"

namespace upkeep::crypto::x509 {

struct TlsKey::Handle {
  explicit Handle(EVP_PKEY* p) : pkey(p) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { EVP_PKEY_free(pkey); }
  EVP_PKEY* pkey;
};

namespace {

using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;
using BnPtr = std::unique_ptr<BIGNUM, decltype(&BN_free)>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using ReqPtr = std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)>;
using NamePtr = std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, decltype(&X509_EXTENSION_free)>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, decltype(&GENERAL_NAMES_free)>;
using AsnIntegerPtr = std::unique_ptr<ASN1_INTEGER, decltype(&ASN1_INTEGER_free)>;

const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::Malformed:
      return "Malformed";
    case Errc::TooLarge:
      return "TooLarge";
    case Errc::BadSignature:
      return "BadSignature";
    case Errc::UnsupportedKeyType:
      return "UnsupportedKeyType";
    case Errc::InvalidName:
      return "InvalidName";
    case Errc::InvalidArgument:
      return "InvalidArgument";
    case Errc::Expired:
      return "Expired";
    case Errc::NotYetValid:
      return "NotYetValid";
    case Errc::WrongIssuer:
      return "WrongIssuer";
    case Errc::NotAClientCertificate:
      return "NotAClientCertificate";
    case Errc::NotACaCertificate:
      return "NotACaCertificate";
    case Errc::KeyMismatch:
      return "KeyMismatch";
    case Errc::Internal:
      return "Internal";
  }
  return "Unknown";
}

// Every error path empties OpenSSL's thread-local error queue, so nothing stale reaches the next
// caller on this thread.
Error Fail(Errc code, std::string message) {
  ERR_clear_error();
  return Error(code, std::move(message));
}

// 2^-128 collision odds per pair; positive and at most 17 DER content octets (RFC 5280: <= 20).
constexpr int kSerialBits = 128;
constexpr std::size_t kMaxSerialOctets = 20;
constexpr std::size_t kMaxCaNameLength = 64;
constexpr std::size_t kMaxDnsNameLength = 253;

BioPtr MemBio(std::string_view data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())), &BIO_free);
}

std::string BioString(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || data == nullptr) return {};
  return std::string(data, static_cast<std::size_t>(len));
}

bool IsWhitespace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view TrimLeft(std::string_view s) {
  while (!s.empty() && IsWhitespace(s.front())) s.remove_prefix(1);
  return s;
}

bool LooksLikePem(std::string_view input) { return TrimLeft(input).starts_with("-----BEGIN "); }

// The decoded bytes of exactly one PEM block labelled `label`, with nothing but whitespace
// around it and no encapsulated headers.
Result<std::string> PemBlock(std::string_view input, const char* label) {
  if (!LooksLikePem(input)) return Fail(Errc::Malformed, std::string("not a PEM ") + label);
  auto bio = MemBio(input);
  if (!bio) return Fail(Errc::Internal, "out of memory");
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  if (PEM_read_bio(bio.get(), &name, &header, &data, &len) != 1) {
    return Fail(Errc::Malformed, std::string("not a PEM ") + label);
  }
  const std::string block_name = name;
  const bool has_header = header[0] != '\0';
  std::string der(reinterpret_cast<const char*>(data), static_cast<std::size_t>(len));
  OPENSSL_free(name);
  OPENSSL_free(header);
  OPENSSL_free(data);
  if (block_name != label || has_header) {
    return Fail(Errc::Malformed, "PEM block is \"" + block_name + "\", expected " + label);
  }
  for (char c : BioString(bio.get())) {
    if (!IsWhitespace(c)) return Fail(Errc::Malformed, "data after the PEM block");
  }
  return der;
}

// ---------------------------------------------------------------------------------------------
// Keys

// P-256 given by its OID; explicit curve parameters are another encoding of the same key and a
// classic source of parser bugs.
bool IsNamedP256(EVP_PKEY* pkey) {
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

std::optional<TlsKeyType> KeyTypeOf(EVP_PKEY* pkey) {
  if (pkey == nullptr) return std::nullopt;
  switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_ED25519:
      return TlsKeyType::Ed25519;
    case EVP_PKEY_EC:
      if (IsNamedP256(pkey)) return TlsKeyType::EcdsaP256;
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

// The public half as a certificate carries it; EC points uncompressed so that one key has one
// encoding.
Result<SubjectPublicKey> PublicKeyOf(EVP_PKEY* pkey) {
  const auto type = KeyTypeOf(pkey);
  if (!type) return Fail(Errc::UnsupportedKeyType, "only ECDSA P-256 and Ed25519 keys");
  PkeyPtr copy(EVP_PKEY_dup(pkey), &EVP_PKEY_free);
  if (!copy) return Fail(Errc::Internal, "cannot copy key");
  if (*type == TlsKeyType::EcdsaP256 &&
      EVP_PKEY_set_utf8_string_param(copy.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                     OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED) != 1) {
    return Fail(Errc::Internal, "cannot set point format");
  }
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(copy.get(), &der);
  if (len <= 0) return Fail(Errc::Internal, "cannot encode public key");
  SubjectPublicKey out{*type, std::vector<std::uint8_t>(der, der + len)};
  OPENSSL_free(der);
  return out;
}

// The OpenSSL key for a SubjectPublicKey, checked against its declared type.
Result<PkeyPtr> DecodePublicKey(const SubjectPublicKey& key) {
  if (key.spki_der.empty() || key.spki_der.size() > kMaxInputBytes) {
    return Fail(Errc::Malformed, "public key is empty or too long");
  }
  const unsigned char* p = key.spki_der.data();
  PkeyPtr pkey(d2i_PUBKEY(nullptr, &p, static_cast<long>(key.spki_der.size())), &EVP_PKEY_free);
  if (!pkey || p != key.spki_der.data() + key.spki_der.size()) {
    return Fail(Errc::Malformed, "public key is not one DER SubjectPublicKeyInfo");
  }
  const auto type = KeyTypeOf(pkey.get());
  if (!type || *type != key.type) {
    return Fail(Errc::UnsupportedKeyType, "only ECDSA P-256 and Ed25519 keys");
  }
  ERR_clear_error();
  return pkey;
}

// SHA-256 for ECDSA; Ed25519 signs the message itself.
const EVP_MD* SigningDigest(EVP_PKEY* pkey) {
  return EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
}

bool IsAllowedSignatureNid(int nid) { return nid == NID_ecdsa_with_SHA256 || nid == NID_ED25519; }

// ---------------------------------------------------------------------------------------------
// Names

bool IsPrintableAscii(std::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

bool IsValidDnsName(std::string_view name) {
  if (name.empty() || name.size() > kMaxDnsNameLength) return false;
  std::size_t label = 0;
  char prev = '.';
  for (char c : name) {
    if (c == '.') {
      if (label == 0 || prev == '-') return false;
      label = 0;
    } else {
      const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (!alnum && !(c == '-' && label > 0)) return false;
      if (++label > 63) return false;
    }
    prev = c;
  }
  return label > 0 && prev != '-';
}

// The IPv4 (4) or IPv6 (16) octets of a textual address; inet_pton takes no trailing junk.
std::optional<std::vector<std::uint8_t>> ParseIp(const std::string& text) {
  std::uint8_t buf[16];
  if (inet_pton(AF_INET, text.c_str(), buf) == 1) return std::vector<std::uint8_t>(buf, buf + 4);
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1) {
    return std::vector<std::uint8_t>(buf, buf + 16);
  }
  return std::nullopt;
}

Result<void> AddCommonName(X509_NAME* name, std::string_view cn) {
  if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.data()),
                                 static_cast<int>(cn.size()), -1, 0) != 1) {
    return Fail(Errc::Internal, "cannot set common name");
  }
  return Ok();
}

// The one CN of `name` as raw bytes, when its string type is one a device ID can be written in.
std::optional<std::string> SingleCommonName(const X509_NAME* name) {
  const int first = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (first < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, first) >= 0) {
    return std::nullopt;
  }
  const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, first));
  if (s == nullptr) return std::nullopt;
  const int type = ASN1_STRING_type(s);
  if (type != V_ASN1_UTF8STRING && type != V_ASN1_PRINTABLESTRING && type != V_ASN1_IA5STRING) {
    return std::nullopt;
  }
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
}

// RFC 2253 text with control and non-ASCII bytes escaped, safe to log.
Result<std::string> NameText(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!bio) return Fail(Errc::Internal, "out of memory");
  if (X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) {
    return Fail(Errc::Malformed, "name cannot be printed");
  }
  return BioString(bio.get());
}

// ---------------------------------------------------------------------------------------------
// Times and serials

constexpr std::chrono::sys_days kEarliestTime{std::chrono::year{1950} / 1 / 1};
constexpr std::chrono::sys_days kLatestTime{std::chrono::year{9999} / 12 / 31};

Result<void> CheckValidity(const Validity& v) {
  if (v.not_before >= v.not_after) {
    return Fail(Errc::InvalidArgument, "not_before must be before not_after");
  }
  if (v.not_before < kEarliestTime || v.not_after >= kLatestTime) {
    return Fail(Errc::InvalidArgument, "validity outside what X.509 times can hold");
  }
  return Ok();
}

Result<void> SetValidity(X509* cert, const Validity& v) {
  const auto nb = static_cast<std::time_t>(v.not_before.time_since_epoch().count());
  const auto na = static_cast<std::time_t>(v.not_after.time_since_epoch().count());
  if (ASN1_TIME_set(X509_getm_notBefore(cert), nb) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert), na) == nullptr) {
    return Fail(Errc::InvalidArgument, "cannot encode validity");
  }
  return Ok();
}

std::optional<std::chrono::sys_seconds> ReadTime(const ASN1_TIME* t) {
  if (t == nullptr) return std::nullopt;  // ASN1_TIME_to_tm(nullptr) would read the clock
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  using namespace std::chrono;
  const year_month_day ymd{year{tm.tm_year + 1900}, month{static_cast<unsigned>(tm.tm_mon + 1)},
                           day{static_cast<unsigned>(tm.tm_mday)}};
  if (!ymd.ok() || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 ||
      tm.tm_sec < 0 || tm.tm_sec > 60) {
    return std::nullopt;
  }
  return sys_days{ymd} + hours{tm.tm_hour} + minutes{tm.tm_min} + seconds{tm.tm_sec};
}

// A fresh random positive 128-bit serial, set on `cert`; returns its hex.
Result<std::string> SetRandomSerial(X509* cert) {
  BnPtr bn(BN_new(), &BN_free);
  if (!bn) return Fail(Errc::Internal, "out of memory");
  do {
    if (BN_rand(bn.get(), kSerialBits, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
      return Fail(Errc::Internal, "no randomness for the serial");
    }
  } while (BN_is_zero(bn.get()));
  AsnIntegerPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr), &ASN1_INTEGER_free);
  if (!serial || X509_set_serialNumber(cert, serial.get()) != 1) {
    return Fail(Errc::Internal, "cannot set serial");
  }
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(BN_num_bytes(bn.get())));
  BN_bn2bin(bn.get(), bytes.data());
  return HexEncode(bytes);
}

Result<std::string> SerialHex(const X509* cert) {
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
  BnPtr bn(serial == nullptr ? nullptr : ASN1_INTEGER_to_BN(serial, nullptr), &BN_free);
  if (!bn) return Fail(Errc::Malformed, "unreadable serial");
  if (BN_is_negative(bn.get()) || BN_is_zero(bn.get())) {
    return Fail(Errc::Malformed, "serial must be positive");
  }
  const int octets = BN_num_bytes(bn.get());
  if (octets <= 0 || static_cast<std::size_t>(octets) > kMaxSerialOctets) {
    return Fail(Errc::Malformed, "serial longer than 20 octets");
  }
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(octets));
  BN_bn2bin(bn.get(), bytes.data());
  return HexEncode(bytes);
}

Result<std::string> Fingerprint(const X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) {
    return Fail(Errc::Internal, "cannot hash certificate");
  }
  return HexEncode(std::span<const std::uint8_t>(md, len));
}

// ---------------------------------------------------------------------------------------------
// Certificates

Result<X509Ptr> DecodeCertificate(std::string_view input) {
  if (input.size() > kMaxInputBytes) return Fail(Errc::TooLarge, "certificate too large");
  std::string pem_der;
  std::string_view der = input;
  if (LooksLikePem(input)) {
    UPKEEP_ASSIGN_OR_RETURN(pem_der, PemBlock(input, "CERTIFICATE"));
    der = pem_der;
  }
  if (der.empty()) return Fail(Errc::Malformed, "empty certificate");
  const auto* begin = reinterpret_cast<const unsigned char*>(der.data());
  const unsigned char* p = begin;
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())), &X509_free);
  if (!cert || p != begin + der.size()) {
    return Fail(Errc::Malformed, "not one DER certificate");
  }
  ERR_clear_error();
  return cert;
}

Result<std::string> ToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return Fail(Errc::Internal, "cannot write certificate PEM");
  }
  return BioString(bio.get());
}

// Whether the certificate is a CA that may sign certificates (CA:TRUE and keyCertSign).
bool IsSigningCa(X509* ca) {
  const std::uint32_t flags = X509_get_extension_flags(ca);
  if ((flags & (EXFLAG_INVALID | EXFLAG_CRITICAL)) != 0) return false;
  return X509_check_ca(ca) == 1 && (flags & EXFLAG_KUSAGE) != 0 &&
         (X509_get_key_usage(ca) & KU_KEY_CERT_SIGN) != 0;
}

// Fills the device ID and the DNS and IP names of `info` from the SAN and the CN (see
// CertificateInfo::device_id).
Result<void> ReadNames(X509* cert, CertificateInfo& info) {
  std::optional<std::string> from_uri;
  int critical = -1;
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, &critical, nullptr)),
      &GENERAL_NAMES_free);
  if (!names && critical != -1) return Fail(Errc::Malformed, "unreadable subjectAltName");
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* ip = gn->d.iPAddress;
      const int len = ASN1_STRING_length(ip);
      char text[INET6_ADDRSTRLEN] = {0};
      if ((len != 4 && len != 16) ||
          inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(ip), text, sizeof text) ==
              nullptr) {
        return Fail(Errc::Malformed, "SAN IP address is neither IPv4 nor IPv6");
      }
      info.ip_addresses.emplace_back(text);
      continue;
    }
    if (gn->type != GEN_URI && gn->type != GEN_DNS) continue;
    const ASN1_IA5STRING* ia5 = gn->d.ia5;
    const std::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(ia5)),
                                static_cast<std::size_t>(ASN1_STRING_length(ia5)));
    if (gn->type == GEN_DNS) {
      if (IsPrintableAscii(text)) info.dns_names.emplace_back(text);
      continue;
    }
    if (!text.starts_with(kDeviceUriPrefix)) continue;
    if (from_uri) return Fail(Errc::InvalidName, "several device URIs");
    const std::string_view id = text.substr(kDeviceUriPrefix.size());
    if (!IsValidDeviceId(id)) return Fail(Errc::InvalidName, "device URI has an invalid device ID");
    from_uri = std::string(id);
  }
  const std::optional<std::string> cn = SingleCommonName(X509_get_subject_name(cert));
  if (from_uri) {
    if (cn && *cn != *from_uri) return Fail(Errc::InvalidName, "device URI and CN disagree");
    info.device_id = *from_uri;
  } else if (cn && IsValidDeviceId(*cn)) {
    info.device_id = *cn;
  }
  return Ok();
}

Result<CertificateInfo> Describe(X509* cert) {
  const std::uint32_t flags = X509_get_extension_flags(cert);
  if ((flags & EXFLAG_INVALID) != 0) return Fail(Errc::Malformed, "invalid extensions");
  if ((flags & EXFLAG_CRITICAL) != 0) return Fail(Errc::Malformed, "unknown critical extension");
  CertificateInfo info;
  EVP_PKEY* pkey = X509_get0_pubkey(cert);
  if (pkey == nullptr) return Fail(Errc::Malformed, "unreadable public key");
  UPKEEP_ASSIGN_OR_RETURN(info.public_key, PublicKeyOf(pkey));
  UPKEEP_ASSIGN_OR_RETURN(info.serial_hex, SerialHex(cert));
  const auto nb = ReadTime(X509_get0_notBefore(cert));
  const auto na = ReadTime(X509_get0_notAfter(cert));
  if (!nb || !na) return Fail(Errc::Malformed, "unreadable validity");
  info.not_before = *nb;
  info.not_after = *na;
  UPKEEP_ASSIGN_OR_RETURN(info.issuer, NameText(X509_get_issuer_name(cert)));
  UPKEEP_ASSIGN_OR_RETURN(info.subject, NameText(X509_get_subject_name(cert)));
  UPKEEP_ASSIGN_OR_RETURN(info.sha256_fingerprint, Fingerprint(cert));
  UPKEEP_TRY(ReadNames(cert, info));
  ERR_clear_error();
  return info;
}

// Adds an extension written in OpenSSL's configuration syntax (fixed strings only, never input).
Result<void> AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  std::memset(&ctx, 0, sizeof ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value), &X509_EXTENSION_free);
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return Fail(Errc::Internal, std::string("cannot add extension ") + OBJ_nid2sn(nid));
  }
  return Ok();
}

bool PushName(GENERAL_NAMES* names, int type, std::span<const std::uint8_t> value) {
  GENERAL_NAME* gn = GENERAL_NAME_new();
  ASN1_STRING* s = type == GEN_IPADD ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
  if (gn == nullptr || s == nullptr ||
      ASN1_STRING_set(s, value.data(), static_cast<int>(value.size())) != 1) {
    GENERAL_NAME_free(gn);
    ASN1_STRING_free(s);
    return false;
  }
  GENERAL_NAME_set0_value(gn, type, s);
  if (sk_GENERAL_NAME_push(names, gn) <= 0) {
    GENERAL_NAME_free(gn);
    return false;
  }
  return true;
}

struct SanEntry {
  int type;  // GEN_URI, GEN_DNS, GEN_IPADD
  std::vector<std::uint8_t> value;
};

struct EndEntity {
  std::string common_name;
  std::vector<SanEntry> sans;
  const char* extended_key_usage;  // "clientAuth" or "serverAuth"
};

Result<IssuedCertificate> Issue(std::string_view ca_cert_pem, EVP_PKEY* ca_pkey,
                                const SubjectPublicKey& subject_key, const EndEntity& entity,
                                const Validity& validity) {
  UPKEEP_TRY(CheckValidity(validity));
  UPKEEP_ASSIGN_OR_RETURN(X509Ptr ca, DecodeCertificate(ca_cert_pem));
  if (!IsSigningCa(ca.get())) {
    return Fail(Errc::NotACaCertificate, "CA certificate lacks CA:TRUE or keyCertSign");
  }
  if (X509_check_private_key(ca.get(), ca_pkey) != 1) {
    return Fail(Errc::KeyMismatch, "the CA key is not the CA certificate's key");
  }
  UPKEEP_ASSIGN_OR_RETURN(PkeyPtr subject_pkey, DecodePublicKey(subject_key));

  X509Ptr cert(X509_new(), &X509_free);
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return Fail(Errc::Internal, "out of memory");
  }
  IssuedCertificate out;
  UPKEEP_ASSIGN_OR_RETURN(out.serial_hex, SetRandomSerial(cert.get()));
  NamePtr subject(X509_NAME_new(), &X509_NAME_free);
  if (!subject) return Fail(Errc::Internal, "out of memory");
  UPKEEP_TRY(AddCommonName(subject.get(), entity.common_name));
  if (X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get())) != 1 ||
      X509_set_pubkey(cert.get(), subject_pkey.get()) != 1) {
    return Fail(Errc::Internal, "cannot fill certificate");
  }
  UPKEEP_TRY(SetValidity(cert.get(), validity));
  UPKEEP_TRY(AddExtension(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE"));
  UPKEEP_TRY(AddExtension(cert.get(), ca.get(), NID_key_usage, "critical,digitalSignature"));
  UPKEEP_TRY(AddExtension(cert.get(), ca.get(), NID_ext_key_usage, entity.extended_key_usage));
  UPKEEP_TRY(AddExtension(cert.get(), ca.get(), NID_subject_key_identifier, "hash"));
  UPKEEP_TRY(AddExtension(cert.get(), ca.get(), NID_authority_key_identifier, "keyid:always"));
  GeneralNamesPtr names(GENERAL_NAMES_new(), &GENERAL_NAMES_free);
  if (!names) return Fail(Errc::Internal, "out of memory");
  for (const SanEntry& san : entity.sans) {
    if (!PushName(names.get(), san.type, san.value)) return Fail(Errc::Internal, "out of memory");
  }
  if (X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) !=
      1) {
    return Fail(Errc::Internal, "cannot add subjectAltName");
  }
  if (X509_sign(cert.get(), ca_pkey, SigningDigest(ca_pkey)) <= 0) {
    return Fail(Errc::Internal, "cannot sign certificate");
  }
  UPKEEP_ASSIGN_OR_RETURN(out.pem, ToPem(cert.get()));
  UPKEEP_ASSIGN_OR_RETURN(out.sha256_fingerprint, Fingerprint(cert.get()));
  return out;
}

}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("x509", &ErrcName);
  return category;
}

bool IsValidDeviceId(std::string_view device_id) {
  if (device_id.empty() || device_id.size() > kMaxDeviceIdLength) return false;
  // "." and ".." match the pattern but name directories when an ID becomes a path component.
  if (device_id == "." || device_id == "..") return false;
  for (char c : device_id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// TlsKey

struct TlsKeyAccess {
  static EVP_PKEY* Pkey(const TlsKey& key) { return key.handle_->pkey; }

  // Takes ownership of `pkey`.
  static Result<TlsKey> FromOwned(EVP_PKEY* pkey) {
    TlsKey key;
    key.handle_ = std::make_shared<TlsKey::Handle>(pkey);
    UPKEEP_ASSIGN_OR_RETURN(key.public_key_, PublicKeyOf(pkey));
    return key;
  }
};

Result<TlsKey> TlsKey::Generate(TlsKeyType type) {
  EVP_PKEY* pkey = type == TlsKeyType::Ed25519 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")
                                               : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (pkey == nullptr) return Fail(Errc::Internal, "key generation failed");
  return TlsKeyAccess::FromOwned(pkey);
}

Result<TlsKey> TlsKey::FromPem(std::string_view pem) {
  if (pem.size() > kMaxInputBytes) return Fail(Errc::TooLarge, "private key PEM too large");
  if (!LooksLikePem(pem)) return Fail(Errc::Malformed, "not a PEM private key");
  auto bio = MemBio(pem);
  if (!bio) return Fail(Errc::Internal, "out of memory");
  // No passphrase callback: an encrypted key fails instead of prompting on the terminal.
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>(""));
  if (pkey == nullptr) return Fail(Errc::Malformed, "not an unencrypted PEM private key");
  ERR_clear_error();
  return TlsKeyAccess::FromOwned(pkey);
}

Result<std::string> TlsKey::ToPem() const {
  // Secure-memory BIO: its buffer is cleansed when freed.
  BioPtr bio(BIO_new(BIO_s_secmem()), &BIO_free);
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), handle_->pkey, nullptr, nullptr, 0, nullptr,
                                       nullptr) != 1) {
    return Fail(Errc::Internal, "cannot write private key");
  }
  return BioString(bio.get());
}

// ---------------------------------------------------------------------------------------------
// CSR

Result<std::string> CreateCsr(const TlsKey& key, std::string_view subject_common_name) {
  if (!IsValidDeviceId(subject_common_name)) {
    return Fail(Errc::InvalidName,
                "a CSR's common name must be a device ID ([A-Za-z0-9._-]{1,64})");
  }
  EVP_PKEY* pkey = TlsKeyAccess::Pkey(key);
  ReqPtr req(X509_REQ_new(), &X509_REQ_free);
  if (!req || X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1) {
    return Fail(Errc::Internal, "out of memory");
  }
  UPKEEP_TRY(AddCommonName(X509_REQ_get_subject_name(req.get()), subject_common_name));
  if (X509_REQ_set_pubkey(req.get(), pkey) != 1 ||
      X509_REQ_sign(req.get(), pkey, SigningDigest(pkey)) <= 0) {
    return Fail(Errc::Internal, "cannot sign CSR");
  }
  BioPtr bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
    return Fail(Errc::Internal, "cannot write CSR PEM");
  }
  return BioString(bio.get());
}

Result<CsrInfo> ParseCsr(std::string_view pem) {
  if (pem.size() > kMaxInputBytes) return Fail(Errc::TooLarge, "CSR too large");
  UPKEEP_ASSIGN_OR_RETURN(const std::string der, PemBlock(pem, "CERTIFICATE REQUEST"));
  if (der.empty()) return Fail(Errc::Malformed, "empty CSR");
  const auto* begin = reinterpret_cast<const unsigned char*>(der.data());
  const unsigned char* p = begin;
  ReqPtr req(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())), &X509_REQ_free);
  if (!req || p != begin + der.size()) return Fail(Errc::Malformed, "not one DER CSR");
  if (X509_REQ_get_version(req.get()) != X509_REQ_VERSION_1) {
    return Fail(Errc::Malformed, "unknown CSR version");
  }
  EVP_PKEY* pkey = X509_REQ_get0_pubkey(req.get());
  if (pkey == nullptr) return Fail(Errc::Malformed, "unreadable CSR public key");
  CsrInfo info;
  UPKEEP_ASSIGN_OR_RETURN(info.public_key, PublicKeyOf(pkey));
  if (!IsAllowedSignatureNid(X509_REQ_get_signature_nid(req.get())) ||
      X509_REQ_verify(req.get(), pkey) != 1) {
    return Fail(Errc::BadSignature, "the CSR is not signed by its own key");
  }
  const std::optional<std::string> cn = SingleCommonName(X509_REQ_get_subject_name(req.get()));
  if (!cn || !IsValidDeviceId(*cn)) {
    return Fail(Errc::InvalidName, "the CSR needs one CN that is a device ID");
  }
  info.common_name = *cn;
  UPKEEP_ASSIGN_OR_RETURN(info.subject, NameText(X509_REQ_get_subject_name(req.get())));
  ERR_clear_error();
  return info;
}

// ---------------------------------------------------------------------------------------------
// CA and issuing

Result<std::string> CreateCa(const TlsKey& key, std::string_view common_name,
                             const Validity& validity) {
  if (common_name.empty() || common_name.size() > kMaxCaNameLength ||
      !IsPrintableAscii(common_name)) {
    return Fail(Errc::InvalidName, "a CA name is 1 to 64 printable ASCII characters");
  }
  UPKEEP_TRY(CheckValidity(validity));
  EVP_PKEY* pkey = TlsKeyAccess::Pkey(key);
  X509Ptr cert(X509_new(), &X509_free);
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return Fail(Errc::Internal, "out of memory");
  }
  UPKEEP_TRY(SetRandomSerial(cert.get()));
  NamePtr name(X509_NAME_new(), &X509_NAME_free);
  if (!name) return Fail(Errc::Internal, "out of memory");
  UPKEEP_TRY(AddCommonName(name.get(), common_name));
  if (X509_set_subject_name(cert.get(), name.get()) != 1 ||
      X509_set_issuer_name(cert.get(), name.get()) != 1 || X509_set_pubkey(cert.get(), pkey) != 1) {
    return Fail(Errc::Internal, "cannot fill certificate");
  }
  UPKEEP_TRY(SetValidity(cert.get(), validity));
  UPKEEP_TRY(AddExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE"));
  UPKEEP_TRY(AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  UPKEEP_TRY(AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  UPKEEP_TRY(AddExtension(cert.get(), cert.get(), NID_authority_key_identifier, "keyid"));
  if (X509_sign(cert.get(), pkey, SigningDigest(pkey)) <= 0) {
    return Fail(Errc::Internal, "cannot sign certificate");
  }
  return ToPem(cert.get());
}

Result<IssuedCertificate> IssueClientCertificate(std::string_view ca_cert_pem, const TlsKey& ca_key,
                                                 const SubjectPublicKey& device_key,
                                                 std::string_view device_id,
                                                 const Validity& validity) {
  if (!IsValidDeviceId(device_id)) {
    return Fail(Errc::InvalidName, "device IDs are [A-Za-z0-9._-]{1,64}");
  }
  EndEntity entity{std::string(device_id), {}, "clientAuth"};
  const std::string uri = std::string(kDeviceUriPrefix) + std::string(device_id);
  entity.sans.push_back({GEN_URI, std::vector<std::uint8_t>(uri.begin(), uri.end())});
  return Issue(ca_cert_pem, TlsKeyAccess::Pkey(ca_key), device_key, entity, validity);
}

Result<IssuedCertificate> IssueServerCertificate(std::string_view ca_cert_pem, const TlsKey& ca_key,
                                                 const SubjectPublicKey& server_key,
                                                 const ServerNames& names,
                                                 const Validity& validity) {
  EndEntity entity{{}, {}, "serverAuth"};
  for (const std::string& dns : names.dns_names) {
    if (!IsValidDnsName(dns)) return Fail(Errc::InvalidName, "invalid DNS name");
    entity.sans.push_back({GEN_DNS, std::vector<std::uint8_t>(dns.begin(), dns.end())});
    if (entity.common_name.empty()) entity.common_name = dns;
  }
  for (const std::string& ip : names.ip_addresses) {
    auto octets = ParseIp(ip);
    if (!octets) return Fail(Errc::InvalidName, "invalid IP address");
    entity.sans.push_back({GEN_IPADD, std::move(*octets)});
    if (entity.common_name.empty()) entity.common_name = ip;
  }
  if (entity.sans.empty()) return Fail(Errc::InvalidName, "a server certificate needs a name");
  if (entity.common_name.size() > kMaxDeviceIdLength) {
    entity.common_name = "upkeep server";  // CN is at most 64 characters (RFC 5280 ub-common-name)
  }
  return Issue(ca_cert_pem, TlsKeyAccess::Pkey(ca_key), server_key, entity, validity);
}

// ---------------------------------------------------------------------------------------------
// Peer certificates

Result<CertificateInfo> ParseCertificate(std::string_view pem_or_der) {
  UPKEEP_ASSIGN_OR_RETURN(X509Ptr cert, DecodeCertificate(pem_or_der));
  return Describe(cert.get());
}

Result<std::string> CertificateDer(std::string_view pem_or_der) {
  UPKEEP_ASSIGN_OR_RETURN(X509Ptr cert, DecodeCertificate(pem_or_der));
  unsigned char* der = nullptr;
  const int len = i2d_X509(cert.get(), &der);
  if (len <= 0) return Fail(Errc::Internal, "cannot encode certificate");
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

Result<CertificateInfo> VerifyIssuedBy(std::string_view cert_bytes, std::string_view ca_bytes,
                                       std::chrono::sys_seconds at) {
  UPKEEP_ASSIGN_OR_RETURN(X509Ptr ca, DecodeCertificate(ca_bytes));
  UPKEEP_ASSIGN_OR_RETURN(X509Ptr cert, DecodeCertificate(cert_bytes));
  UPKEEP_ASSIGN_OR_RETURN(CertificateInfo info, Describe(cert.get()));
  if (!IsSigningCa(ca.get())) {
    return Fail(Errc::NotACaCertificate, "CA certificate lacks CA:TRUE or keyCertSign");
  }
  // Issuer name, and authority key identifier against the CA's subject key identifier.
  if (X509_check_issued(ca.get(), cert.get()) != X509_V_OK) {
    return Fail(Errc::WrongIssuer, "not issued by this CA");
  }
  EVP_PKEY* ca_pkey = X509_get0_pubkey(ca.get());
  if (ca_pkey == nullptr || !IsAllowedSignatureNid(X509_get_signature_nid(cert.get())) ||
      X509_verify(cert.get(), ca_pkey) != 1) {
    return Fail(Errc::BadSignature, "certificate signature does not verify with the CA key");
  }
  const auto ca_not_before = ReadTime(X509_get0_notBefore(ca.get()));
  const auto ca_not_after = ReadTime(X509_get0_notAfter(ca.get()));
  if (!ca_not_before || !ca_not_after) return Fail(Errc::Malformed, "unreadable CA validity");
  if (at < *ca_not_before) return Fail(Errc::NotYetValid, "the CA certificate is not yet valid");
  if (at > *ca_not_after) return Fail(Errc::Expired, "the CA certificate has expired");
  if (at < info.not_before) return Fail(Errc::NotYetValid, "certificate not yet valid");
  if (at > info.not_after) return Fail(Errc::Expired, "certificate expired");
  const std::uint32_t flags = X509_get_extension_flags(cert.get());
  if (X509_check_ca(cert.get()) != 0) {
    return Fail(Errc::NotAClientCertificate, "a CA certificate is not a client certificate");
  }
  if ((flags & EXFLAG_XKUSAGE) == 0 ||
      (X509_get_extended_key_usage(cert.get()) & XKU_SSL_CLIENT) == 0) {
    return Fail(Errc::NotAClientCertificate, "no clientAuth extended key usage");
  }
  if ((flags & EXFLAG_KUSAGE) != 0 &&
      (X509_get_key_usage(cert.get()) & KU_DIGITAL_SIGNATURE) == 0) {
    return Fail(Errc::NotAClientCertificate, "key usage lacks digitalSignature");
  }
  if (info.device_id.empty()) return Fail(Errc::InvalidName, "the certificate names no device");
  ERR_clear_error();
  return info;
}

}  // namespace upkeep::crypto::x509
