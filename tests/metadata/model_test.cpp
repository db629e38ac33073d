// Parsing of metadata from untrusted bytes: structure, types and value ranges
// (tuf-spec "Document formats"), delegation path matching and succinct hash bins.

#include "upkeep/metadata/model.hpp"

#include <gtest/gtest.h>

#include "repository_simulator.hpp"
#include "test_util.hpp"
#include "upkeep/common/encoding.hpp"

namespace upkeep::metadata {
namespace {

using testing::RepositorySimulator;

template <typename T>
T Must(Result<T> r) {
  if (!r) ADD_FAILURE() << r.error().ToString();
  return std::move(r).value();
}

class ModelTest : public ::testing::Test {
 protected:
  // A good signed root envelope to mutate.
  Json RootDoc() { return Json::parse(RepositorySimulator::Sign(sim_.root, sim_.signers["root"])); }
  Json TargetsDoc() {
    return Json::parse(RepositorySimulator::Sign(sim_.targets, sim_.signers["targets"]));
  }
  RepositorySimulator sim_{*ParseDateTime("2026-01-01T00:00:00Z")};
};

TEST_F(ModelTest, ParsesGoodRoot) {
  auto root = ParseRoot(RootDoc().dump());
  ASSERT_TRUE(root) << root.error().ToString();
  EXPECT_EQ(root->version, 1u);
  EXPECT_EQ(root->body.roles.size(), 4u);
  EXPECT_EQ(root->body.keys.size(), 4u);
  EXPECT_TRUE(root->body.ConsistentSnapshot());
}

// "Object format": both "signed" and "signatures" are required.
TEST_F(ModelTest, RejectsEnvelopeWithoutSignatures) {
  auto doc = RootDoc();
  doc.erase("signatures");
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::InvalidMetadata);
}

TEST_F(ModelTest, RejectsNonObjectDocument) {
  EXPECT_ERRC(ParseRoot("[]"), Errc::InvalidMetadata);
  EXPECT_ERRC(ParseRoot("\"root\""), Errc::InvalidMetadata);
}

// "_type" must name the role being parsed.
TEST_F(ModelTest, RejectsWrongType) {
  auto doc = RootDoc();
  doc["signed"]["_type"] = "targets";
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::WrongType);
}

// spec_version: major version 1 only; "1.0" and "1.0.31" both accepted.
TEST_F(ModelTest, ChecksSpecVersionMajor) {
  auto doc = RootDoc();
  for (const char* ok : {"1.0", "1.0.31", "1.20.0"}) {
    doc["signed"]["spec_version"] = ok;
    EXPECT_TRUE(ParseRoot(doc.dump())) << ok;
  }
  for (const char* bad : {"2.0.0", "0.9", "1", "1.0.0.0", "1.x", "", "v1.0"}) {
    doc["signed"]["spec_version"] = bad;
    EXPECT_ERRC(ParseRoot(doc.dump()), Errc::UnsupportedSpecVersion);
  }
}

// "version" is an integer >= 1; strings, floats, zero and negatives are rejected.
TEST_F(ModelTest, RejectsInvalidVersion) {
  auto doc = RootDoc();
  for (const Json& bad : {Json(0), Json(-1), Json("1"), Json(true)}) {
    doc["signed"]["version"] = bad;
    EXPECT_ERRC(ParseRoot(doc.dump()), Errc::InvalidMetadata);
  }
  doc["signed"]["version"] = 1.5;
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::InvalidMetadata);
}

// "Date-time": exactly YYYY-MM-DDTHH:MM:SSZ in UTC.
TEST_F(ModelTest, ParsesOnlyStrictUtcDateTimes) {
  EXPECT_EQ(FormatDateTime(*ParseDateTime("1985-10-21T01:21:00Z")), "1985-10-21T01:21:00Z");
  for (const char* bad :
       {"1985-10-21T01:21:00", "1985-10-21 01:21:00Z", "1985-10-21T01:21:00+00:00",
        "1985-13-21T01:21:00Z", "1985-02-30T01:21:00Z", "85-10-21T01:21:00Z",
        "1985-10-21T24:00:00Z", "1985-10-21T01:21:00.5Z"}) {
    EXPECT_FALSE(ParseDateTime(bad)) << bad;
  }
  auto doc = RootDoc();
  doc["signed"]["expires"] = "tomorrow";
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::InvalidMetadata);
}

