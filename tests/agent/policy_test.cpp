// The user's update policy and the install decision (EN 303 645 provision 5.3-6, CRA Annex I;
// docs/policy.md). Times come from a FakeClock; nothing sleeps.

#include "upkeep/agent/policy.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "test_util.hpp"
#include "upkeep/agent/config.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/common/scratch_dir.hpp"

namespace upkeep::agent {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

// 2026-12-07T00:00:00Z.
const Clock::TimePoint kMidnight{seconds(1796601600)};
constexpr auto kDay = hours(24);

// A filesystem whose atomic writes can be made to fail, passing everything else through.
class FlakyFilesystem final : public Filesystem {
 public:
  bool fail_writes = false;
  int writes = 0;
  Result<std::string> ReadFile(const std::filesystem::path& p, std::uint64_t max) const override {
    return real_.ReadFile(p, max);
  }
  Result<void> WriteFileAtomic(const std::filesystem::path& p, std::string_view content,
                               Durability d) override {
    if (fail_writes) return Error(common::Errc::IoError, "injected");
    ++writes;
    return real_.WriteFileAtomic(p, content, d);
  }
  Result<void> SyncDirectory(const std::filesystem::path& dir) override {
    return real_.SyncDirectory(dir);
  }
  Result<std::unique_ptr<AtomicFile>> CreateAtomic(const std::filesystem::path& p) override {
    return real_.CreateAtomic(p);
  }
  Result<void> ReadChunks(const std::filesystem::path& p, const ChunkSink& sink) const override {
    return real_.ReadChunks(p, sink);
  }
  Result<bool> Exists(const std::filesystem::path& p) const override { return real_.Exists(p); }
  Result<void> Remove(const std::filesystem::path& p) override { return real_.Remove(p); }
  Result<void> CreateDirectories(const std::filesystem::path& p) override {
    return real_.CreateDirectories(p);
  }
  Result<void> AppendFile(const std::filesystem::path& p, std::string_view data) override {
    return real_.AppendFile(p, data);
  }
  Result<std::uint64_t> FileSize(const std::filesystem::path& p) const override {
    return real_.FileSize(p);
  }
  Result<void> Rename(const std::filesystem::path& from, const std::filesystem::path& to) override {
    return real_.Rename(from, to);
  }
  Result<std::vector<std::string>> ListDirectory(const std::filesystem::path& dir) const override {
    return real_.ListDirectory(dir);
  }

 private:
  LocalFilesystem real_;
};

class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }
  std::filesystem::path file() const { return dir_.path() / "policy.json"; }
  Policy Load(PolicyOptions options = {}) {
    auto p = Policy::Load(fs_, file(), options);
    EXPECT_TRUE(p.has_value()) << p.error().ToString();
    return std::move(p).value();
  }
  void WriteRaw(const std::string& text) {
    ASSERT_TRUE(fs_.WriteFileAtomic(file(), text, Durability::kFileAndDirectory).has_value());
  }

  ScratchDir dir_{"upkeep-policy"};
  FlakyFilesystem fs_;
  FakeClock clock_{kMidnight + hours(12)};
};

// 5.3-6: a device nobody configured installs updates automatically and notifies the user.
TEST_F(PolicyTest, DefaultsAreAutomaticInstallAndNotificationsOn) {
  Policy policy = Load();
  EXPECT_TRUE(policy.state().auto_install);
  EXPECT_TRUE(policy.state().notifications);
  EXPECT_TRUE(policy.state().security_auto_install);
  EXPECT_FALSE(policy.state().security_setting_unreported);
  EXPECT_EQ(fs_.writes, 0);  // defaults are not written until a choice is made
  for (UpdateKind kind : {UpdateKind::Security, UpdateKind::Feature}) {
    auto offer = policy.Offer(kind == UpdateKind::Security ? "s1" : "f1", kind, clock_.Now());
    ASSERT_TRUE(offer.has_value());
    const Decision d = policy.Decide(*offer, clock_.Now());
    EXPECT_EQ(d.verdict, Verdict::Install);
    EXPECT_EQ(d.reason, Reason::Automatic);
    EXPECT_TRUE(d.publish_notice);
    EXPECT_TRUE(d.record_notice);
  }
}

