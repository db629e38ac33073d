#pragma once

// The device agent daemon (`upkeep-agent run`, docs/agent-daemon.md): the one place where the
// schedule, the user's policy, notices, the update flow and the reports meet.
//
// One work thread does everything that changes the device, in this order at each Tick:
//   1. after a boot: apply what the boot says about an update on trial (health checks, commit,
//      or roll back) and queue the report;
//   2. an offline bundle the local API handed over;
//   3. a check when the schedule says so (or on request, the server's hint, or a decision that
//      comes due): with a fleet server, check in and verify the director's answer against the
//      image repository (Uptane full verification); without one, read the image repository and
//      take the newest release for this hardware (release_choice.hpp);
//   4. for each release, security updates first: offer it to the policy, publish its notice,
//      install when the policy says so, reboot when the reboot policy says so;
//   5. deliver queued reports and incidents (outbox.hpp).
// A verification failure installs nothing, answers the initiator only "rejected", and queues a
// detailed incident for the server.
//
// The local API's threads call the LocalApiBackend methods; they read a snapshot under a mutex
// and hand work to the work thread (check now, install a bundle), never touching the journal.
// All timing comes from the injected Clock, so tests drive Tick() on a FakeClock.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "upkeep/agent/agent.hpp"
#include "upkeep/agent/config.hpp"
#include "upkeep/agent/notice.hpp"
#include "upkeep/agent/outbox.hpp"
#include "upkeep/agent/policy.hpp"
#include "upkeep/agent/schedule.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/localapi/backend.hpp"

namespace upkeep::deviceapi {
class DeviceClient;
struct DeviceIdentity;
}  // namespace upkeep::deviceapi

namespace upkeep::agent {

// What the daemon persists about its conversation with the fleet server (data_dir/checkin.json):
// the check-in counter (persisted before each check-in is sent) and the director counter of the
// last accepted answer (replay protection, Uptane 5.4.4.2).
struct CheckInCounters {
  std::uint64_t counter = 0;
  std::uint64_t accepted_counter = 0;
};

struct DaemonOptions {
  // Runs the reboot into the new slot. Default: bootloader.reboot_command (none configured: the
  // status stays awaiting_reboot until someone reboots).
  std::function<Result<void>()> reboot;
  // Called for each event the local API publishes (D-Bus signals), on the work thread.
  std::function<void(const localapi::Event&)> on_event;
  // Events kept for GET /v1/events.
  std::size_t max_events = 256;
};

// The result of one check, for tests and the log.
struct CheckResult {
  bool not_modified = false;           // the server answered 304
  std::vector<std::string> offered;    // update IDs offered to the policy
  std::vector<std::string> installed;  // update IDs installed (rootfs: awaiting reboot)
  std::vector<std::string> rejected;   // update IDs whose verification or install failed
  std::vector<std::string> waiting;    // update IDs the policy holds back
};

class Daemon final : public localapi::LocalApiBackend {
 public:
  // Loads the policy (a corrupt policy file is kept and no automatic install happens until it is
  // reset: PolicyCorrupt is reported as an incident) and the schedule state. `random` must
  // outlive the daemon.
  [[nodiscard]] static Result<std::unique_ptr<Daemon>> Create(AgentConfig config, Filesystem& fs,
                                                              const Clock& clock,
                                                              RandomSource& random,
                                                              DaemonOptions options = {});
  ~Daemon() override;

  // Runs what is due at clock.Now() (see the top of this file) and returns when the next thing
  // is due. Never throws; errors are logged, reported and retried by the schedule.
  Clock::TimePoint Tick();
  // The work loop: Tick, then wait until the next due time or a Wake/Stop (real time). Returns
  // after Stop.
  void Run();
  void Stop();
  // Something arrived (check now, a bundle): Run's wait ends early.
  void Wake();

  // One check now, on the calling thread (tests; Tick calls it when due).
  [[nodiscard]] Result<CheckResult> CheckOnce();
  // What `upkeep-agent check` does when no daemon runs: the after-start work (commit or roll back
  // a trial), one check, the schedule updated, then queued reports and incidents delivered.
  [[nodiscard]] Result<CheckResult> CheckAndDeliver();

  [[nodiscard]] Agent& agent() { return agent_; }
  // nullopt when the policy file is damaged (no automatic installs until it is reset).
  [[nodiscard]] const std::optional<Policy>& policy() const { return policy_; }
  [[nodiscard]] const CheckSchedule& schedule() const { return schedule_; }
  [[nodiscard]] Outbox& outbox() { return outbox_; }

