// Keys held in a PKCS#11 token (softhsm2): a repository whose targets key never leaves the token
// publishes metadata that upkeep's client accepts. Skipped where softhsm2 or OpenSC's pkcs11-tool
// is not installed.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <fstream>

#include "device.hpp"
#include "http_test_server.hpp"
#include "temp_dir.hpp"
#include "tufjs_client.hpp"
#include "test_util.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/updater.hpp"
#include "upkeep/repository/repository.hpp"
#include "upkeep/transport/http_fetcher.hpp"

namespace upkeep::repository {
namespace {

namespace fs = std::filesystem;
using metadata::Json;

constexpr const char* kModule = "/usr/lib/softhsm/libsofthsm2.so";

class Pkcs11Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kModule) || std::system("command -v softhsm2-util >/dev/null 2>&1") != 0 ||
        std::system("command -v pkcs11-tool >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "softhsm2 and pkcs11-tool are needed";
    }
    fs::create_directories(work_ / "tokens");
    std::ofstream(work_ / "softhsm2.conf")
        << "directories.tokendir = " << (work_ / "tokens").string()
        << "\nobjectstore.backend = file\nlog.level = ERROR\n";
    ::setenv("SOFTHSM2_CONF", (work_ / "softhsm2.conf").c_str(), 1);
    ASSERT_EQ(std::system("softhsm2-util --init-token --free --label upkeep-test --pin 1234 "
                          "--so-pin 5678 >/dev/null 2>&1"),
              0);
    ASSERT_EQ(std::system((std::string("pkcs11-tool --module ") + kModule +
                           " --token-label upkeep-test --login --pin 1234 --keypairgen "
                           "--key-type EC:prime256v1 --label targets-key >/dev/null 2>&1")
                              .c_str()),
              0);
  }

  crypto::Pkcs11KeyRef Ref(std::string pin = "1234") const {
    return {kModule, "upkeep-test", "targets-key", std::move(pin)};
  }

  LocalFilesystem fs_;
  SystemClock clock_;
  testing::TempDir work_;
};

// The token signs; the signature verifies with the public key read from the token.
TEST_F(Pkcs11Test, SignsInsideTheToken) {
  auto key = crypto::PrivateKey::FromPkcs11(Ref());
  ASSERT_TRUE(key) << key.error().ToString();
  EXPECT_EQ(key->algorithm(), crypto::KeyAlgorithm::EcdsaP256);
  const std::string msg = "signed by the token";
  const std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(msg.data()),
                                            msg.size());
  auto sig = key->Sign(bytes);
  ASSERT_TRUE(sig) << sig.error().ToString();
  EXPECT_TRUE(key->public_key().Verify(bytes, *sig));
  EXPECT_ERRC(key->ToPem(), crypto::Errc::UnsupportedKeyType);  // it never leaves the token
}

TEST_F(Pkcs11Test, ReportsWrongPinAndMissingKeys) {
  EXPECT_ERRC(crypto::PrivateKey::FromPkcs11(Ref("0000")), crypto::Errc::BadPassphrase);
  auto ref = Ref();
  ref.label = "no-such-key";
  EXPECT_ERRC(crypto::PrivateKey::FromPkcs11(ref), crypto::Errc::TokenUnavailable);
  ref = Ref();
  ref.token = "no-such-token";
  EXPECT_ERRC(crypto::PrivateKey::FromPkcs11(ref), crypto::Errc::TokenUnavailable);
  ref = Ref();
  ref.module = "/nonexistent/module.so";
  EXPECT_ERRC(crypto::PrivateKey::FromPkcs11(ref), crypto::Errc::TokenUnavailable);
}