TEST_F(PolicyTest, AutomaticInstallOffMakesFeatureUpdatesWaitForTheUser) {
  Policy policy = Load();
  ASSERT_TRUE(policy.SetAutoInstall(false).has_value());
  auto feature = policy.Offer("f1", UpdateKind::Feature, clock_.Now());
  auto security = policy.Offer("s1", UpdateKind::Security, clock_.Now());
  ASSERT_TRUE(feature && security);
  const Decision f = policy.Decide(*feature, clock_.Now());
  EXPECT_EQ(f.verdict, Verdict::NeedsUser);
  EXPECT_EQ(f.reason, Reason::AutomaticInstallOff);
  // Automatic security installation is a separate, confirmed choice: still automatic.
  EXPECT_EQ(policy.Decide(*security, clock_.Now()).verdict, Verdict::Install);
}

TEST_F(PolicyTest, NotificationsOffStopsPublishingButSecurityNoticesAreRecorded) {
  Policy policy = Load();
  ASSERT_TRUE(policy.SetNotifications(false).has_value());
  auto feature = policy.Offer("f1", UpdateKind::Feature, clock_.Now());
  auto security = policy.Offer("s1", UpdateKind::Security, clock_.Now());
  const Decision f = policy.Decide(*feature, clock_.Now());
  EXPECT_FALSE(f.publish_notice);
  EXPECT_FALSE(f.record_notice);
  const Decision s = policy.Decide(*security, clock_.Now());
  EXPECT_FALSE(s.publish_notice);
  EXPECT_TRUE(s.record_notice);
  // A security update only the user can start is shown even with notifications off.
  ASSERT_TRUE(policy.SetSecurityAutoInstall(false, true).has_value());
  const Decision needs_user = policy.Decide(*security, clock_.Now());
  EXPECT_EQ(needs_user.verdict, Verdict::NeedsUser);
  EXPECT_TRUE(needs_user.publish_notice);
}

// 5.3-6 / CRA Annex I: the user may postpone a security update, but not for ever: when the cap
// (7 days from the first offer) runs out it installs automatically.
TEST_F(PolicyTest, PostponedSecurityUpdateInstallsWhenTheCapRunsOut) {
  Policy policy = Load();
  const Clock::TimePoint offered = clock_.Now();
  auto update = policy.Offer("s1", UpdateKind::Security, offered);
  ASSERT_TRUE(update.has_value());
  auto effective = policy.Postpone("s1", offered + hours(24 * 30), clock_.Now());
  ASSERT_TRUE(effective.has_value()) << effective.error().ToString();
  EXPECT_EQ(*effective, offered + kDay * 7);

  Decision d = policy.Decide(*update, clock_.Now());
  EXPECT_EQ(d.verdict, Verdict::Wait);
  EXPECT_EQ(d.reason, Reason::PostponedByUser);
  EXPECT_EQ(d.until, offered + kDay * 7);

  clock_.Set(offered + kDay * 7 - seconds(1));
  EXPECT_EQ(policy.Decide(*update, clock_.Now()).verdict, Verdict::Wait);
  clock_.Set(offered + kDay * 7);
  d = policy.Decide(*update, clock_.Now());
  EXPECT_EQ(d.verdict, Verdict::Install);
  EXPECT_EQ(d.reason, Reason::PostponementCapReached);
}

// Postponing again later does not restart the cap: it counts from the first offer, which
// survives a reboot (reloading the file) and a later offer of the same update.
TEST_F(PolicyTest, PostponementCapCountsFromTheFirstOfferAcrossReboots) {
  const Clock::TimePoint offered = clock_.Now();
  {
    Policy policy = Load();
    ASSERT_TRUE(policy.Offer("s1", UpdateKind::Security, offered).has_value());
    ASSERT_TRUE(policy.Postpone("s1", offered + kDay * 3, offered).has_value());
  }
  clock_.Set(offered + kDay * 6);
  Policy policy = Load();
  auto again = policy.Offer("s1", UpdateKind::Security, clock_.Now());
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->first_offered, offered);
  auto effective = policy.Postpone("s1", clock_.Now() + kDay * 5, clock_.Now());
  ASSERT_TRUE(effective.has_value());
  EXPECT_EQ(*effective, offered + kDay * 7);
  clock_.Set(offered + kDay * 7);
  EXPECT_EQ(policy.Decide(*again, clock_.Now()).verdict, Verdict::Install);
}