// Root "roles" must define exactly the four top-level roles.
TEST_F(ModelTest, RejectsRootMissingATopLevelRole) {
  auto doc = RootDoc();
  doc["signed"]["roles"].erase("snapshot");
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::InvalidMetadata);
  doc = RootDoc();
  doc["signed"]["roles"]["mirror-x"] = doc["signed"]["roles"]["root"];
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::InvalidMetadata);
}

// THRESHOLD must be a positive integer.
TEST_F(ModelTest, RejectsZeroThreshold) {
  auto doc = RootDoc();
  doc["signed"]["roles"]["timestamp"]["threshold"] = 0;
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::InvalidMetadata);
}

// A role may not list the same key ID twice.
TEST_F(ModelTest, RejectsDuplicateKeyIdsInRole) {
  auto doc = RootDoc();
  auto& ids = doc["signed"]["roles"]["timestamp"]["keyids"];
  ids.push_back(ids[0]);
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::InvalidMetadata);
}

// "Object format": a key ID may appear only once among the signatures.
TEST_F(ModelTest, RejectsDuplicateSignatureKeyIds) {
  auto doc = RootDoc();
  doc["signatures"].push_back(doc["signatures"][0]);
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::DuplicateSignature);
}

// Canonical JSON has no floats: metadata containing one cannot be verified.
TEST_F(ModelTest, RejectsFloatInSignedPart) {
  auto doc = RootDoc();
  doc["signed"]["x-ratio"] = 0.5;
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::NotCanonicalizable);
}

// Key IDs are the SHA-256 of the canonical key object.
TEST_F(ModelTest, ComputesKeyIdFromCanonicalKey) {
  Json key = {{"keytype", "ed25519"}, {"scheme", "ed25519"}, {"keyval", {{"public", "ab"}}}};
  const std::string canonical =
      R"({"keytype":"ed25519","keyval":{"public":"ab"},"scheme":"ed25519"})";
  EXPECT_EQ(ComputeKeyId(key).value(), HexEncode(crypto::Sha256(canonical)));
}

// Unknown key types parse but cannot verify anything.
TEST_F(ModelTest, KeepsUnusableKeysWithoutPublicKey) {
  auto doc = RootDoc();
  doc["signed"]["keys"]["beef"] = {
      {"keytype", "x"}, {"scheme", "x"}, {"keyval", {{"public", "1"}}}};
  auto root = ParseRoot(doc.dump());
  ASSERT_TRUE(root);
  EXPECT_EQ(root->body.keys.at("beef").PublicKey(), nullptr);
}

TEST_F(ModelTest, RejectsKeyWithoutKeyval) {
  auto doc = RootDoc();
  doc["signed"]["keys"]["beef"] = {{"keytype", "ed25519"}, {"scheme", "ed25519"}};
  EXPECT_ERRC(ParseRoot(doc.dump()), Errc::InvalidMetadata);
}

// TARGETS: each target needs an integer length and a non-empty hashes object.
TEST_F(ModelTest, RejectsTargetWithoutHashes) {
  auto doc = TargetsDoc();
  doc["signed"]["targets"]["a"] = {{"length", 1}, {"hashes", Json::object()}};
  EXPECT_ERRC(ParseTargets(doc.dump()), Errc::InvalidMetadata);
  doc["signed"]["targets"]["a"] = {{"length", -1}, {"hashes", {{"sha256", "00"}}}};
  EXPECT_ERRC(ParseTargets(doc.dump()), Errc::InvalidMetadata);
}

TEST_F(ModelTest, KeepsTargetCustomMetadata) {
  auto doc = TargetsDoc();
  doc["signed"]["targets"]["a"] = {
      {"length", 1}, {"hashes", {{"sha256", "00"}}}, {"custom", {{"kind", "security"}}}};
  auto t = ParseTargets(doc.dump());
  ASSERT_TRUE(t);
  EXPECT_EQ(t->body.targets.at("a").custom["kind"], "security");
}

