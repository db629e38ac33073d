#include "upkeep/localapi/credential_store.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "test_util.hpp"
#include "upkeep/common/scratch_dir.hpp"

namespace upkeep::localapi {
namespace {

using namespace std::chrono_literals;

std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class CredentialStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }
  // Cheap Argon2id parameters: the tests check behaviour, not cost.
  static CredentialOptions Cheap() {
    CredentialOptions o;
    o.t_cost = 1;
    o.m_cost_kib = 1024;
    return o;
  }
  Result<CredentialStore> Open() { return CredentialStore::Open(file(), clock_, Cheap()); }
  std::filesystem::path file() const { return dir_.path() / "credential.json"; }

  ScratchDir dir_{"localapi-cred"};
  FakeClock clock_{Clock::TimePoint(std::chrono::sys_days(std::chrono::year(2026) / 12 / 7))};
};

// EN 303 645 5.1-1: no default credential; a generated one is returned once and stored only as
// an Argon2id hash (5.1-5 / 5.4-1), in a 0600 file.
TEST_F(CredentialStoreTest, GeneratesOnceAndStoresOnlyAnArgon2idHash) {
  auto store = Open();
  ASSERT_TRUE(store.has_value()) << store.error().message();
  EXPECT_FALSE(store->has_credential());
  EXPECT_ERRC(store->Verify("anything-at-all"), Errc::Unauthenticated);
  auto secret = store->GenerateOnce();
  ASSERT_TRUE(secret.has_value()) << secret.error().message();
  EXPECT_EQ(secret->size(), 23u);
  const std::string on_disk = ReadAll(file());
  EXPECT_EQ(on_disk.find(*secret), std::string::npos);
  EXPECT_NE(on_disk.find("$argon2id$"), std::string::npos);
  struct stat st {};
  ASSERT_EQ(::stat(file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(store->Verify(*secret).has_value());
  EXPECT_ERRC(store->GenerateOnce(), Errc::AlreadySet);
}

TEST_F(CredentialStoreTest, TwoGeneratedCredentialsDiffer) {
  auto a = Open();
  ASSERT_TRUE(a.has_value());
  auto sa = a->GenerateOnce();
  ASSERT_TRUE(sa.has_value());
  ScratchDir other("localapi-cred2");
  auto b = CredentialStore::Open(other.path() / "c.json", clock_, Cheap());
  ASSERT_TRUE(b.has_value());
  auto sb = b->GenerateOnce();
  ASSERT_TRUE(sb.has_value());
  EXPECT_NE(*sa, *sb);
}

// A wrong credential is refused and counted.
TEST_F(CredentialStoreTest, RejectsWrongCredential) {
  auto store = Open();
  ASSERT_TRUE(store.has_value());
  ASSERT_TRUE(store->Set("correct horse battery").has_value());
  EXPECT_ERRC(store->Verify("correct horse battery!"), Errc::Unauthenticated);
  EXPECT_ERRC(store->Verify(""), Errc::Unauthenticated);
  EXPECT_EQ(store->failures(), 2u);
  EXPECT_TRUE(store->Verify("correct horse battery").has_value());
  EXPECT_EQ(store->failures(), 0u);
}

TEST_F(CredentialStoreTest, RefusesTooShortOrInvalidCredential) {
  auto store = Open();
  ASSERT_TRUE(store.has_value());
  EXPECT_ERRC(store->Set("short"), Errc::InvalidArgument);
  EXPECT_ERRC(store->Set(std::string("abcdefghijkl\xff", 13)), Errc::InvalidArgument);
  EXPECT_ERRC(store->Set(std::string(1025, 'a')), Errc::InvalidArgument);
  EXPECT_FALSE(store->has_credential());
}

// EN 303 645 5.1-5: after 5 failures the store locks, doubling each further failure; while
// locked even the right credential is refused.
TEST_F(CredentialStoreTest, LocksOutExponentiallyAfterFiveFailures) {
  auto store = Open();
  ASSERT_TRUE(store.has_value());
  ASSERT_TRUE(store->Set("correct horse battery").has_value());
  for (int i = 0; i < 4; ++i) EXPECT_ERRC(store->Verify("wrong guess!!"), Errc::Unauthenticated);
  EXPECT_FALSE(store->locked_until().has_value());
  EXPECT_ERRC(store->Verify("wrong guess!!"), Errc::Unauthenticated);  // 5th: locks 30 s
  ASSERT_TRUE(store->locked_until().has_value());
  EXPECT_EQ(*store->locked_until(), clock_.Now() + 30s);
  EXPECT_ERRC(store->Verify("correct horse battery"), Errc::LockedOut);
  clock_.Advance(29s);
  EXPECT_ERRC(store->Verify("correct horse battery"), Errc::LockedOut);
  clock_.Advance(1s);
  EXPECT_ERRC(store->Verify("wrong guess!!"), Errc::Unauthenticated);  // 6th: locks 60 s
  EXPECT_EQ(*store->locked_until(), clock_.Now() + 60s);
  clock_.Advance(59s);
  EXPECT_ERRC(store->Verify("correct horse battery"), Errc::LockedOut);
  clock_.Advance(1s);
  EXPECT_TRUE(store->Verify("correct horse battery").has_value());
  EXPECT_EQ(store->failures(), 0u);
  EXPECT_FALSE(store->locked_until().has_value());
}

TEST_F(CredentialStoreTest, LockoutIsCappedAtMaxLockout) {
  auto store = Open();
  ASSERT_TRUE(store.has_value());
  ASSERT_TRUE(store->Set("correct horse battery").has_value());
  for (int i = 0; i < 20; ++i) {
    (void)store->Verify("wrong guess!!");
    clock_.Advance(2h);
  }
  EXPECT_ERRC(store->Verify("wrong guess!!"), Errc::Unauthenticated);
  EXPECT_EQ(*store->locked_until(), clock_.Now() + 1h);
}

// A restart keeps the hash, the failure count and the lockout.
TEST_F(CredentialStoreTest, PersistsHashFailuresAndLockout) {
  {
    auto store = Open();
    ASSERT_TRUE(store.has_value());
    ASSERT_TRUE(store->Set("correct horse battery").has_value());
    for (int i = 0; i < 5; ++i) (void)store->Verify("wrong guess!!");
  }
  auto store = Open();
  ASSERT_TRUE(store.has_value()) << store.error().message();
  EXPECT_TRUE(store->has_credential());
  EXPECT_EQ(store->failures(), 5u);
  EXPECT_ERRC(store->Verify("correct horse battery"), Errc::LockedOut);
  clock_.Advance(30s);
  EXPECT_TRUE(store->Verify("correct horse battery").has_value());
  auto again = Open();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->failures(), 0u);
}

TEST_F(CredentialStoreTest, RefusesMalformedOrUnknownFields) {
  { std::ofstream(file()) << "{not json"; }
  EXPECT_ERRC(Open(), Errc::InvalidCredentialStore);
  { std::ofstream(file()) << R"({"version":1,"argon2id":"$argon2id$x","failures":0,"extra":1})"; }
  EXPECT_ERRC(Open(), Errc::InvalidCredentialStore);
  { std::ofstream(file()) << R"({"version":1,"argon2id":"plaintext","failures":0})"; }
  EXPECT_ERRC(Open(), Errc::InvalidCredentialStore);
}

TEST_F(CredentialStoreTest, RefusesSymlinkedFile) {
  std::ofstream(dir_.path() / "target") << "{}";
  std::filesystem::create_symlink(dir_.path() / "target", file());
  EXPECT_ERRC(Open(), Errc::InvalidCredentialStore);
}

}  // namespace
}  // namespace upkeep::localapi