// A file edited to postpone a security update for years still installs at the cap.
TEST_F(PolicyTest, HandEditedSecurityPostponementIsStillCapped) {
  const Clock::TimePoint offered = clock_.Now();
  PolicyState state;
  state.updates["s1"] =
      UpdateRecord{UpdateKind::Security, offered, offered + kDay * 3650, false, std::nullopt};
  WriteRaw(SerializePolicyState(state));
  Policy policy = Load();
  const OfferedUpdate update{"s1", UpdateKind::Security, offered};
  clock_.Set(offered + kDay * 7);
  EXPECT_EQ(policy.Decide(update, clock_.Now()).verdict, Verdict::Install);
}

TEST_F(PolicyTest, PostponedFeatureUpdateWaitsUntilTheChosenTime) {
  Policy policy = Load();
  auto update = policy.Offer("f1", UpdateKind::Feature, clock_.Now());
  const Clock::TimePoint until = clock_.Now() + kDay * 30;
  auto effective = policy.Postpone("f1", until, clock_.Now());
  ASSERT_TRUE(effective.has_value());
  EXPECT_EQ(*effective, until);  // no cap for feature updates
  clock_.Set(clock_.Now() + kDay * 29);
  const Decision d = policy.Decide(*update, clock_.Now());
  EXPECT_EQ(d.verdict, Verdict::Wait);
  EXPECT_EQ(d.until, until);
  clock_.Set(until);
  EXPECT_EQ(policy.Decide(*update, clock_.Now()).verdict, Verdict::Install);
}

// The same postponement twice gives the same state and file, and writes nothing the second time.
TEST_F(PolicyTest, SamePostponementTwiceIsIdempotent) {
  Policy policy = Load();
  ASSERT_TRUE(policy.Offer("s1", UpdateKind::Security, clock_.Now()).has_value());
  const Clock::TimePoint until = clock_.Now() + kDay;
  auto first = policy.Postpone("s1", until, clock_.Now());
  const PolicyState after_first = policy.state();
  const std::string file_after_first = testing::ReadFileOrEmpty(file());
  const int writes = fs_.writes;
  auto second = policy.Postpone("s1", until, clock_.Now());
  ASSERT_TRUE(first.has_value() && second.has_value());
  EXPECT_EQ(*first, *second);
  EXPECT_EQ(policy.state(), after_first);
  EXPECT_EQ(testing::ReadFileOrEmpty(file()), file_after_first);
  EXPECT_EQ(fs_.writes, writes);
}

TEST_F(PolicyTest, RejectsInvalidPostponements) {
  Policy policy = Load();
  EXPECT_ERRC(policy.Postpone("nope", clock_.Now() + kDay, clock_.Now()), Errc::UnknownUpdate);
  ASSERT_TRUE(policy.Offer("f1", UpdateKind::Feature, clock_.Now()).has_value());
  EXPECT_ERRC(policy.Postpone("f1", clock_.Now(), clock_.Now()), Errc::InvalidPolicyValue);
  EXPECT_ERRC(policy.Postpone("f1", clock_.Now() - seconds(1), clock_.Now()),
              Errc::InvalidPolicyValue);
  EXPECT_ERRC(policy.Postpone("f1", Clock::TimePoint(seconds(253402300800)), clock_.Now()),
              Errc::InvalidPolicyValue);
  EXPECT_ERRC(policy.Offer("", UpdateKind::Feature, clock_.Now()), Errc::InvalidPolicyValue);
  EXPECT_ERRC(policy.Offer(std::string(257, 'a'), UpdateKind::Feature, clock_.Now()),
              Errc::InvalidPolicyValue);
  EXPECT_ERRC(policy.Offer("\xff\xfe", UpdateKind::Feature, clock_.Now()),
              Errc::InvalidPolicyValue);
}

// CRA Annex I: automatic security updates are turned off only by an explicit, confirmed choice.
TEST_F(PolicyTest, TurningOffSecurityUpdatesWithoutConfirmationIsRefused) {
  Policy policy = Load();
  EXPECT_ERRC(policy.SetSecurityAutoInstall(false, false), Errc::ConfirmationRequired);
  EXPECT_TRUE(policy.state().security_auto_install);
  EXPECT_FALSE(policy.state().security_setting_unreported);
  EXPECT_EQ(fs_.writes, 0);
}

