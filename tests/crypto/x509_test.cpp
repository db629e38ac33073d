// libs/crypto x509: TLS identity keys, CSRs, the device CA, client and server certificates, and
// checking a peer certificate. Fixtures from an independent implementation (pyca/cryptography)
// come from tests/testdata/x509/gen_fixtures.py.

#include "upkeep/crypto/x509.hpp"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <string>

#include "test_util.hpp"
#include "upkeep/crypto/crypto.hpp"

namespace upkeep::crypto::x509 {
namespace {

using std::chrono::days;
using std::chrono::seconds;
using std::chrono::sys_days;
using std::chrono::sys_seconds;

const sys_seconds kStart = sys_days{std::chrono::year{2026} / 1 / 1};
const Validity kCaValidity{kStart, kStart + days{3650}};
const Validity kDeviceValidity{kStart, kStart + days{365}};
const sys_seconds kNow = kStart + days{30};

std::string Fixture(const std::string& name) {
  return upkeep::testing::ReadFileOrEmpty(std::string(UPKEEP_TESTDATA_DIR) + "/x509/" + name);
}

constexpr std::string_view kBase64 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64Decode(std::string_view in) {
  std::string out;
  unsigned int acc = 0;
  int bits = 0;
  for (char c : in) {
    const auto pos = kBase64.find(c);
    if (pos == std::string_view::npos) continue;  // '=', newlines
    acc = (acc << 6) | static_cast<unsigned int>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::string Base64Encode(std::string_view in) {
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const auto n = (static_cast<unsigned int>(static_cast<unsigned char>(in[i])) << 16) |
                   (static_cast<unsigned int>(static_cast<unsigned char>(in[i + 1])) << 8) |
                   static_cast<unsigned int>(static_cast<unsigned char>(in[i + 2]));
    for (int shift = 18; shift >= 0; shift -= 6) out.push_back(kBase64[(n >> shift) & 63]);
  }
  const std::size_t rest = in.size() - i;
  if (rest > 0) {
    unsigned int n = static_cast<unsigned int>(static_cast<unsigned char>(in[i])) << 16;
    if (rest == 2) n |= static_cast<unsigned int>(static_cast<unsigned char>(in[i + 1])) << 8;
    out.push_back(kBase64[(n >> 18) & 63]);
    out.push_back(kBase64[(n >> 12) & 63]);
    out.push_back(rest == 2 ? kBase64[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string CsrDer(const std::string& pem) {
  const auto begin = pem.find('\n') + 1;
  const auto end = pem.find("-----END");
  return Base64Decode(pem.substr(begin, end - begin));
}

std::string CsrPem(const std::string& der) {
  std::string body = Base64Encode(der);
  std::string pem = "-----BEGIN CERTIFICATE REQUEST-----\n";
  for (std::size_t i = 0; i < body.size(); i += 64) pem += body.substr(i, 64) + "\n";
  return pem + "-----END CERTIFICATE REQUEST-----\n";
}

// Replaces every occurrence of `from` with `to` (same length).
std::string ReplaceAll(std::string s, std::string_view from, std::string_view to) {
  for (auto pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

// A device CA created once for the whole suite (key generation is the slow part).
class X509Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ca_key_ = new TlsKey(TlsKey::Generate().value());
    ca_pem_ = new std::string(CreateCa(*ca_key_, "upkeep device CA", kCaValidity).value());
    device_key_ = new TlsKey(TlsKey::Generate().value());
  }
  static void TearDownTestSuite() {
    delete ca_key_;
    delete ca_pem_;
    delete device_key_;
  }

  static IssuedCertificate IssueFor(std::string_view device_id,
                                    const Validity& validity = kDeviceValidity) {
    return IssueClientCertificate(*ca_pem_, *ca_key_, device_key_->public_key(), device_id,
                                  validity)
        .value();
  }

  static TlsKey* ca_key_;
  static std::string* ca_pem_;
  static TlsKey* device_key_;
};

TlsKey* X509Test::ca_key_ = nullptr;
std::string* X509Test::ca_pem_ = nullptr;
TlsKey* X509Test::device_key_ = nullptr;

// ---------------------------------------------------------------------------------------------
// Keys

TEST_F(X509Test, KeyPemRoundTripKeepsTheKey) {
  for (TlsKeyType type : {TlsKeyType::EcdsaP256, TlsKeyType::Ed25519}) {
    auto key = TlsKey::Generate(type);
    ASSERT_TRUE(key) << key.error().ToString();
    auto pem = key->ToPem();
    ASSERT_TRUE(pem);
    EXPECT_TRUE(pem->starts_with("-----BEGIN PRIVATE KEY-----\n"));
    auto again = TlsKey::FromPem(*pem);
    ASSERT_TRUE(again) << again.error().ToString();
    EXPECT_EQ(again->type(), type);
    EXPECT_EQ(again->public_key(), key->public_key());
  }
}

// An encrypted key is refused (no terminal prompt), as are garbage and oversized input.
TEST_F(X509Test, KeyFromPemRejectsEncryptedGarbageAndHugeInput) {
  auto key = crypto::PrivateKey::Generate(crypto::KeyAlgorithm::EcdsaP256).value();
  EXPECT_ERRC(TlsKey::FromPem(key.ToPem("passphrase").value()), Errc::Malformed);
  EXPECT_ERRC(TlsKey::FromPem("garbage"), Errc::Malformed);
  EXPECT_ERRC(TlsKey::FromPem(""), Errc::Malformed);
  EXPECT_ERRC(TlsKey::FromPem(std::string(kMaxInputBytes + 1, 'A')), Errc::TooLarge);
}

// Only P-256 and Ed25519 keys make TLS identities.
TEST_F(X509Test, KeyFromPemRejectsRsaKey) {
  EXPECT_ERRC(TlsKey::FromPem(Fixture("rsa2048.key.pem")), Errc::UnsupportedKeyType);
}

// ---------------------------------------------------------------------------------------------
// CSR

TEST_F(X509Test, CsrRoundTripReturnsNameAndKey) {
  for (TlsKeyType type : {TlsKeyType::EcdsaP256, TlsKeyType::Ed25519}) {
    auto key = TlsKey::Generate(type).value();
    auto pem = CreateCsr(key, "device-1");
    ASSERT_TRUE(pem) << pem.error().ToString();
    auto info = ParseCsr(*pem);
    ASSERT_TRUE(info) << info.error().ToString();
    EXPECT_EQ(info->common_name, "device-1");
    EXPECT_EQ(info->subject, "CN=device-1");
    EXPECT_EQ(info->public_key, key.public_key());
  }
}

TEST_F(X509Test, AcceptsCsrsFromAnIndependentImplementation) {
  auto p256 = ParseCsr(Fixture("p256.csr.pem"));
  ASSERT_TRUE(p256) << p256.error().ToString();
  EXPECT_EQ(p256->common_name, "device-p256");
  EXPECT_EQ(p256->public_key.type, TlsKeyType::EcdsaP256);
  auto ed = ParseCsr(Fixture("ed25519.csr.pem"));
  ASSERT_TRUE(ed) << ed.error().ToString();
  EXPECT_EQ(ed->common_name, "device-ed25519");
  EXPECT_EQ(ed->public_key.type, TlsKeyType::Ed25519);
}

// A CSR whose signature bytes were altered proves nothing and is refused.
TEST_F(X509Test, RejectsCsrWithTamperedSignature) {
  std::string der = CsrDer(CreateCsr(*device_key_, "device-1").value());
  der[der.size() - 2] = static_cast<char>(der[der.size() - 2] ^ 0x01);
  EXPECT_ERRC(ParseCsr(CsrPem(der)), Errc::BadSignature);
}

// A CSR whose subject was changed after signing (device-1 → device-2) is refused.
TEST_F(X509Test, RejectsCsrWithSubjectChangedAfterSigning) {
  const std::string der = CsrDer(CreateCsr(*device_key_, "device-1").value());
  ASSERT_TRUE(ParseCsr(CsrPem(der)));  // the PEM helpers round-trip
  EXPECT_ERRC(ParseCsr(CsrPem(ReplaceAll(der, "device-1", "device-2"))), Errc::BadSignature);
}

// Keys other than P-256 (named curve) and Ed25519 are refused, however well signed.
TEST_F(X509Test, RejectsCsrWithKeyOtherThanNamedP256OrEd25519) {
  EXPECT_ERRC(ParseCsr(Fixture("rsa2048.csr.pem")), Errc::UnsupportedKeyType);
  EXPECT_ERRC(ParseCsr(Fixture("p384.csr.pem")), Errc::UnsupportedKeyType);
  EXPECT_ERRC(ParseCsr(Fixture("p256_explicit.csr.pem")), Errc::UnsupportedKeyType);
}

// A CN in invalid UTF-8 does not decode; a CN outside [A-Za-z0-9._-] is not a device ID.
TEST_F(X509Test, RejectsCsrWhoseCommonNameIsNotADeviceId) {
  EXPECT_ERRC(ParseCsr(Fixture("bad_utf8_cn.csr.pem")), Errc::Malformed);
  EXPECT_ERRC(ParseCsr(Fixture("unicode_cn.csr.pem")), Errc::InvalidName);
  EXPECT_ERRC(ParseCsr(Fixture("control_cn.csr.pem")), Errc::InvalidName);
}

// Device IDs are [A-Za-z0-9._-]{1,64}: invalid UTF-8, spaces, slashes, NULs, ".." are refused.
TEST_F(X509Test, CreateCsrRejectsNamesThatAreNotDeviceIds) {
  for (std::string_view bad :
       {std::string_view("dev\xff"), std::string_view("dev\xc3"), std::string_view(""),
        std::string_view("dev ice"), std::string_view("a/b"), std::string_view(".."),
        std::string_view("dev\0ice", 7), std::string_view("d\xc3\xa9vice")}) {
    EXPECT_ERRC(CreateCsr(*device_key_, bad), Errc::InvalidName);
  }
  EXPECT_ERRC(CreateCsr(*device_key_, std::string(65, 'a')), Errc::InvalidName);
  EXPECT_TRUE(CreateCsr(*device_key_, std::string(64, 'a')));
}

// Garbage, truncation, a second block, the wrong block type and oversized input are refused.
TEST_F(X509Test, ParseCsrRejectsGarbageTruncatedAndHugeInput) {
  const std::string good = CreateCsr(*device_key_, "device-1").value();
  EXPECT_ERRC(ParseCsr(""), Errc::Malformed);
  EXPECT_ERRC(ParseCsr("garbage"), Errc::Malformed);
  EXPECT_ERRC(ParseCsr(good.substr(0, good.size() / 2)), Errc::Malformed);
  EXPECT_ERRC(ParseCsr(good + good), Errc::Malformed);
  EXPECT_ERRC(ParseCsr(good + "trailing"), Errc::Malformed);
  EXPECT_ERRC(ParseCsr(*ca_pem_), Errc::Malformed);
  EXPECT_ERRC(ParseCsr(CsrDer(good)), Errc::Malformed);  // DER is not taken here
  const std::string der = CsrDer(good);
  EXPECT_ERRC(ParseCsr(CsrPem(der.substr(0, der.size() - 5))), Errc::Malformed);
  std::string huge = good;
  huge.insert(0, kMaxInputBytes, '\n');
  EXPECT_ERRC(ParseCsr(huge), Errc::TooLarge);
}

// ---------------------------------------------------------------------------------------------
// CA and issuing

TEST_F(X509Test, CaCertificateIsSelfIssued) {
  auto info = ParseCertificate(*ca_pem_);
  ASSERT_TRUE(info) << info.error().ToString();
  EXPECT_EQ(info->subject, "CN=upkeep device CA");
  EXPECT_EQ(info->issuer, "CN=upkeep device CA");
  EXPECT_EQ(info->not_before, kCaValidity.not_before);
  EXPECT_EQ(info->not_after, kCaValidity.not_after);
  EXPECT_EQ(info->public_key, ca_key_->public_key());
  EXPECT_EQ(info->device_id, "");  // the CN is not a device ID
}

// The whole enrolment path: CSR on the device, issuing on the server, checking the peer.
TEST_F(X509Test, RoundTripCsrIssueParseVerify) {
  const auto csr = ParseCsr(CreateCsr(*device_key_, "device-1").value()).value();
  auto issued =
      IssueClientCertificate(*ca_pem_, *ca_key_, csr.public_key, csr.common_name, kDeviceValidity);
  ASSERT_TRUE(issued) << issued.error().ToString();
  EXPECT_LE(issued->serial_hex.size(), 32u);
  EXPECT_GE(issued->serial_hex.size(), 2u);
  EXPECT_EQ(issued->sha256_fingerprint.size(), 64u);

  auto info = VerifyIssuedBy(issued->pem, *ca_pem_, kNow);
  ASSERT_TRUE(info) << info.error().ToString();
  EXPECT_EQ(info->device_id, "device-1");
  EXPECT_EQ(info->serial_hex, issued->serial_hex);
  EXPECT_EQ(info->sha256_fingerprint, issued->sha256_fingerprint);
  EXPECT_EQ(info->not_before, kDeviceValidity.not_before);
  EXPECT_EQ(info->not_after, kDeviceValidity.not_after);
  EXPECT_EQ(info->issuer, "CN=upkeep device CA");
  EXPECT_EQ(info->subject, "CN=device-1");
  EXPECT_EQ(info->public_key, device_key_->public_key());

  // The DER form, as a TLS stack hands over the peer certificate, gives the same answer.
  const std::string der = CertificateDer(issued->pem).value();
  auto from_der = VerifyIssuedBy(der, CertificateDer(*ca_pem_).value(), kNow);
  ASSERT_TRUE(from_der) << from_der.error().ToString();
  EXPECT_EQ(from_der->sha256_fingerprint, issued->sha256_fingerprint);
}

TEST_F(X509Test, Ed25519DeviceKeyAndCaWork) {
  auto ca_key = TlsKey::Generate(TlsKeyType::Ed25519).value();
  auto ca = CreateCa(ca_key, "ed CA", kCaValidity).value();
  auto device = TlsKey::Generate(TlsKeyType::Ed25519).value();
  auto issued = IssueClientCertificate(ca, ca_key, device.public_key(), "dev.1", kDeviceValidity);
  ASSERT_TRUE(issued) << issued.error().ToString();
  auto info = VerifyIssuedBy(issued->pem, ca, kNow);
  ASSERT_TRUE(info) << info.error().ToString();
  EXPECT_EQ(info->device_id, "dev.1");
}

// Serials are random (unguessable, never reused), so blocking one blocks exactly one certificate.
TEST_F(X509Test, IssuesDistinctRandomSerials) {
  EXPECT_NE(IssueFor("device-1").serial_hex, IssueFor("device-1").serial_hex);
}

// A device ID outside [A-Za-z0-9._-]{1,64} is never written into a certificate.
TEST_F(X509Test, IssueRejectsInvalidDeviceIds) {
  for (std::string_view bad : {std::string_view("dev\xc3"), std::string_view(""),
                               std::string_view("a b"), std::string_view("a,URI:x")}) {
    EXPECT_ERRC(
        IssueClientCertificate(*ca_pem_, *ca_key_, device_key_->public_key(), bad, kDeviceValidity),
        Errc::InvalidName);
  }
  EXPECT_ERRC(IssueClientCertificate(*ca_pem_, *ca_key_, device_key_->public_key(),
                                     std::string(65, 'a'), kDeviceValidity),
              Errc::InvalidName);
}

// Only a CA certificate with its own key issues; a client certificate cannot act as a CA.
TEST_F(X509Test, IssueRejectsWrongCaOrKeyOrValidity) {
  const auto pub = device_key_->public_key();
  const std::string client = IssueFor("device-1").pem;
  EXPECT_ERRC(IssueClientCertificate(client, *device_key_, pub, "device-2", kDeviceValidity),
              Errc::NotACaCertificate);
  EXPECT_ERRC(IssueClientCertificate(*ca_pem_, *device_key_, pub, "device-2", kDeviceValidity),
              Errc::KeyMismatch);
  EXPECT_ERRC(IssueClientCertificate(*ca_pem_, *ca_key_, pub, "device-2", Validity{kStart, kStart}),
              Errc::InvalidArgument);
  EXPECT_ERRC(IssueClientCertificate("garbage", *ca_key_, pub, "device-2", kDeviceValidity),
              Errc::Malformed);
}

// A subject key of another type than declared, or not P-256/Ed25519, is refused.
TEST_F(X509Test, IssueRejectsUnsupportedSubjectKey) {
  const std::string rsa = Fixture("rsa2048.spki.der");
  ASSERT_FALSE(rsa.empty());
  SubjectPublicKey key{TlsKeyType::EcdsaP256, std::vector<std::uint8_t>(rsa.begin(), rsa.end())};
  EXPECT_ERRC(IssueClientCertificate(*ca_pem_, *ca_key_, key, "device-1", kDeviceValidity),
              Errc::UnsupportedKeyType);
  SubjectPublicKey wrong_type{TlsKeyType::Ed25519, device_key_->public_key().spki_der};
  EXPECT_ERRC(IssueClientCertificate(*ca_pem_, *ca_key_, wrong_type, "device-1", kDeviceValidity),
              Errc::UnsupportedKeyType);
  SubjectPublicKey garbage{TlsKeyType::EcdsaP256, {0x30, 0x03, 0x01}};
  EXPECT_ERRC(IssueClientCertificate(*ca_pem_, *ca_key_, garbage, "device-1", kDeviceValidity),
              Errc::Malformed);
}

TEST_F(X509Test, ServerCertificateCarriesDnsAndIpNames) {
  auto server_key = TlsKey::Generate().value();
  auto issued = IssueServerCertificate(*ca_pem_, *ca_key_, server_key.public_key(),
                                       {{"localhost"}, {"127.0.0.1", "::1"}}, kDeviceValidity);
  ASSERT_TRUE(issued) << issued.error().ToString();
  auto info = ParseCertificate(issued->pem);
  ASSERT_TRUE(info) << info.error().ToString();
  EXPECT_EQ(info->dns_names, std::vector<std::string>{"localhost"});
  EXPECT_EQ(info->ip_addresses, (std::vector<std::string>{"127.0.0.1", "::1"}));
  EXPECT_EQ(info->subject, "CN=localhost");
}

// Names that are not DNS names or IP addresses never reach a server certificate.
TEST_F(X509Test, ServerCertificateRejectsInvalidNames) {
  const auto pub = device_key_->public_key();
  EXPECT_ERRC(IssueServerCertificate(*ca_pem_, *ca_key_, pub, {}, kDeviceValidity),
              Errc::InvalidName);
  EXPECT_ERRC(IssueServerCertificate(*ca_pem_, *ca_key_, pub, {{"bad name"}, {}}, kDeviceValidity),
              Errc::InvalidName);
  EXPECT_ERRC(
      IssueServerCertificate(*ca_pem_, *ca_key_, pub, {{"-x.example"}, {}}, kDeviceValidity),
      Errc::InvalidName);
  EXPECT_ERRC(
      IssueServerCertificate(*ca_pem_, *ca_key_, pub, {{}, {"127.0.0.1x"}}, kDeviceValidity),
      Errc::InvalidName);
  EXPECT_ERRC(IssueServerCertificate(*ca_pem_, *ca_key_, pub, {{}, {"1.2.3"}}, kDeviceValidity),
              Errc::InvalidName);
}

// ---------------------------------------------------------------------------------------------
// Verifying a peer certificate

// A certificate from another CA is refused, even when that CA has the same name.
TEST_F(X509Test, RejectsCertificateIssuedByAnotherCa) {
  auto other_key = TlsKey::Generate().value();
  auto same_name = CreateCa(other_key, "upkeep device CA", kCaValidity).value();
  auto other_name = CreateCa(other_key, "other CA", kCaValidity).value();
  const std::string cert = IssueFor("device-1").pem;
  EXPECT_ERRC(VerifyIssuedBy(cert, same_name, kNow), Errc::WrongIssuer);
  EXPECT_ERRC(VerifyIssuedBy(cert, other_name, kNow), Errc::WrongIssuer);
}

// A certificate is refused after not_after (inclusive bound) and before not_before.
TEST_F(X509Test, RejectsExpiredAndNotYetValidCertificates) {
  const std::string cert = IssueFor("device-1").pem;
  EXPECT_TRUE(VerifyIssuedBy(cert, *ca_pem_, kDeviceValidity.not_after));
  EXPECT_TRUE(VerifyIssuedBy(cert, *ca_pem_, kDeviceValidity.not_before));
  EXPECT_ERRC(VerifyIssuedBy(cert, *ca_pem_, kDeviceValidity.not_after + seconds{1}),
              Errc::Expired);
  EXPECT_ERRC(VerifyIssuedBy(cert, *ca_pem_, kDeviceValidity.not_before - seconds{1}),
              Errc::NotYetValid);
}

// A certificate is refused once its CA has expired, whatever its own validity.
TEST_F(X509Test, RejectsCertificateOfExpiredCa) {
  auto key = TlsKey::Generate().value();
  auto ca = CreateCa(key, "short CA", Validity{kStart, kStart + days{10}}).value();
  auto cert =
      IssueClientCertificate(ca, key, device_key_->public_key(), "device-1", kDeviceValidity)
          .value();
  EXPECT_ERRC(VerifyIssuedBy(cert.pem, ca, kNow), Errc::Expired);
}

// Changed signature bytes, or a changed device ID, break the CA's signature.
TEST_F(X509Test, RejectsCertificateWithTamperedSignatureOrContent) {
  const std::string der = CertificateDer(IssueFor("device-1").pem).value();
  std::string bad_sig = der;
  bad_sig[bad_sig.size() - 2] = static_cast<char>(bad_sig[bad_sig.size() - 2] ^ 0x01);
  EXPECT_ERRC(VerifyIssuedBy(bad_sig, *ca_pem_, kNow), Errc::BadSignature);
  const std::string renamed = ReplaceAll(der, "device-1", "device-2");
  ASSERT_NE(renamed, der);
  EXPECT_EQ(ParseCertificate(renamed).value().device_id, "device-2");
  EXPECT_ERRC(VerifyIssuedBy(renamed, *ca_pem_, kNow), Errc::BadSignature);
}

// The server's own certificate (serverAuth) does not authenticate a device.
TEST_F(X509Test, RejectsServerCertificatePresentedAsClient) {
  auto issued = IssueServerCertificate(*ca_pem_, *ca_key_, device_key_->public_key(),
                                       {{"device-1"}, {"127.0.0.1"}}, kDeviceValidity)
                    .value();
  EXPECT_ERRC(VerifyIssuedBy(issued.pem, *ca_pem_, kNow), Errc::NotAClientCertificate);
}

// The CA's own certificate does not authenticate a device.
TEST_F(X509Test, RejectsCaCertificatePresentedAsClient) {
  EXPECT_ERRC(VerifyIssuedBy(*ca_pem_, *ca_pem_, kNow), Errc::NotAClientCertificate);
}

// Verifying against a non-CA certificate as the issuer is refused.
TEST_F(X509Test, RejectsClientCertificateUsedAsCa) {
  const std::string cert = IssueFor("device-1").pem;
  EXPECT_ERRC(VerifyIssuedBy(cert, cert, kNow), Errc::NotACaCertificate);
}

// Garbage, truncated, chained, mislabelled and oversized certificates (PEM and DER) are refused.
TEST_F(X509Test, ParseCertificateRejectsGarbageTruncatedAndHugeInput) {
  const std::string pem = IssueFor("device-1").pem;
  const std::string der = CertificateDer(pem).value();
  EXPECT_ERRC(ParseCertificate(""), Errc::Malformed);
  EXPECT_ERRC(ParseCertificate("garbage"), Errc::Malformed);
  EXPECT_ERRC(ParseCertificate(pem.substr(0, pem.size() / 2)), Errc::Malformed);
  EXPECT_ERRC(ParseCertificate(pem + *ca_pem_), Errc::Malformed);
  EXPECT_ERRC(ParseCertificate(ReplaceAll(pem, "CERTIFICATE", "X509 CRL   ")), Errc::Malformed);
  EXPECT_ERRC(ParseCertificate(der.substr(0, der.size() - 1)), Errc::Malformed);
  EXPECT_ERRC(ParseCertificate(der.substr(0, 10)), Errc::Malformed);
  EXPECT_ERRC(ParseCertificate(der + "x"), Errc::Malformed);
  EXPECT_ERRC(ParseCertificate(std::string(kMaxInputBytes + 1, '\x30')), Errc::TooLarge);
  std::string huge_pem = pem;
  huge_pem.append(kMaxInputBytes, '\n');
  EXPECT_ERRC(ParseCertificate(huge_pem), Errc::TooLarge);
  EXPECT_ERRC(VerifyIssuedBy("garbage", *ca_pem_, kNow), Errc::Malformed);
  EXPECT_ERRC(VerifyIssuedBy(pem, "garbage", kNow), Errc::Malformed);
}

TEST_F(X509Test, AcceptsClientCertificateFromAnIndependentImplementation) {
  const sys_seconds at = sys_days{std::chrono::year{2027} / 1 / 1};
  for (const std::string& cert : {Fixture("pyca_client.pem"), Fixture("pyca_client.der")}) {
    auto info = VerifyIssuedBy(cert, Fixture("pyca_ca.pem"), at);
    ASSERT_TRUE(info) << info.error().ToString();
    EXPECT_EQ(info->device_id, "device-py");
    EXPECT_EQ(info->issuer, "CN=pyca device CA");
    EXPECT_EQ(info->not_before, kStart);
    EXPECT_ERRC(VerifyIssuedBy(cert, *ca_pem_, at), Errc::WrongIssuer);
  }
}

// A certificate must name one device unambiguously: one device URI, a valid ID, equal to the CN.
TEST_F(X509Test, RejectsCertificateNamingDevicesAmbiguously) {
  EXPECT_ERRC(ParseCertificate(Fixture("pyca_uri_cn_mismatch.pem")), Errc::InvalidName);
  EXPECT_ERRC(ParseCertificate(Fixture("pyca_two_device_uris.pem")), Errc::InvalidName);
  EXPECT_ERRC(ParseCertificate(Fixture("pyca_bad_uri_id.pem")), Errc::InvalidName);
  EXPECT_ERRC(VerifyIssuedBy(Fixture("pyca_uri_cn_mismatch.pem"), Fixture("pyca_ca.pem"), kNow),
              Errc::InvalidName);
}

// Without the clientAuth extended key usage a certificate from the right CA is not a client's.
TEST_F(X509Test, RejectsCertificateWithoutClientAuthUsage) {
  EXPECT_ERRC(VerifyIssuedBy(Fixture("pyca_no_eku.pem"), Fixture("pyca_ca.pem"), kNow),
              Errc::NotAClientCertificate);
}

// A critical extension upkeep does not understand makes the certificate unusable (RFC 5280).
TEST_F(X509Test, RejectsCertificateWithUnknownCriticalExtension) {
  EXPECT_ERRC(ParseCertificate(Fixture("pyca_unknown_critical.pem")), Errc::Malformed);
  EXPECT_ERRC(VerifyIssuedBy(Fixture("pyca_unknown_critical.pem"), Fixture("pyca_ca.pem"), kNow),
              Errc::Malformed);
}

}  // namespace
}  // namespace upkeep::crypto::x509
