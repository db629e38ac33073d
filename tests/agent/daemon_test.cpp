// The agent daemon's work loop on a fake clock, without a fleet server: the image repository
// alone decides (the newest release for this hardware), the user's postponement of a security
// update holds only until the cap, failed checks back off, "check now" checks at once. Every
// step is a Tick() at a chosen time: nothing sleeps.

#include "upkeep/agent/daemon.hpp"

#include <gtest/gtest.h>

#include "daemon_fixture.hpp"
#include "simulated_device.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"

namespace upkeep::agent {
namespace {

using namespace std::chrono_literals;

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_.emplace(dir_.path() / "images");
    old_image_ = testing::MakeImage(100 * 1024, 3);
    new_image_ = testing::MakeImage(100 * 1024, 4);
    device_.emplace(dir_.path() / "device", repo_->root_path(), old_image_);
    AgentConfig& c = device_->config;
    c.repository.url = repo_->www().string();
    c.schedule.boot_delay_min = 0s;
    c.schedule.boot_delay_max = 0s;
    c.daemon.low_priority = false;
    device_->Boot();
  }

  void Publish() {
    testing::ReleaseSpec spec;
    spec.version = "2.0";
    spec.image = new_image_;
    repo_->Add(spec);
    repo_->Publish();
  }

  void Start() {
    daemon_ = testing::CountingRebootsDaemon(device_->config, fs_, clock_, random_, reboots_);
    ASSERT_TRUE(daemon_);
  }

  testing::TempDir dir_;
  std::optional<testing::ReleaseRepo> repo_;
  std::string old_image_;
  std::string new_image_;
  std::optional<testing::SimulatedDevice> device_;
  LocalFilesystem fs_;
  FakeClock clock_{std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now())};
  SeededRandom random_{7};
  std::unique_ptr<Daemon> daemon_;
  int reboots_ = 0;
  localapi::Peer peer_{0, 0, 1, false};
};

TEST_F(DaemonTest, WithoutServerInstallsNewestReleaseFromRepositoryAndCommitsAfterReboot) {
  Publish();
  Start();
  daemon_->Tick();
  EXPECT_EQ(reboots_, 1);
  EXPECT_TRUE(device_->Slot("b") == new_image_);
  auto status = daemon_->GetStatus(peer_);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->state, localapi::UpdateState::kAwaitingReboot);
  EXPECT_TRUE(status->last_check.has_value());

  daemon_.reset();
  EXPECT_EQ(device_->Boot(), "b");
  Start();
  daemon_->Tick();  // commits, then checks: nothing newer
  auto journal = daemon_->agent().store().Load();
  ASSERT_TRUE(journal);
  EXPECT_FALSE(journal->update.has_value());
  EXPECT_EQ(journal->components.at("rootfs").version, "2.0");
  auto device = daemon_->Device(peer_);
  ASSERT_TRUE(device);
  ASSERT_EQ(device->components.size(), 1u);
  EXPECT_EQ(device->components[0].version, "2.0");
  EXPECT_EQ(reboots_, 1);
}

// EN 303 645 5.3-6 / CRA: a postponed security update installs once the cap runs out.
TEST_F(DaemonTest, PostponedSecurityUpdateInstallsWhenTheCapRunsOut) {
  // The maintenance window opens two hours from now and stays open two hours; the cap is three
  // hours from the first offer.
  const auto t0 = clock_.Now();
  const auto since_midnight = t0 - std::chrono::floor<std::chrono::days>(t0);
  DailyWindow w;
  w.start = std::chrono::duration_cast<std::chrono::minutes>(since_midnight + 2h) % (24h);
  w.length = 120min;
  device_->config.policy.maintenance_window = w;
  device_->config.policy.security_postpone_cap = 3h;
  Publish();
  Start();
  daemon_->Tick();
  EXPECT_EQ(reboots_, 0);  // waits for the window; the notice is out
  auto notices = daemon_->Notices(peer_);
  ASSERT_TRUE(notices);
  ASSERT_EQ(notices->size(), 1u);
  EXPECT_TRUE((*notices)[0].security);
  ASSERT_TRUE((*notices)[0].install_by.has_value());
  EXPECT_EQ(*(*notices)[0].install_by, t0 + 3h);

  // The user postpones it by a month: the answer says when it really installs.
  auto postponed = daemon_->Postpone(peer_, {(*notices)[0].update_id, t0 + 24h * 30});
  ASSERT_TRUE(postponed) << postponed.error().ToString();
  EXPECT_EQ(postponed->until, t0 + 3h);

  // The window opens: the postponement still holds.
  clock_.Set(t0 + 2h + 10min);
  daemon_->Tick();
  EXPECT_EQ(reboots_, 0);
  EXPECT_TRUE(device_->Slot("b").empty());

  // The cap runs out inside the window: it installs.
  clock_.Set(t0 + 3h);
  daemon_->Tick();
  EXPECT_EQ(reboots_, 1);
  EXPECT_TRUE(device_->Slot("b") == new_image_);
}