// The confirmed opt-out is marked for the server; the marker survives a reboot until reported.
TEST_F(PolicyTest, ConfirmedSecurityOptOutIsMarkedForReportingUntilReported) {
  {
    Policy policy = Load();
    ASSERT_TRUE(policy.SetSecurityAutoInstall(false, true).has_value());
    EXPECT_FALSE(policy.state().security_auto_install);
    EXPECT_TRUE(policy.state().security_setting_unreported);
    auto s = policy.Offer("s1", UpdateKind::Security, clock_.Now());
    const Decision d = policy.Decide(*s, clock_.Now());
    EXPECT_EQ(d.verdict, Verdict::NeedsUser);
    EXPECT_EQ(d.reason, Reason::SecurityAutomaticInstallOff);
    // Opted out, a postponed security update does not install at the cap either.
    ASSERT_TRUE(policy.Postpone("s1", clock_.Now() + kDay, clock_.Now()).has_value());
    EXPECT_EQ(policy.Decide(*s, clock_.Now() + kDay * 8).verdict, Verdict::NeedsUser);
  }
  Policy policy = Load();
  EXPECT_TRUE(policy.state().security_setting_unreported);
  ASSERT_TRUE(policy.MarkSecuritySettingReported().has_value());
  EXPECT_FALSE(Load().state().security_setting_unreported);
  // Turning it back on is reported too, and needs no confirmation.
  ASSERT_TRUE(policy.SetSecurityAutoInstall(true, false).has_value());
  EXPECT_TRUE(policy.state().security_setting_unreported);
}

// Security and feature updates are independent: a refused feature update does not block a
// security one.
TEST_F(PolicyTest, RefusedFeatureUpdateDoesNotBlockSecurityUpdate) {
  Policy policy = Load();
  auto feature = policy.Offer("f1", UpdateKind::Feature, clock_.Now());
  auto security = policy.Offer("s1", UpdateKind::Security, clock_.Now());
  ASSERT_TRUE(policy.Refuse("f1").has_value());
  const Decision f = policy.Decide(*feature, clock_.Now());
  EXPECT_EQ(f.verdict, Verdict::Refused);
  EXPECT_EQ(f.reason, Reason::RefusedByUser);
  const Decision s = policy.Decide(*security, clock_.Now());
  EXPECT_EQ(s.verdict, Verdict::Install);
  EXPECT_EQ(s.reason, Reason::Automatic);
}

// A pending (postponed, or not automatically installable) feature update never delays a
// security one.
TEST_F(PolicyTest, PendingFeatureUpdateDoesNotDelaySecurityUpdate) {
  Policy policy = Load();
  auto feature = policy.Offer("f1", UpdateKind::Feature, clock_.Now());
  auto security = policy.Offer("s1", UpdateKind::Security, clock_.Now() + hours(1));
  ASSERT_TRUE(policy.Postpone("f1", clock_.Now() + kDay * 60, clock_.Now()).has_value());
  ASSERT_TRUE(policy.SetAutoInstall(false).has_value());
  EXPECT_EQ(policy.Decide(*feature, clock_.Now()).verdict, Verdict::NeedsUser);
  EXPECT_EQ(policy.Decide(*security, clock_.Now() + hours(1)).verdict, Verdict::Install);
}

TEST_F(PolicyTest, SecurityUpdatesCannotBeRefused) {
  Policy policy = Load();
  ASSERT_TRUE(policy.Offer("s1", UpdateKind::Security, clock_.Now()).has_value());
  EXPECT_ERRC(policy.Refuse("s1"), Errc::SecurityUpdateNotRefusable);
  EXPECT_ERRC(policy.Refuse("nope"), Errc::UnknownUpdate);
  // A refused feature update that is offered again as a security update is no longer refused.
  ASSERT_TRUE(policy.Offer("f1", UpdateKind::Feature, clock_.Now()).has_value());
  ASSERT_TRUE(policy.Refuse("f1").has_value());
  auto again = policy.Offer("f1", UpdateKind::Security, clock_.Now());
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->kind, UpdateKind::Security);
  EXPECT_EQ(policy.Decide(*again, clock_.Now()).verdict, Verdict::Install);
}

