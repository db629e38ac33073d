// libs/crypto: TUF key formats, signatures for each scheme, digests.

#include "upkeep/crypto/crypto.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

#include "upkeep/common/encoding.hpp"

namespace upkeep::crypto {
namespace {

std::span<const std::uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

class SignatureTest : public ::testing::TestWithParam<KeyAlgorithm> {};

// Each scheme signs and verifies through the TUF form of its public key.
TEST_P(SignatureTest, SignsAndVerifiesThroughTufPublicKey) {
  auto key = PrivateKey::Generate(GetParam());
  ASSERT_TRUE(key);
  auto sig = key->Sign(Bytes("message"));
  ASSERT_TRUE(sig);
  const auto& pub = key->public_key();
  auto parsed = PublicKey::FromTuf(pub.keytype(), pub.scheme(), pub.public_value());
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_TRUE(parsed->Verify(Bytes("message"), *sig));
}

TEST_P(SignatureTest, RejectsChangedMessage) {
  auto key = PrivateKey::Generate(GetParam()).value();
  auto sig = key.Sign(Bytes("message")).value();
  EXPECT_ERRC(key.public_key().Verify(Bytes("messagE"), sig), Errc::BadSignature);
}

TEST_P(SignatureTest, RejectsFlippedSignatureBit) {
  auto key = PrivateKey::Generate(GetParam()).value();
  auto sig = key.Sign(Bytes("message")).value();
  sig[sig.size() / 2] ^= 0x01;
  EXPECT_ERRC(key.public_key().Verify(Bytes("message"), sig), Errc::BadSignature);
}

TEST_P(SignatureTest, RejectsSignatureFromAnotherKey) {
  auto key = PrivateKey::Generate(GetParam()).value();
  auto other = PrivateKey::Generate(GetParam()).value();
  auto sig = other.Sign(Bytes("message")).value();
  EXPECT_ERRC(key.public_key().Verify(Bytes("message"), sig), Errc::BadSignature);
}

TEST_P(SignatureTest, RejectsTruncatedEmptyAndGarbageSignatures) {
  auto key = PrivateKey::Generate(GetParam()).value();
  auto sig = key.Sign(Bytes("message")).value();
  sig.resize(sig.size() - 1);
  EXPECT_ERRC(key.public_key().Verify(Bytes("message"), sig), Errc::BadSignature);
  EXPECT_ERRC(key.public_key().Verify(Bytes("message"), {}), Errc::BadSignature);
  std::vector<std::uint8_t> garbage(600, 0x30);
  EXPECT_ERRC(key.public_key().Verify(Bytes("message"), garbage), Errc::BadSignature);
}

TEST_P(SignatureTest, RoundTripsPrivateKeyPem) {
  auto key = PrivateKey::Generate(GetParam()).value();
  auto pem = key.ToPem();
  ASSERT_TRUE(pem);
  auto back = PrivateKey::FromPem(*pem);
  ASSERT_TRUE(back) << back.error().ToString();
  EXPECT_EQ(back->public_key().spki_der(), key.public_key().spki_der());
  EXPECT_TRUE(key.public_key().Verify(Bytes("m"), back->Sign(Bytes("m")).value()));
}

TEST_P(SignatureTest, EncryptsPrivateKeyPemWithPassphrase) {
  auto key = PrivateKey::Generate(GetParam()).value();
  auto pem = key.ToPem("correct horse").value();
  EXPECT_NE(pem.find("ENCRYPTED PRIVATE KEY"), std::string::npos);
  EXPECT_TRUE(PrivateKey::FromPem(pem, "correct horse"));
  EXPECT_ERRC(PrivateKey::FromPem(pem, "wrong"), Errc::BadPassphrase);
  EXPECT_ERRC(PrivateKey::FromPem(pem), Errc::BadPassphrase);
}

INSTANTIATE_TEST_SUITE_P(Schemes, SignatureTest,
                         ::testing::Values(KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256,
                                           KeyAlgorithm::RsaPss));

// RFC 8032 section 7.1, TEST 1: empty message.
TEST(PublicKeyTest, VerifiesRfc8032Ed25519Vector) {
  auto key = PublicKey::FromTuf(
      "ed25519", "ed25519", "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  ASSERT_TRUE(key);
  auto sig = HexDecode(
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b4"
      "6bd25bf5f0595bbe24655141438e7a100b");
  ASSERT_TRUE(sig);
  EXPECT_TRUE(key->Verify({}, *sig));
  EXPECT_ERRC(key->Verify(Bytes("x"), *sig), Errc::BadSignature);
}

TEST(PublicKeyTest, RejectsEd25519KeyWithWrongLength) {
  EXPECT_ERRC(PublicKey::FromTuf("ed25519", "ed25519", "d75a98"), Errc::InvalidKey);
  EXPECT_ERRC(PublicKey::FromTuf("ed25519", "ed25519", std::string(64, 'z')), Errc::InvalidKey);
}

TEST(PublicKeyTest, RejectsMismatchedKeytypeAndScheme) {
  auto key = PrivateKey::Generate(KeyAlgorithm::EcdsaP256).value();
  EXPECT_ERRC(PublicKey::FromTuf("ecdsa", "ed25519", key.public_key().public_value()),
              Errc::UnsupportedKeyType);
  EXPECT_ERRC(PublicKey::FromTuf("rsa", "ecdsa-sha2-nistp256", key.public_key().public_value()),
              Errc::UnsupportedKeyType);
  EXPECT_ERRC(PublicKey::FromTuf("dsa", "dsa", "x"), Errc::UnsupportedKeyType);
}

// A PEM of the wrong algorithm for the declared scheme is not accepted.
TEST(PublicKeyTest, RejectsPemOfWrongAlgorithm) {
  auto rsa = PrivateKey::Generate(KeyAlgorithm::RsaPss).value();
  EXPECT_ERRC(PublicKey::FromTuf("ecdsa", "ecdsa-sha2-nistp256", rsa.public_key().public_value()),
              Errc::InvalidKey);
  auto ec = PrivateKey::Generate(KeyAlgorithm::EcdsaP256).value();
  EXPECT_ERRC(PublicKey::FromTuf("rsa", "rsassa-pss-sha256", ec.public_key().public_value()),
              Errc::InvalidKey);
  EXPECT_ERRC(PublicKey::FromTuf("rsa", "rsassa-pss-sha256", "not a pem"), Errc::InvalidKey);
}

// "All RSA keys MUST be at least 2048 bits" (TUF key formats).
TEST(PublicKeyTest, RejectsRsaKeyShorterThan2048Bits) {
  const char* pem1024 =
      "-----BEGIN PUBLIC KEY-----\n"
      "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC3+xJqKXzVNGcibBb5USeC6lAe\n"
      "gNJ4lkyVvtZ/gIgT0MW4TOSC/hyfz927TdI77iYLd1EsTFMyUyFrG7GMv+AGjQCS\n"
      "IMWGgWpgSQulzFMVRS4pUX3da+UBK18iCDs+8UaF1i+MOo6SfQLxt3saKCLmlPo6\n"
      "7coMGSGd+mAexXRqDQIDAQAB\n"
      "-----END PUBLIC KEY-----\n";
  EXPECT_ERRC(PublicKey::FromTuf("rsa", "rsassa-pss-sha256", pem1024), Errc::WeakKey);
}

// The legacy keytype "ecdsa-sha2-nistp256" names the same key as "ecdsa".
TEST(PublicKeyTest, AcceptsLegacyEcdsaKeytypeForSameKey) {
  auto key = PrivateKey::Generate(KeyAlgorithm::EcdsaP256).value();
  auto legacy = PublicKey::FromTuf("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256",
                                   key.public_key().public_value());
  ASSERT_TRUE(legacy);
  EXPECT_EQ(legacy->spki_der(), key.public_key().spki_der());
  EXPECT_TRUE(legacy->Verify(Bytes("m"), key.Sign(Bytes("m")).value()));
}

TEST(PrivateKeyTest, RejectsGarbagePem) {
  EXPECT_ERRC(PrivateKey::FromPem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
              Errc::InvalidKey);
  EXPECT_ERRC(PrivateKey::FromPem(""), Errc::InvalidKey);
}

TEST(DigestTest, MatchesKnownAnswers) {
  EXPECT_EQ(HexEncode(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HexEncode(Sha256("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HexEncode(Digest(HashAlgorithm::Sha512, "abc")),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c2"
            "3a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
  EXPECT_EQ(DigestSize(HashAlgorithm::Sha512), 64u);
}

TEST(DigestTest, StreamingEqualsOneShot) {
  std::string data(100000, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31);
  Hasher h(HashAlgorithm::Sha256);
  for (std::size_t i = 0; i < data.size(); i += 977) h.Update(std::string_view(data).substr(i, 977));
  EXPECT_EQ(h.Final(), Sha256(data));
}

TEST(DigestTest, NamesOnlySupportedAlgorithms) {
  EXPECT_EQ(HashAlgorithmFromName("sha256"), HashAlgorithm::Sha256);
  EXPECT_EQ(HashAlgorithmFromName("sha512"), HashAlgorithm::Sha512);
  EXPECT_FALSE(HashAlgorithmFromName("md5"));
  EXPECT_FALSE(HashAlgorithmFromName("SHA256"));
}

// RFC 4231 section 4, test cases 1-7 (HMAC-SHA-256; case 5 compares the 128-bit truncation).
TEST(HmacSha256Test, MatchesRfc4231Vectors) {
  struct Case {
    std::string key;
    std::string data;
    const char* hex;
  };
  std::string key4;
  for (char c = 1; c <= 25; ++c) key4.push_back(c);
  const std::string key_aa131(131, '\xaa');
  const Case cases[] = {
      {std::string(20, '\x0b'), "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"Jefe", "what do ya want for nothing?",
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {std::string(20, '\xaa'), std::string(50, '\xdd'),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {key4, std::string(50, '\xcd'),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {key_aa131, "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {key_aa131,
       "This is a test using a larger than block-size key and a larger than block-size data. "
       "The key needs to be hashed before being used by the HMAC algorithm.",
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  for (const Case& c : cases) {
    auto mac = HmacSha256(c.key, c.data);
    ASSERT_TRUE(mac) << mac.error().ToString();
    EXPECT_EQ(HexEncode(*mac), c.hex) << c.data;
  }
  auto truncated = HmacSha256(std::string(20, '\x0c'), "Test With Truncation");
  ASSERT_TRUE(truncated);
  EXPECT_EQ(HexEncode(*truncated).substr(0, 32), "a3b6167473100ee06e0c796c2955552b");
}

// An empty key is a valid HMAC key (padded with zeros), not "no key".
TEST(HmacSha256Test, AcceptsEmptyKeyAndData) {
  auto mac = HmacSha256("", "");
  ASSERT_TRUE(mac) << mac.error().ToString();
  EXPECT_EQ(HexEncode(*mac), "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
  EXPECT_NE(HmacSha256("key", "data").value(), HmacSha256("key", "datA").value());
}

TEST(ConstantTimeEqualTest, ComparesContentAndLength) {
  const std::vector<std::uint8_t> a{1, 2, 3}, b{1, 2, 3}, c{1, 2, 4}, d{1, 2};
  EXPECT_TRUE(ConstantTimeEqual(a, b));
  EXPECT_FALSE(ConstantTimeEqual(a, c));
  EXPECT_FALSE(ConstantTimeEqual(a, d));
  EXPECT_TRUE(ConstantTimeEqual({}, {}));
}

// One key written two ways (openssl ec -pubin -conv_form compressed -pubout).
constexpr const char* kEcdsaUncompressedPub =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAERvFLZLXNCIEbTiUqkexJl4O8Ir1I\n"
    "rUTb+bP3eYBsCCbUlmVLYHa2UNII8sKVGo0Ki5JcRyteruHB+m+BRevw2A==\n"
    "-----END PUBLIC KEY-----\n";
constexpr const char* kEcdsaCompressedPub =
    "-----BEGIN PUBLIC KEY-----\n"
    "MDkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDIgACRvFLZLXNCIEbTiUqkexJl4O8Ir1I\n"
    "rUTb+bP3eYBsCCY=\n"
    "-----END PUBLIC KEY-----\n";

// The same key is one spki_der however its point is encoded: thresholds count by spki_der.
TEST(PublicKeyTest, GivesSameSpkiDerForCompressedAndUncompressedEcdsaPoint) {
  auto uncompressed = PublicKey::FromTuf("ecdsa", "ecdsa-sha2-nistp256", kEcdsaUncompressedPub);
  auto compressed = PublicKey::FromTuf("ecdsa", "ecdsa-sha2-nistp256", kEcdsaCompressedPub);
  ASSERT_TRUE(uncompressed);
  ASSERT_TRUE(compressed);
  EXPECT_EQ(compressed->spki_der(), uncompressed->spki_der());
}

// openssl ecparam -name prime256v1 -param_enc explicit -genkey -noout | openssl ec -pubout
// Explicit curve parameters are refused, even when they spell out P-256.
TEST(PublicKeyTest, RejectsEcdsaKeyWithExplicitCurveParameters) {
  const char* pem =
      "-----BEGIN PUBLIC KEY-----\n"
      "MIIBSzCCAQMGByqGSM49AgEwgfcCAQEwLAYHKoZIzj0BAQIhAP////8AAAABAAAA\n"
      "AAAAAAAAAAAA////////////////MFsEIP////8AAAABAAAAAAAAAAAAAAAA////\n"
      "///////////8BCBaxjXYqjqT57PrvVV2mIa8ZR0GsMxTsPY7zjw+J9JgSwMVAMSd\n"
      "NgiG5wSTamZ44ROdJreBn36QBEEEaxfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5\n"
      "RdiYwpZP40Li/hp/m47n60p8D54WK84zV2sxXs7LtkBoN79R9QIhAP////8AAAAA\n"
      "//////////+85vqtpxeehPO5ysL8YyVRAgEBA0IABNqROTYiTSi654dGCOZfjWba\n"
      "jXAjGIHpmsjuHFy8PWQjbJyJE9TSrfZKw/KLA7HOn3zSK0KErFL1j4b7h6E8ZWE=\n"
      "-----END PUBLIC KEY-----\n";
  EXPECT_ERRC(PublicKey::FromTuf("ecdsa", "ecdsa-sha2-nistp256", pem), Errc::InvalidKey);
}

// openssl genpkey -algorithm RSA-PSS -pkeyopt rsa_keygen_bits:2048 | openssl pkey -pubout
// The id-RSASSA-PSS identifier would give a second spki_der for an rsaEncryption key.
TEST(PublicKeyTest, RejectsRsaKeyWithPssAlgorithmIdentifier) {
  const char* pem =
      "-----BEGIN PUBLIC KEY-----\n"
      "MIIBIDALBgkqhkiG9w0BAQoDggEPADCCAQoCggEBAKA3olyN5SJsJrh/I/1xPrbG\n"
      "7skZLf+3XeZ5a8Pu6DQysu2GxpTRCMK8mfeu+g5te4hOn/boa2jiH/Ba6ZUgsypb\n"
      "YhdnD82iIgbacuElvq6lf8r4C7nniskVeEXL13su500qe4sWub6MtH9nTWXfCC68\n"
      "yUbVxQ2/1h+5JCo02pfm08+cOK+mHHPYyGNVpw+VeT6aliEMw6ESyT8WMZ/VFbMV\n"
      "6GvxhM6ELHqsmPPotVaZnAM9iB25RT9Meu1pKoyNJp1h/6Gif6TUVYgx++CRlXgj\n"
      "LdoPkLpRcBB0fiOcTaKH9xVzPzwB9kqI+VVtjuNHw22g49vFjkkz4dsayIk6drkC\n"
      "AwEAAQ==\n"
      "-----END PUBLIC KEY-----\n";
  EXPECT_ERRC(PublicKey::FromTuf("rsa", "rsassa-pss-sha256", pem), Errc::InvalidKey);
}

}  // namespace
}  // namespace upkeep::crypto