// "Install now, reboot later": the reboot waits, across a restart of the daemon, but never past
// the deadline.
TEST_F(DaemonTest, RebootLaterWaitsUntilTheDeadlineAcrossARestart) {
  device_->config.policy.reboot_deadline = 2h;
  Publish();
  Start();
  localapi::PolicySettings s;
  s.reboot_later = true;
  ASSERT_TRUE(daemon_->SetPolicy(peer_, s));
  const auto t0 = clock_.Now();
  daemon_->Tick();
  EXPECT_TRUE(device_->Slot("b") == new_image_);
  EXPECT_EQ(reboots_, 0);
  auto status = daemon_->GetStatus(peer_);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->state, localapi::UpdateState::kAwaitingReboot);

  clock_.Set(t0 + 1h);
  daemon_.reset();  // the daemon restarts: the deadline is kept in the policy file
  Start();
  daemon_->Tick();
  EXPECT_EQ(reboots_, 0);

  clock_.Set(t0 + 2h);
  daemon_->Tick();
  EXPECT_EQ(reboots_, 1);
}

TEST_F(DaemonTest, FailedChecksBackOffWithJitterAndSuccessResets) {
  // No repository published yet: every check fails.
  device_->config.repository.url = (dir_.path() / "not-yet").string();
  Start();
  Clock::TimePoint next = daemon_->Tick();
  Clock::TimePoint previous_delay_ceiling = clock_.Now();
  for (std::uint32_t failures = 1; failures <= 6; ++failures) {
    EXPECT_EQ(daemon_->schedule().state().failures, failures);
    const auto ceiling = daemon_->schedule().BackoffCeiling(failures);
    EXPECT_GT(next, clock_.Now());
    EXPECT_LE(next - clock_.Now(), ceiling);
    previous_delay_ceiling = clock_.Now() + ceiling;
    clock_.Set(next);
    next = daemon_->Tick();
  }
  (void)previous_delay_ceiling;
  EXPECT_EQ(daemon_->schedule().BackoffCeiling(6), 60s * 32);
  // The failure count survives a restart (schedule.json).
  daemon_.reset();
  Start();
  EXPECT_EQ(daemon_->schedule().state().failures, 7u);

  // The repository appears: the next check succeeds and the schedule returns to daily.
  std::filesystem::create_directory_symlink(repo_->www(), dir_.path() / "not-yet");
  Publish();
  daemon_->Tick();
  EXPECT_EQ(daemon_->schedule().state().failures, 0u);
  EXPECT_EQ(reboots_, 1);
}

TEST_F(DaemonTest, CheckNowChecksAtOnceInsteadOfTomorrow) {
  repo_->Publish();  // a repository with nothing for this device yet
  Start();
  const auto next = daemon_->Tick();  // nothing to do: the next check is a period away
  EXPECT_EQ(daemon_->schedule().state().failures, 0u);
  EXPECT_GT(next, clock_.Now() + 1min);
  Publish();
  daemon_->Tick();
  EXPECT_EQ(reboots_, 0);  // not due yet
  ASSERT_TRUE(daemon_->CheckNow(peer_));
  daemon_->Tick();
  EXPECT_EQ(reboots_, 1);
}

TEST_F(DaemonTest, CorruptPolicyFileInstallsNothingAutomatically) {
  std::filesystem::create_directories(device_->config.device.data_dir);
  testing::WriteBytes(device_->config.device.data_dir / "policy.json", "{not json");
  Publish();
  Start();
  EXPECT_FALSE(daemon_->policy().has_value());
  daemon_->Tick();
  EXPECT_EQ(reboots_, 0);
  EXPECT_TRUE(device_->Slot("b").empty());
  EXPECT_ERRC(daemon_->GetPolicy(peer_), localapi::Errc::Unavailable);
}

TEST_F(DaemonTest, PolicyChangesThroughTheApiPersistAndSecurityOptOutNeedsConfirmation) {
  Start();
  localapi::PolicySettings s;
  s.auto_install = false;
  s.notifications = false;
  auto set = daemon_->SetPolicy(peer_, s);
  ASSERT_TRUE(set) << set.error().ToString();
  EXPECT_FALSE(set->auto_install);
  s.security_auto_install = false;
  EXPECT_ERRC(daemon_->SetPolicy(peer_, s), localapi::Errc::Conflict);
  s.confirm_security_off = true;
  set = daemon_->SetPolicy(peer_, s);
  ASSERT_TRUE(set) << set.error().ToString();
  EXPECT_FALSE(set->security_auto_install);
  daemon_.reset();
  Start();
  auto got = daemon_->GetPolicy(peer_);
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->auto_install);
  EXPECT_FALSE(got->notifications);
  EXPECT_FALSE(got->security_auto_install);
  ASSERT_TRUE(daemon_->policy().has_value());
  EXPECT_TRUE(daemon_->policy()->state().security_setting_unreported);
  EXPECT_ERRC(daemon_->Postpone(peer_, {"u-unknown", clock_.Now() + 1h}), localapi::Errc::NotFound);
}

TEST(CheckInCountersTest, RoundTripAndStrictParsing) {
  const CheckInCounters c{42, 17};
  auto parsed = ParseCheckInCounters(SerializeCheckInCounters(c));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->counter, 42u);
  EXPECT_EQ(parsed->accepted_counter, 17u);
  EXPECT_ERRC(ParseCheckInCounters("{\"counter\":1}"), Errc::JournalCorrupt);
  EXPECT_ERRC(ParseCheckInCounters("{\"counter\":1,\"accepted_counter\":2,\"x\":3}"),
              Errc::JournalCorrupt);
  EXPECT_ERRC(ParseCheckInCounters("{\"counter\":-1,\"accepted_counter\":2}"),
              Errc::JournalCorrupt);
  EXPECT_ERRC(ParseCheckInCounters("\xff"), Errc::JournalCorrupt);
}

}  // namespace
}  // namespace upkeep::agent