// A daily maintenance window 02:00..04:00 local time (UTC+1): outside it updates wait for its
// next opening; inside they install. Applies to security updates too.
TEST_F(PolicyTest, DailyMaintenanceWindowIsRespected) {
  PolicyOptions options;
  options.maintenance_window = DailyWindow{hours(2), hours(2), hours(1)};
  Policy policy = Load(options);
  auto update = policy.Offer("s1", UpdateKind::Security, clock_.Now());
  // 12:00 UTC is 13:00 local: wait for 02:00 local tomorrow = 01:00 UTC.
  Decision d = policy.Decide(*update, kMidnight + hours(12));
  EXPECT_EQ(d.verdict, Verdict::Wait);
  EXPECT_EQ(d.reason, Reason::OutsideMaintenanceWindow);
  EXPECT_EQ(d.until, kMidnight + kDay + hours(1));
  EXPECT_EQ(policy.Decide(*update, kMidnight + kDay + hours(1)).verdict, Verdict::Install);
  EXPECT_EQ(policy.Decide(*update, kMidnight + kDay + hours(3) - seconds(1)).verdict,
            Verdict::Install);
  d = policy.Decide(*update, kMidnight + kDay + hours(3));
  EXPECT_EQ(d.verdict, Verdict::Wait);
  EXPECT_EQ(d.until, kMidnight + kDay * 2 + hours(1));
}

TEST_F(PolicyTest, MaintenanceWindowAcrossMidnight) {
  PolicyOptions options;
  options.maintenance_window = DailyWindow{hours(23), hours(3), seconds(0)};
  Policy policy = Load(options);
  auto update = policy.Offer("f1", UpdateKind::Feature, clock_.Now());
  EXPECT_EQ(policy.Decide(*update, kMidnight + hours(1)).verdict, Verdict::Install);
  EXPECT_EQ(policy.Decide(*update, kMidnight + hours(23)).verdict, Verdict::Install);
  const Decision d = policy.Decide(*update, kMidnight + hours(2));
  EXPECT_EQ(d.verdict, Verdict::Wait);
  EXPECT_EQ(d.until, kMidnight + hours(23));
}

// The server's install_window from the check-in answer takes precedence over the local window.
TEST_F(PolicyTest, ServerInstallWindowIsRespected) {
  PolicyOptions options;
  options.maintenance_window = DailyWindow{hours(2), hours(1), seconds(0)};
  Policy policy = Load(options);
  auto update = policy.Offer("s1", UpdateKind::Security, clock_.Now());
  const InstallWindow window{kMidnight + hours(14), kMidnight + hours(16)};
  Decision d = policy.Decide(*update, kMidnight + hours(12), window);
  EXPECT_EQ(d.verdict, Verdict::Wait);
  EXPECT_EQ(d.reason, Reason::BeforeServerWindow);
  EXPECT_EQ(d.until, window.not_before);
  EXPECT_EQ(policy.Decide(*update, kMidnight + hours(15), window).verdict, Verdict::Install);
  d = policy.Decide(*update, kMidnight + hours(16) + seconds(1), window);
  EXPECT_EQ(d.verdict, Verdict::Wait);
  EXPECT_EQ(d.reason, Reason::ServerWindowClosed);
  EXPECT_FALSE(d.until.has_value());
}