  // LocalApiBackend (any thread)
  [[nodiscard]] Result<localapi::DeviceInfo> Device(const localapi::Peer& peer) override;
  [[nodiscard]] Result<localapi::SupportInfo> Support(const localapi::Peer& peer) override;
  [[nodiscard]] Result<localapi::Status> GetStatus(const localapi::Peer& peer) override;
  [[nodiscard]] Result<std::vector<localapi::Notice>> Notices(const localapi::Peer& peer) override;
  [[nodiscard]] Result<localapi::PolicySettings> GetPolicy(const localapi::Peer& peer) override;
  [[nodiscard]] Result<localapi::PolicySettings> SetPolicy(
      const localapi::Peer& peer, const localapi::PolicySettings& settings) override;
  [[nodiscard]] Result<void> CheckNow(const localapi::Peer& peer) override;
  [[nodiscard]] Result<localapi::PostponeResult> Postpone(
      const localapi::Peer& peer, const localapi::PostponeRequest& request) override;
  [[nodiscard]] Result<localapi::InstallAccepted> Install(
      localapi::InstallRequest request) override;
  [[nodiscard]] Result<std::vector<localapi::Event>> Events(const localapi::Peer& peer,
                                                            std::uint64_t after,
                                                            std::size_t max) override;

 private:
  struct Candidate;
  struct PendingBundle {
    std::string install_id;
    UniqueFd fd;
    std::string path;
    localapi::Peer peer;
  };

  Daemon(AgentConfig config, Filesystem& fs, const Clock& clock, RandomSource& random,
         DaemonOptions options, std::optional<Policy> policy, std::optional<Error> policy_error,
         ScheduleState schedule_state);

  void AfterBoot();
  void InstallBundle(PendingBundle bundle);
  [[nodiscard]] Result<deviceapi::DeviceClient*> Client();
  [[nodiscard]] Result<CheckResult> CheckWithServer();
  [[nodiscard]] Result<CheckResult> CheckRepositoryAlone();
  void Handle(ReleaseSource& source, std::vector<Candidate> candidates,
              const std::optional<InstallWindow>& window, CheckResult& result);
  // Installs one candidate; false when it was rejected (incident queued).
  bool InstallCandidate(ReleaseSource& source, const Candidate& c, const std::string& origin);
  void MaybeReboot(const std::string& update_id);
  void RunReboot();
  void DeliverOutbox();
  void QueueReport(const std::string& update_id, const std::string& target, const char* outcome,
                   const std::string& detail, std::string report_id = "");
  void QueueIncident(const std::string& kind, const std::string& source, const std::string& target,
                     const Error& error);
  void Publish(const std::string& type, const std::string& message);
  void PublishNotice(const Candidate& c, bool to_user);
  void SetState(localapi::UpdateState state, std::optional<std::string> update_id = {});
  void RefreshSnapshot();
  [[nodiscard]] Result<void> SaveSchedule();
  [[nodiscard]] Result<CheckInCounters> LoadCounters();
  [[nodiscard]] Result<void> SaveCounters(const CheckInCounters& c);

  AgentConfig config_;
  Filesystem& fs_;
  const Clock& clock_;
  RandomSource& random_;
  DaemonOptions options_;
  Agent agent_;
  std::optional<Policy> policy_;
  std::optional<Error> policy_error_;  // a corrupt policy file: no automatic installs
  CheckSchedule schedule_;
  Outbox outbox_;
  std::unique_ptr<deviceapi::DeviceClient> client_;
  std::string device_id_;
  std::string etag_;  // of the last verified answer (this run only)
  bool booted_ = false;
  std::optional<std::uint64_t> hint_;           // the last answer's next_checkin_seconds
  std::optional<std::string> awaiting_reboot_;  // the installed update waiting for its reboot
  std::optional<Clock::TimePoint> outbox_retry_;
  bool policy_incident_sent_ = false;
  std::optional<Clock::TimePoint> next_decision_;  // a held-back update comes due

  // Shared with the local API threads.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool check_requested_ = false;
  std::deque<PendingBundle> bundles_;
  localapi::Status status_;
  std::vector<localapi::Component> components_;
  std::optional<Clock::TimePoint> support_until_;
  std::map<std::string, localapi::Notice> notices_;  // by update ID
  std::set<std::string> notified_;                   // notifier already ran (this run)
  std::deque<localapi::Event> events_;
  std::uint64_t next_sequence_ = 1;
  std::uint64_t next_install_id_ = 1;
};

// checkin.json's text form; Errc::JournalCorrupt for anything else.
[[nodiscard]] Result<CheckInCounters> ParseCheckInCounters(std::string_view text);
[[nodiscard]] std::string SerializeCheckInCounters(const CheckInCounters& c);

}  // namespace upkeep::agent