// DELEGATIONS: exactly one of "paths" and "path_hash_prefixes"; "terminating" required.
TEST_F(ModelTest, RejectsDelegationWithBothPathsAndPrefixes) {
  auto doc = TargetsDoc();
  doc["signed"]["delegations"] = {{"keys", Json::object()},
                                  {"roles",
                                   {{{"name", "a"},
                                     {"keyids", Json::array()},
                                     {"threshold", 1},
                                     {"terminating", false},
                                     {"paths", {"*"}},
                                     {"path_hash_prefixes", {"ab"}}}}}};
  EXPECT_ERRC(ParseTargets(doc.dump()), Errc::InvalidMetadata);
  doc["signed"]["delegations"]["roles"][0].erase("paths");
  EXPECT_TRUE(ParseTargets(doc.dump()));
  doc["signed"]["delegations"]["roles"][0].erase("path_hash_prefixes");
  EXPECT_ERRC(ParseTargets(doc.dump()), Errc::InvalidMetadata);
  doc["signed"]["delegations"]["roles"][0]["paths"] = {"*"};
  doc["signed"]["delegations"]["roles"][0].erase("terminating");
  EXPECT_ERRC(ParseTargets(doc.dump()), Errc::InvalidMetadata);
}

// A top-level role name cannot be delegated, and a name may appear only once.
TEST_F(ModelTest, RejectsDelegationToTopLevelOrRepeatedName) {
  auto doc = TargetsDoc();
  Json role = {{"name", "snapshot"},
               {"keyids", Json::array()},
               {"threshold", 1},
               {"terminating", false},
               {"paths", {"*"}}};
  doc["signed"]["delegations"] = {{"keys", Json::object()}, {"roles", {role}}};
  EXPECT_ERRC(ParseTargets(doc.dump()), Errc::InvalidMetadata);
  role["name"] = "a";
  doc["signed"]["delegations"]["roles"] = {role, role};
  EXPECT_ERRC(ParseTargets(doc.dump()), Errc::InvalidMetadata);
}

// TAP 15: "roles" and "succinct_roles" are exclusive; bit_length is 1..32.
TEST_F(ModelTest, ValidatesSuccinctRoles) {
  auto doc = TargetsDoc();
  Json succinct = {
      {"keyids", Json::array()}, {"threshold", 1}, {"bit_length", 8}, {"name_prefix", "bin"}};
  doc["signed"]["delegations"] = {{"keys", Json::object()}, {"succinct_roles", succinct}};
  EXPECT_TRUE(ParseTargets(doc.dump()));
  doc["signed"]["delegations"]["roles"] = Json::array();
  EXPECT_ERRC(ParseTargets(doc.dump()), Errc::InvalidMetadata);
  doc["signed"]["delegations"].erase("roles");
  for (int bits : {0, 33}) {
    doc["signed"]["delegations"]["succinct_roles"]["bit_length"] = bits;
    EXPECT_ERRC(ParseTargets(doc.dump()), Errc::InvalidMetadata);
  }
}

// "paths": shell-style patterns per path segment.
TEST(DelegatedRolePathTest, MatchesShellPatternsSegmentBySegment) {
  DelegatedRole role;
  role.paths = std::vector<std::string>{"apps/*.bin", "fw/v?/image", "cfg/[ab]*", "x/[!0-9]"};
  EXPECT_TRUE(role.IsDelegatedPath("apps/a.bin"));
  EXPECT_TRUE(role.IsDelegatedPath("apps/.bin"));
  EXPECT_FALSE(role.IsDelegatedPath("apps/sub/a.bin"));
  EXPECT_FALSE(role.IsDelegatedPath("apps/a.bin.sig"));
  EXPECT_TRUE(role.IsDelegatedPath("fw/v1/image"));
  EXPECT_FALSE(role.IsDelegatedPath("fw/v10/image"));
  EXPECT_TRUE(role.IsDelegatedPath("cfg/alpha"));
  EXPECT_FALSE(role.IsDelegatedPath("cfg/gamma"));
  EXPECT_TRUE(role.IsDelegatedPath("x/y"));
  EXPECT_FALSE(role.IsDelegatedPath("x/5"));
  EXPECT_FALSE(role.IsDelegatedPath("APPS/a.bin"));
}

TEST(DelegatedRolePathTest, StarMatchesOneWholeSegmentOnly) {
  DelegatedRole role;
  role.paths = std::vector<std::string>{"*"};
  EXPECT_TRUE(role.IsDelegatedPath("file"));
  EXPECT_FALSE(role.IsDelegatedPath("dir/file"));
  role.paths = std::vector<std::string>{"*/*"};
  EXPECT_TRUE(role.IsDelegatedPath("dir/file"));
  role.paths = std::vector<std::string>{"a[b"};
  EXPECT_TRUE(role.IsDelegatedPath("a[b"));  // an unclosed '[' is literal
}