// "Install now, reboot later": the reboot waits for the window, but never past the deadline.
TEST_F(PolicyTest, RebootLaterWaitsForTheWindowAndNeverPastTheDeadline) {
  PolicyOptions options;
  options.reboot_deadline = hours(8);
  options.maintenance_window = DailyWindow{hours(3), hours(1), seconds(0)};
  Policy policy = Load(options);
  ASSERT_TRUE(policy.Offer("f1", UpdateKind::Feature, clock_.Now()).has_value());
  // Default: reboot right after the install.
  ASSERT_TRUE(policy.MarkInstalled("f1", kMidnight + hours(12)).has_value());
  EXPECT_TRUE(policy.DecideReboot("f1", kMidnight + hours(12)).reboot_now);

  ASSERT_TRUE(policy.SetRebootLater(true).has_value());
  RebootDecision r = policy.DecideReboot("f1", kMidnight + hours(12));
  EXPECT_FALSE(r.reboot_now);
  EXPECT_EQ(r.reason, Reason::RebootLater);
  EXPECT_EQ(r.until, kMidnight + hours(20));  // the deadline comes before tomorrow's 03:00
  r = policy.DecideReboot("f1", kMidnight + hours(20));
  EXPECT_TRUE(r.reboot_now);
  EXPECT_EQ(r.reason, Reason::RebootDeadlineReached);

  // Installed at 22:00 with an 8 h deadline: the 03:00 window comes first.
  ASSERT_TRUE(policy.Offer("f2", UpdateKind::Feature, clock_.Now()).has_value());
  ASSERT_TRUE(policy.MarkInstalled("f2", kMidnight + hours(22)).has_value());
  r = policy.DecideReboot("f2", kMidnight + hours(23));
  EXPECT_FALSE(r.reboot_now);
  EXPECT_EQ(r.until, kMidnight + kDay + hours(3));
  r = policy.DecideReboot("f2", kMidnight + kDay + hours(3));
  EXPECT_TRUE(r.reboot_now);
  EXPECT_EQ(r.reason, Reason::InsideMaintenanceWindow);
  // Marking installed again does not move the deadline.
  ASSERT_TRUE(policy.MarkInstalled("f2", kMidnight + kDay + hours(5)).has_value());
  EXPECT_EQ(policy.state().updates.at("f2").installed_at, kMidnight + hours(22));
  EXPECT_ERRC(policy.MarkInstalled("nope", clock_.Now()), Errc::UnknownUpdate);
}

TEST_F(PolicyTest, EveryChoiceSurvivesAReboot) {
  {
    Policy policy = Load();
    ASSERT_TRUE(policy.SetAutoInstall(false).has_value());
    ASSERT_TRUE(policy.SetNotifications(false).has_value());
    ASSERT_TRUE(policy.SetSecurityAutoInstall(false, true).has_value());
    ASSERT_TRUE(policy.SetRebootLater(true).has_value());
    ASSERT_TRUE(policy.Offer("f1", UpdateKind::Feature, clock_.Now()).has_value());
    ASSERT_TRUE(policy.Offer("f2", UpdateKind::Feature, clock_.Now()).has_value());
    ASSERT_TRUE(policy.Offer("s1", UpdateKind::Security, clock_.Now()).has_value());
    ASSERT_TRUE(policy.Refuse("f1").has_value());
    ASSERT_TRUE(policy.Postpone("s1", clock_.Now() + kDay, clock_.Now()).has_value());
    ASSERT_TRUE(policy.MarkInstalled("f2", clock_.Now()).has_value());
  }
  Policy policy = Load();
  const PolicyState& s = policy.state();
  EXPECT_FALSE(s.auto_install);
  EXPECT_FALSE(s.notifications);
  EXPECT_FALSE(s.security_auto_install);
  EXPECT_TRUE(s.security_setting_unreported);
  EXPECT_TRUE(s.reboot_later);
  ASSERT_EQ(s.updates.size(), 3u);
  EXPECT_TRUE(s.updates.at("f1").refused);
  EXPECT_EQ(s.updates.at("s1").postponed_until, clock_.Now() + kDay);
  EXPECT_EQ(s.updates.at("s1").first_offered, clock_.Now());
  EXPECT_EQ(s.updates.at("f2").installed_at, clock_.Now());
  // Serialize -> parse is the identity.
  auto again = ParsePolicyState(SerializePolicyState(s));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, s);
  // Forget removes the record.
  ASSERT_TRUE(policy.Forget("f2").has_value());
  EXPECT_EQ(Load().state().updates.count("f2"), 0u);
}

// A failed save changes nothing, in memory or on disk.
TEST_F(PolicyTest, FailedWriteLeavesTheChoiceUnchanged) {
  Policy policy = Load();
  ASSERT_TRUE(policy.SetNotifications(false).has_value());
  fs_.fail_writes = true;
  EXPECT_ERRC(policy.SetAutoInstall(false), Errc::PolicyWriteFailed);
  EXPECT_TRUE(policy.state().auto_install);
  EXPECT_ERRC(policy.Offer("f1", UpdateKind::Feature, clock_.Now()), Errc::PolicyWriteFailed);
  EXPECT_TRUE(policy.state().updates.empty());
  fs_.fail_writes = false;
  EXPECT_TRUE(Load().state().auto_install);
}