// A 2-of-3 root with a token-held targets key: the release is signed inside the token and
// devices accept it.
TEST_F(Pkcs11Test, PublishesWithTokenHeldTargetsKey) {
  InitOptions o;
  o.root_keys = 3;
  o.root_threshold = 2;
  o.targets_token_key = Ref();
  auto repo = Repository::Init(work_ / "repo", o, fs_, clock_);
  ASSERT_TRUE(repo) << repo.error().ToString();
  std::ofstream(work_ / "app.bin", std::ios::binary) << "application";
  Json meta = {{"upkeep",
                {{"schema", 1}, {"component", "application"}, {"version", "1.0"},
                 {"hardware", {"acme-cam-v2"}}, {"security_version", 1}, {"kind", {"feature"}},
                 {"disruption", {{"reboot", false}, {"downtime_seconds", 0},
                                 {"available_during_update", Json::array()}}},
                 {"settings_impact", {{"effect", "none"}, {"note", ""}}},
                 {"payload", {{"format", "raw"}, {"installed_size", 11}}}}}};
  ASSERT_TRUE(repo->AddTarget(work_ / "app.bin", "apps/app.bin", meta));
  EXPECT_ERRC(repo->Publish(work_ / "www"), Errc::ThresholdNotMet);
  auto token_key = crypto::PrivateKey::FromPkcs11(Ref());
  ASSERT_TRUE(token_key);
  ASSERT_TRUE(repo->SignWith("targets", *token_key));
  ASSERT_TRUE(repo->Publish(work_ / "www"));
  // No targets private key was written to disk.
  const auto root = Json::parse(testing::ReadFileOrEmpty(work_ / "repo" / "staged" / "root.json"));
  const std::string targets_id = root["signed"]["roles"]["targets"]["keyids"][0];
  EXPECT_FALSE(fs::exists(work_ / "repo" / "keys" / (targets_id + ".pem")));

  testing::Device device(work_ / "www", work_ / "device", clock_);
  auto& server = device.server;
  metadata::Updater updater = device.Client();
  auto info = updater.GetTargetInfo("apps/app.bin");
  ASSERT_TRUE(info) << info.error().ToString();
  auto file = updater.DownloadTarget(*info, server.base_url() + "/targets/", work_ / "device");
  ASSERT_TRUE(file) << file.error().ToString();
  EXPECT_EQ(testing::ReadFileOrEmpty(*file), "application");
}

Json Release(const char* kind, const char* version) {
  Json u = {{"schema", 1}, {"component", "rootfs"}, {"version", version},
            {"hardware", {"acme-cam-v2"}}, {"security_version", 3}, {"kind", {kind}},
            {"disruption", {{"reboot", true}, {"downtime_seconds", 30},
                            {"available_during_update", Json::array()}}},
            {"settings_impact", {{"effect", "none"}, {"note", ""}}},
            {"payload", {{"format", "raw"}, {"installed_size", 7}}}};
  if (std::string(kind) == "security") {
    u["security"] = {{"severity", "high"}, {"cves", {"CVE-2026-1000"}},
                     {"risks_mitigated", "Fixes remote code execution."}};
  }
  return Json{{"upkeep", u}};
}