// "path_hash_prefixes": prefixes of the hex SHA-256 of the target path.
TEST(DelegatedRolePathTest, MatchesPathHashPrefixes) {
  const std::string path = "some/target";
  const std::string hex = HexEncode(crypto::Sha256(path));
  DelegatedRole role;
  role.path_hash_prefixes = std::vector<std::string>{hex.substr(0, 3)};
  EXPECT_TRUE(role.IsDelegatedPath(path));
  role.path_hash_prefixes = std::vector<std::string>{hex[0] == '0' ? "f" : "0"};
  EXPECT_FALSE(role.IsDelegatedPath(path));
}

// TAP 15: bin = first 4 bytes of SHA-256(path) >> (32 - bit_length), zero-padded hex suffix.
TEST(SuccinctRolesTest, ComputesBinFromPathHash) {
  SuccinctRoles bins;
  bins.bit_length = 8;
  bins.name_prefix = "bin";
  const std::string path = "some/target";
  const std::string hex = HexEncode(crypto::Sha256(path));
  EXPECT_EQ(bins.RoleForTarget(path), "bin-" + hex.substr(0, 2));
  bins.bit_length = 1;
  const int top = std::stoi(hex.substr(0, 1), nullptr, 16) >> 3;
  EXPECT_EQ(bins.RoleForTarget(path), "bin-" + std::to_string(top));
  bins.bit_length = 5;
  EXPECT_TRUE(bins.IsDelegatedRole("bin-1f"));
  EXPECT_TRUE(bins.IsDelegatedRole("bin-00"));
  EXPECT_FALSE(bins.IsDelegatedRole("bin-20"));
  EXPECT_FALSE(bins.IsDelegatedRole("bin-0"));
  EXPECT_FALSE(bins.IsDelegatedRole("bin-zz"));
  EXPECT_FALSE(bins.IsDelegatedRole("other-00"));
}

// ---------------------------------------------------------------------------------------------
// Writing and signing

// Fields upkeep does not know, at every level, survive parse -> ToBytes -> parse, so signatures
// over them still verify.
TEST_F(ModelTest, RoundTripsTargetsWithUnknownFields) {
  Json body = sim_.targets;
  body["x_signed"] = {{"a", 1}};
  body["targets"]["fw/a.bin"] = {{"length", 3},
                                 {"hashes", {{"sha256", std::string(64, 'a')}, {"x-alg", "zz"}}},
                                 {"custom", {{"upkeep", {{"k", "v"}}}}},
                                 {"x_entry", true}};
  body["targets"]["fw/b.bin"] = {
      {"length", 0}, {"hashes", {{"sha512", std::string(128, 'b')}}}, {"custom", nullptr}};
  auto key = Must(crypto::PrivateKey::Generate(crypto::KeyAlgorithm::Ed25519));
  Json role = {{"name", "apps"},      {"keyids", {RepositorySimulator::KeyId(key)}},
               {"threshold", 1},      {"terminating", false},
               {"paths", {"apps/*"}}, {"x_role", "kept"}};
  Json key_json = RepositorySimulator::KeyJson(key);
  key_json["x_key"] = 7;
  key_json["keyval"]["x_keyval"] = "kept";
  body["delegations"] = {{"keys", {{RepositorySimulator::KeyId(key), key_json}}},
                         {"roles", {role}},
                         {"x_delegations", Json::array()}};
  Json doc = Json::parse(RepositorySimulator::Sign(body, sim_.signers["targets"]));
  doc["x_envelope"] = "unsigned";
  doc["signatures"][0]["x_sig"] = 1;

  auto first = ParseTargets(doc.dump());
  ASSERT_TRUE(first) << first.error().ToString();
  const std::string bytes = Must(first->ToBytes());
  auto second = ParseTargets(bytes);
  ASSERT_TRUE(second) << second.error().ToString();
  EXPECT_EQ(*first, *second);
  EXPECT_EQ(Json::parse(bytes), doc);
  EXPECT_EQ(Must(first->CanonicalSigned()), first->canonical_signed);
}

// A key object without a string "keyval.public" (a key upkeep cannot use) is written back as it
// was, so the signatures over it still verify.
TEST_F(ModelTest, RoundTripsKeyWithoutPublicValue) {
  auto doc = RootDoc();
  doc["signed"]["keys"]["f00d"] = {
      {"keytype", "x-future"}, {"scheme", "x-future"}, {"keyval", {{"x-material", "00"}}}};
  doc["signed"]["keys"]["beef"] = {
      {"keytype", "x-future"}, {"scheme", "x-future"}, {"keyval", {{"public", 5}}}};
  auto root = Must(ParseRoot(doc.dump()));
  EXPECT_EQ(Json::parse(Must(root.ToBytes())), doc);
  EXPECT_EQ(Must(root.CanonicalSigned()), root.canonical_signed);
}