TEST_F(PolicyTest, OldestOfferIsForgottenWhenTheTableIsFull) {
  Policy policy = Load();
  for (std::size_t i = 0; i < kMaxPolicyUpdates; ++i) {
    ASSERT_TRUE(policy
                    .Offer("u" + std::to_string(i), UpdateKind::Feature,
                           clock_.Now() + seconds(static_cast<std::int64_t>(i)))
                    .has_value());
  }
  ASSERT_TRUE(policy.Offer("new", UpdateKind::Security, clock_.Now() + hours(1)).has_value());
  EXPECT_EQ(policy.state().updates.size(), kMaxPolicyUpdates);
  EXPECT_EQ(policy.state().updates.count("u0"), 0u);
  EXPECT_TRUE(Load().state().updates.count("new"));
}

// A corrupt or hostile policy file is PolicyCorrupt: the agent does not guess the user's choices
// and does not overwrite the file with defaults.
TEST_F(PolicyTest, CorruptPolicyFileIsRejectedAndKept) {
  const std::string good = SerializePolicyState({});
  const std::string cases[] = {
      "",
      "{",
      "[]",
      "{\"format\":1}",
      // Unknown key.
      good.substr(0, good.rfind('}')) + ",\"extra\":true}",
      // Invalid UTF-8 in an update ID.
      "{\"format\":1,\"auto_install\":true,\"notifications\":true,\"security_auto_install\":true,"
      "\"security_setting_unreported\":false,\"reboot_later\":false,\"updates\":{\"\xc3\x28\":"
      "{\"kind\":\"feature\",\"first_offered\":1,\"postponed_until\":null,\"refused\":false,"
      "\"installed_at\":null}}}",
      // Huge numbers.
      "{\"format\":1,\"auto_install\":true,\"notifications\":true,\"security_auto_install\":true,"
      "\"security_setting_unreported\":false,\"reboot_later\":false,\"updates\":{\"u\":"
      "{\"kind\":\"feature\",\"first_offered\":253402300800,\"postponed_until\":null,"
      "\"refused\":false,\"installed_at\":null}}}",
      "{\"format\":1,\"auto_install\":true,\"notifications\":true,\"security_auto_install\":true,"
      "\"security_setting_unreported\":false,\"reboot_later\":false,\"updates\":{\"u\":"
      "{\"kind\":\"feature\",\"first_offered\":1,\"postponed_until\":1e300,"
      "\"refused\":false,\"installed_at\":null}}}",
      "{\"format\":1,\"auto_install\":true,\"notifications\":true,\"security_auto_install\":true,"
      "\"security_setting_unreported\":false,\"reboot_later\":false,\"updates\":{\"u\":"
      "{\"kind\":\"feature\",\"first_offered\":184467440737095516160,\"postponed_until\":null,"
      "\"refused\":false,\"installed_at\":null}}}",
      // Wrong types and values.
      "{\"format\":1,\"auto_install\":1,\"notifications\":true,\"security_auto_install\":true,"
      "\"security_setting_unreported\":false,\"reboot_later\":false,\"updates\":{}}",
      "{\"format\":2,\"auto_install\":true,\"notifications\":true,\"security_auto_install\":true,"
      "\"security_setting_unreported\":false,\"reboot_later\":false,\"updates\":{}}",
      "{\"format\":1,\"auto_install\":true,\"notifications\":true,\"security_auto_install\":true,"
      "\"security_setting_unreported\":false,\"reboot_later\":false,\"updates\":{\"u\":"
      "{\"kind\":\"security\",\"first_offered\":1,\"postponed_until\":null,"
      "\"refused\":true,\"installed_at\":null}}}",
      // Missing key (security_auto_install must never default silently).
      "{\"format\":1,\"auto_install\":true,\"notifications\":true,"
      "\"security_setting_unreported\":false,\"reboot_later\":false,\"updates\":{}}",
      // Duplicate key.
      "{\"format\":1,\"format\":1,\"auto_install\":true,\"notifications\":true,"
      "\"security_auto_install\":true,\"security_setting_unreported\":false,"
      "\"reboot_later\":false,\"updates\":{}}",
  };
  for (const std::string& text : cases) {
    SCOPED_TRACE(text);
    EXPECT_ERRC(ParsePolicyState(text), Errc::PolicyCorrupt);
    WriteRaw(text);
    EXPECT_ERRC(Policy::Load(fs_, file(), {}), Errc::PolicyCorrupt);
    EXPECT_EQ(testing::ReadFileOrEmpty(file()), text);  // left for inspection, not overwritten
  }
  ASSERT_TRUE(ParsePolicyState(good).has_value());
}