// The release lifecycle end to end: a 2-of-3 root and a softhsm2-held targets key; security and
// feature targets; a delegation; signatures gathered in separate steps; publish; rotate the root
// and the timestamp key; publish again. upkeep's client and tuf-js accept every published state
// and both reject a tampered target.
TEST_F(Pkcs11Test, FullReleaseLifecycle) {
  InitOptions o;
  o.root_keys = 3;
  o.root_threshold = 2;
  o.targets_token_key = Ref();
  ASSERT_TRUE(Repository::Init(work_ / "repo", o, fs_, clock_));
  auto open = [&] { return Repository::Open(work_ / "repo", fs_, clock_).value(); };
  auto keys_of = [&](const std::string& role) {
    auto root = Json::parse(testing::ReadFileOrEmpty(work_ / "repo" / "staged" / "root.json"));
    std::vector<fs::path> out;
    for (const auto& id : root["signed"]["roles"][role]["keyids"]) {
      out.push_back(work_ / "repo" / "keys" / (id.get<std::string>() + ".pem"));
    }
    return out;
  };
  std::ofstream(work_ / "sec.img", std::ios::binary) << "sec-fix";
  std::ofstream(work_ / "feat.img", std::ios::binary) << "feature";
  std::ofstream(work_ / "app.img", std::ios::binary) << "app-1.0";
  auto repo = open();
  ASSERT_TRUE(repo.AddTarget(work_ / "sec.img", "fw/sec.img", Release("security", "2.0.1")));
  ASSERT_TRUE(repo.AddTarget(work_ / "feat.img", "fw/feat.img", Release("feature", "2.1.0")));
  Repository::Delegation d;
  d.name = "apps";
  d.paths = {"apps/*"};
  d.keys = 2;
  d.threshold = 2;
  auto app_keys = repo.Delegate(d);
  ASSERT_TRUE(app_keys);
  ASSERT_TRUE(repo.AddTarget(work_ / "app.img", "apps/app.img", Release("feature", "1.0"), "apps"));
  auto token = crypto::PrivateKey::FromPkcs11(Ref()).value();
  ASSERT_TRUE(open().SignWith("targets", token));
  for (const auto& id : *app_keys) {  // two separate signing steps
    ASSERT_TRUE(open().Sign("apps", work_ / "repo" / "keys" / (id + ".pem")));
  }
  ASSERT_TRUE(open().Publish(work_ / "www"));

  testing::Device device(work_ / "www", work_ / "device", clock_);
  auto& server = device.server;
  auto check_state = [&](std::uint64_t root_version) {
    metadata::Updater updater = device.Client();
    ASSERT_TRUE(updater.Refresh());
    EXPECT_EQ(updater.trusted()->root().version, root_version);
    for (const char* t : {"fw/sec.img", "fw/feat.img", "apps/app.img"}) {
      auto info = updater.GetTargetInfo(t);
      ASSERT_TRUE(info) << t << ": " << info.error().ToString();
      EXPECT_TRUE(updater.DownloadTarget(*info, server.base_url() + "/targets/", work_ / "device"))
          << t;
      auto tufjs = testing::TufJsDownload(server.base_url(),
                                          work_ / "www" / "metadata" / "1.root.json", t);
      if (tufjs) {
        EXPECT_EQ(*tufjs, 0) << t;
      }
    }
  };
  check_state(1);

  // Rotate one root key and the timestamp key; the new root collects signatures one at a time.
  const auto root_keys = keys_of("root");
  ASSERT_TRUE(open().Rotate("root", 1, {root_keys[0].stem().string()}, std::nullopt,
                            crypto::KeyAlgorithm::EcdsaP256));
  ASSERT_TRUE(open().Rotate("timestamp", 1, {keys_of("timestamp")[0].stem().string()},
                            std::nullopt, crypto::KeyAlgorithm::Ed25519));
  EXPECT_ERRC(open().Publish(work_ / "www"), Errc::ThresholdNotMet);
  ASSERT_TRUE(open().Sign("root", root_keys[1]));
  ASSERT_TRUE(open().Sign("root", root_keys[2]));
  ASSERT_TRUE(open().Publish(work_ / "www"));
  check_state(2);

  // A tampered target is rejected by both clients.
  for (const auto& e : fs::recursive_directory_iterator(work_ / "www" / "targets")) {
    if (e.is_regular_file() && e.path().filename().string().ends_with("sec.img")) {
      std::ofstream(e.path(), std::ios::binary | std::ios::trunc) << "sec-fiX";
    }
  }
  metadata::Updater updater = device.Client();
  auto info = updater.GetTargetInfo("fw/sec.img");
  ASSERT_TRUE(info);
  fs::remove(work_ / "device" / "fw%2Fsec.img");
  EXPECT_ERRC(updater.DownloadTarget(*info, server.base_url() + "/targets/", work_ / "device"),
              metadata::Errc::TargetHashMismatch);
  auto tufjs = testing::TufJsDownload(server.base_url(), work_ / "www" / "metadata" / "1.root.json",
                                      "fw/sec.img");
  if (tufjs) {
    EXPECT_NE(*tufjs, 0);
  }
}

}  // namespace
}  // namespace upkeep::repository