// Every role round-trips, including a root without "consistent_snapshot" (which stays absent).
TEST_F(ModelTest, RoundTripsEveryRole) {
  sim_.Publish();
  auto root_doc = RootDoc();
  root_doc["signed"].erase("consistent_snapshot");
  auto root = Must(ParseRoot(root_doc.dump()));
  EXPECT_FALSE(root.body.ConsistentSnapshot());
  EXPECT_EQ(Json::parse(Must(root.ToBytes())), root_doc);
  EXPECT_EQ(Must(ParseRoot(Must(root.ToBytes()))), root);

  Json ts_doc = Json::parse(sim_.files[sim_.MetadataUrl("timestamp", 0)]);
  ts_doc["signed"]["meta"]["x-other.json"] = {{"version", 3}};
  auto ts = Must(ParseTimestamp(ts_doc.dump()));
  EXPECT_EQ(Json::parse(Must(ts.ToBytes())), ts_doc);
  EXPECT_EQ(Must(ParseTimestamp(Must(ts.ToBytes()))), ts);

  auto snap = Must(ParseSnapshot(sim_.files[sim_.MetadataUrl("snapshot", 1)]));
  EXPECT_EQ(Must(ParseSnapshot(Must(snap.ToBytes()))), snap);
}

// A role built in code and signed verifies with the signer's key; signing again with the same
// key replaces its signature.
TEST(MetadataWriteTest, BuildsAndSignsTargetsInCode) {
  auto key = Must(crypto::PrivateKey::Generate(crypto::KeyAlgorithm::Ed25519));
  auto targets = Targets::Create(*ParseDateTime("2030-01-01T00:00:00Z"));
  targets.version = 7;
  TargetFile file;
  file.length = 5;
  file.hashes["sha256"] = HexEncode(crypto::Sha256("image"));
  file.custom = Json{{"upkeep", {{"schema", 1}}}};
  targets.body.targets.emplace("fw/image.bin", file);
  ASSERT_TRUE(targets.Sign(key));
  ASSERT_TRUE(targets.Sign(key));
  ASSERT_EQ(targets.signatures.size(), 1u);

  auto parsed = Must(ParseTargets(Must(targets.ToBytes())));
  EXPECT_EQ(parsed.version, 7u);
  EXPECT_EQ(parsed.type, "targets");
  EXPECT_EQ(parsed.spec_version, kSpecVersion);
  EXPECT_EQ(parsed.body.targets.at("fw/image.bin").custom, file.custom);
  const Key k = Key::FromPublicKey(key.public_key());
  EXPECT_EQ(k.keyid, RepositorySimulator::KeyId(key));
  EXPECT_TRUE(VerifyThreshold({{k.keyid, k}}, RoleKeys{{k.keyid}, 1, Json::object()},
                              parsed.canonical_signed, parsed.signatures, Errc::ThresholdNotMet,
                              "targets"));
  // An edit after signing invalidates the signature.
  parsed.version = 8;
  EXPECT_ERRC(VerifyThreshold({{k.keyid, k}}, RoleKeys{{k.keyid}, 1, Json::object()},
                              Must(parsed.CanonicalSigned()), parsed.signatures,
                              Errc::ThresholdNotMet, "targets"),
              Errc::ThresholdNotMet);
}

// Strings that are not UTF-8 cannot be serialised: an error, not an exception.
TEST(MetadataWriteTest, RefusesToSerialiseInvalidUtf8) {
  auto targets = Targets::Create(*ParseDateTime("2030-01-01T00:00:00Z"));
  TargetFile file;
  file.hashes["sha256"] = std::string(64, 'a');
  targets.body.targets.emplace("bad\xff", file);
  EXPECT_ERRC(targets.ToBytes(), Errc::InvalidMetadata);
  auto key = Must(crypto::PrivateKey::Generate(crypto::KeyAlgorithm::Ed25519));
  EXPECT_ERRC(targets.Sign(key), Errc::InvalidMetadata);
}

}  // namespace
}  // namespace upkeep::metadata