TEST_F(PolicyTest, OversizedPolicyFileIsRejected) {
  WriteRaw(std::string(kMaxPolicyFileBytes + 1, ' '));
  EXPECT_ERRC(Policy::Load(fs_, file(), {}), Errc::PolicyCorrupt);
  EXPECT_ERRC(ParsePolicyState(std::string(kMaxPolicyFileBytes + 1, ' ')), Errc::PolicyCorrupt);
}

TEST_F(PolicyTest, TooManyUpdatesInTheFileIsCorrupt) {
  PolicyState s;
  for (std::size_t i = 0; i <= kMaxPolicyUpdates; ++i) {
    s.updates["u" + std::to_string(i)] = UpdateRecord{};
  }
  EXPECT_ERRC(ParsePolicyState(SerializePolicyState(s)), Errc::PolicyCorrupt);
}

// The explicit way out: Reset keeps the corrupt file aside and writes the defaults.
TEST_F(PolicyTest, ResetKeepsTheCorruptFileAndWritesDefaults) {
  WriteRaw("{not json");
  auto policy = Policy::Reset(fs_, file(), {});
  ASSERT_TRUE(policy.has_value()) << policy.error().ToString();
  EXPECT_EQ(policy->state(), PolicyState{});
  std::filesystem::path kept = file();
  kept += ".corrupt";
  EXPECT_EQ(testing::ReadFileOrEmpty(kept), "{not json");
  EXPECT_EQ(Load().state(), PolicyState{});
}

TEST(PolicyErrcTest, CodesHaveStableNames) {
  EXPECT_EQ(Error(Errc::PolicyCorrupt, "x").ToString(), "agent.PolicyCorrupt: x");
  EXPECT_EQ(Error(Errc::PolicyWriteFailed, "x").ToString(), "agent.PolicyWriteFailed: x");
  EXPECT_EQ(Error(Errc::ConfirmationRequired, "x").ToString(), "agent.ConfirmationRequired: x");
  EXPECT_EQ(Error(Errc::InvalidPolicyValue, "x").ToString(), "agent.InvalidPolicyValue: x");
  EXPECT_EQ(Error(Errc::UnknownUpdate, "x").ToString(), "agent.UnknownUpdate: x");
  EXPECT_EQ(Error(Errc::SecurityUpdateNotRefusable, "x").ToString(),
            "agent.SecurityUpdateNotRefusable: x");
  EXPECT_EQ(Error(Errc::ScheduleCorrupt, "x").ToString(), "agent.ScheduleCorrupt: x");
  EXPECT_EQ(static_cast<int>(Errc::PolicyCorrupt), 40);
  EXPECT_EQ(static_cast<int>(Errc::ScheduleCorrupt), 46);
}

TEST_F(PolicyTest, RejectsInvalidOptions) {
  PolicyOptions o;
  o.security_postpone_cap = seconds(0);
  EXPECT_ERRC(Policy::Load(fs_, file(), o), Errc::InvalidConfig);
  o = {};
  o.maintenance_window = DailyWindow{hours(24), hours(1), seconds(0)};
  EXPECT_ERRC(ValidatePolicyOptions(o), Errc::InvalidConfig);
  o.maintenance_window = DailyWindow{hours(1), minutes(0), seconds(0)};
  EXPECT_ERRC(ValidatePolicyOptions(o), Errc::InvalidConfig);
  o.maintenance_window = DailyWindow{hours(1), hours(1), hours(19)};
  EXPECT_ERRC(ValidatePolicyOptions(o), Errc::InvalidConfig);
  EXPECT_TRUE(ValidatePolicyOptions({}).has_value());
}

}  // namespace
}  // namespace upkeep::agent
