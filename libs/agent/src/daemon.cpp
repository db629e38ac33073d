#include "upkeep/agent/daemon.hpp"

#include <malloc.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "upkeep/agent/release_choice.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/deviceapi/client.hpp"
#include "upkeep/install/payload.hpp"
#include "upkeep/localapi/server.hpp"
#include "upkeep/metadata/director.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/modules/module.hpp"

namespace upkeep::agent {

namespace fs = std::filesystem;
using metadata::Json;

namespace {

constexpr std::uint64_t kMaxCountersFile = 4096;
constexpr std::uint64_t kMaxPemFile = 64 * 1024;
constexpr const char* kRejected = "update rejected";

std::string Hex(std::string_view data, std::size_t chars) {
  return HexEncode(crypto::Sha256(data)).substr(0, chars);
}

// The policy's name for a release: stable across checks and restarts (derived from what the
// journal also records), short, and free of characters a display could trip over.
std::string UpdateIdFor(const std::string& target, const std::string& version) {
  return "u-" + Hex(target + "\n" + version, 24);
}

std::string ErrorCode(const Error& e) {
  const std::error_code code = e.code();
  return std::string(code.category().name()) + "." +
         std::to_string(code.value());  // nothrow: error_code
}

std::uint64_t UnixSeconds(Clock::TimePoint t) {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  return s < 0 ? 0 : static_cast<std::uint64_t>(s);
}

Clock::TimePoint FromUnix(std::uint64_t s) {
  return Clock::TimePoint(std::chrono::seconds(
      static_cast<std::int64_t>(std::min<std::uint64_t>(s, 253'402'300'799ULL))));
}

// "YYYY-MM-DD" → the first second after that day (support runs through the named day).
std::optional<Clock::TimePoint> EndOfDay(const std::string& date) {
  auto t = localapi::ParseTime(date + "T00:00:00Z");
  if (!t) return std::nullopt;
  return *t + std::chrono::hours(24);
}

// Reports and incidents go to the server through the device's client; what the server refused
// for good is set aside, everything else is retried.
class ClientSender final : public OutboxSender {
 public:
  explicit ClientSender(deviceapi::DeviceClient& client) : client_(client) {}
  Result<void> Send(OutboxKind kind, std::string_view body) override {
    return kind == OutboxKind::kReport ? client_.SendReportJson(body)
                                       : client_.SendIncidentJson(body);
  }
  bool Retryable(const Error& e) const override {
    if (e.code().category() != std::error_code(deviceapi::Errc::BadRequest).category()) {
      return true;  // network, timeout, TLS
    }
    const int value = e.code().value();  // nothrow: error_code
    switch (static_cast<deviceapi::Errc>(value)) {
      case deviceapi::Errc::BadRequest:
      case deviceapi::Errc::TooLarge:
      case deviceapi::Errc::InvalidArgument:
      case deviceapi::Errc::Conflict:
        return false;
      default:
        return true;
    }
  }

 private:
  deviceapi::DeviceClient& client_;
};

// Idle CPU and I/O priority for the calling thread (Linux: both apply per thread).
void LowerPriority() {
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 19);
  constexpr int kIoprioClassIdle = 3;
  constexpr int kIoprioClassShift = 13;
  constexpr int kIoprioWhoProcess = 1;
  (void)::syscall(SYS_ioprio_set, kIoprioWhoProcess, 0, kIoprioClassIdle << kIoprioClassShift);
}

}  // namespace

struct Daemon::Candidate {
  metadata::TargetFile target;
  metadata::UpdateMetadata update;
  std::string component;
  std::string update_id;
  UpdateKind kind = UpdateKind::Feature;
};

// ---------------------------------------------------------------------------------------------
// checkin.json

Result<CheckInCounters> ParseCheckInCounters(std::string_view text) {
  auto bad = [](const std::string& why) {
    return Error(Errc::JournalCorrupt, "checkin.json: " + why);
  };
  auto json = metadata::ParseJson(text);
  if (!json) return bad(json.error().message());
  auto reader = metadata::JsonReader::Of(*json, metadata::Errc::InvalidMetadata, "checkin.json");
  if (!reader) return bad(reader.error().message());
  auto counter = reader->Uint("counter");
  auto accepted = reader->Uint("accepted_counter");
  if (!counter) return bad(counter.error().message());
  if (!accepted) return bad(accepted.error().message());
  if (auto rest = reader->NoUnknownKeys(); !rest) return bad(rest.error().message());
  return CheckInCounters{*counter, *accepted};
}

std::string SerializeCheckInCounters(const CheckInCounters& c) {
  return metadata::DumpJson(
             Json{{"counter", c.counter}, {"accepted_counter", c.accepted_counter}}) +
         "\n";
}

// ---------------------------------------------------------------------------------------------
// Construction

Result<std::unique_ptr<Daemon>> Daemon::Create(AgentConfig config, Filesystem& fs,
                                               const Clock& clock, RandomSource& random,
                                               DaemonOptions options) {
  UPKEEP_TRY(fs.CreateDirectories(config.device.data_dir));
  std::optional<Policy> policy;
  std::optional<Error> policy_error;
  auto loaded = Policy::Load(fs, config.device.data_dir / "policy.json", config.policy);
  if (loaded) {
    policy.emplace(std::move(*loaded));
  } else if (loaded.error().code() == Errc::PolicyCorrupt) {
    policy_error = loaded.error();  // kept as it is; automatic installs wait for a reset
  } else {
    return loaded.error();
  }
  ScheduleState schedule_state;
  if (auto text = fs.ReadFile(config.device.data_dir / "schedule.json", 4096)) {
    // A damaged schedule file only costs the backoff history: start afresh and say so.
    if (auto parsed = ParseScheduleState(*text)) {
      schedule_state = *parsed;
    } else {
      log::warn("schedule.json: {}; starting with a fresh schedule", parsed.error().ToString());
    }
  }
  std::unique_ptr<Daemon> d(new Daemon(std::move(config), fs, clock, random, std::move(options),
                                       std::move(policy), std::move(policy_error), schedule_state));
  return d;
}

Daemon::Daemon(AgentConfig config, Filesystem& fs, const Clock& clock, RandomSource& random,
               DaemonOptions options, std::optional<Policy> policy,
               std::optional<Error> policy_error, ScheduleState schedule_state)
    : config_(std::move(config)),
      fs_(fs),
      clock_(clock),
      random_(random),
      options_(std::move(options)),
      agent_(config_, fs, clock),
      policy_(std::move(policy)),
      policy_error_(std::move(policy_error)),
      schedule_(config_.schedule, random, schedule_state),
      outbox_(config_.device.data_dir / "outbox", fs, clock) {
  support_until_ = EndOfDay(config_.device.support_until);
  agent_.SetEventSink([this](const install::Event& e) {
    // The detail stays in the event log; users see the step.
    if (e.id == install::event::kInstallStarted) SetState(localapi::UpdateState::kDownloading);
    if (e.id == install::event::kInstalled) SetState(localapi::UpdateState::kInstalling);
  });
  agent_.SetProgress([this](const install::ImageProgress& p) {
    std::lock_guard lock(mutex_);
    status_.progress = localapi::Progress{p.image_bytes, p.image_size};
  });
}

Daemon::~Daemon() = default;

// ---------------------------------------------------------------------------------------------
// The work loop

Clock::TimePoint Daemon::Tick() {
  if (!booted_) {
    booted_ = true;
    schedule_.OnBoot(clock_.Now());
    AfterBoot();
  }
  // Bundles handed over by the local API, in order.
  for (;;) {
    std::optional<PendingBundle> b;
    {
      std::lock_guard lock(mutex_);
      if (bundles_.empty()) break;
      b.emplace(std::move(bundles_.front()));
      bundles_.pop_front();
    }
    InstallBundle(std::move(*b));
  }
  bool requested = false;
  {
    std::lock_guard lock(mutex_);
    requested = check_requested_;
    check_requested_ = false;
  }
  Clock::TimePoint now = clock_.Now();
  const bool decision_due = next_decision_ && *next_decision_ <= now;
  if (requested || (decision_due && !awaiting_reboot_)) {
    // Decide again from a full answer: a 304 would carry nothing to decide on.
    etag_.clear();
    schedule_.RequestNow(now);
  }
  if (decision_due) {
    next_decision_.reset();
    if (awaiting_reboot_) MaybeReboot(*awaiting_reboot_);
  }
  if (schedule_.Due(now)) {
    auto result = CheckOnce();
    now = clock_.Now();
    if (result) {
      schedule_.OnSuccess(now, hint_);
    } else {
      log::warn("check failed: {}", result.error().ToString());
      schedule_.OnFailure(now);
    }
    if (auto saved = SaveSchedule(); !saved) log::warn("{}", saved.error().ToString());
  }
  DeliverOutbox();
  Clock::TimePoint next = schedule_.NextCheck(clock_.Now());
  if (next_decision_) next = std::min(next, *next_decision_);
  if (outbox_retry_) next = std::min(next, *outbox_retry_);
  return next;
}

Result<CheckResult> Daemon::CheckAndDeliver() {
  if (!booted_) {
    booted_ = true;
    schedule_.OnBoot(clock_.Now());
    AfterBoot();
  }
  auto result = CheckOnce();
  if (result) {
    schedule_.OnSuccess(clock_.Now(), hint_);
  } else {
    schedule_.OnFailure(clock_.Now());
  }
  if (auto saved = SaveSchedule(); !saved) log::warn("{}", saved.error().ToString());
  DeliverOutbox();
  return result;
}

void Daemon::Run() {
  if (config_.daemon.low_priority) LowerPriority();
  for (;;) {
    // Libraries return errors as values; should anything still throw, the daemon logs it and
    // retries after the backoff instead of ending (the journal keeps every step).
    Clock::TimePoint next = clock_.Now() + config_.schedule.backoff_base;
    try {
      next = Tick();
    } catch (const std::exception& e) {
      log::error("work loop: {}", e.what());
    }
    // A check's buffers (TLS, metadata, chunks) are freed; give the pages back while idle.
    (void)::malloc_trim(0);
    std::unique_lock lock(mutex_);
    if (stop_) return;
    if (check_requested_ || !bundles_.empty()) continue;
    // Real time: the clock's "now" and the wait are both wall-clock based; a bounded wait keeps
    // a changed system time from stalling the loop, and waiting at least a second (deadlines are
    // whole seconds) keeps anything due from making it spin.
    const std::chrono::seconds wait = std::clamp<std::chrono::seconds>(
        next - clock_.Now(), std::chrono::seconds(1), std::chrono::minutes(10));
    wake_.wait_for(lock, wait, [this] { return stop_ || check_requested_ || !bundles_.empty(); });
    if (stop_) return;
  }
}

void Daemon::Stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
}

void Daemon::Wake() { wake_.notify_all(); }

Result<void> Daemon::SaveSchedule() {
  return fs_.WriteFileAtomic(config_.device.data_dir / "schedule.json",
                             SerializeScheduleState(schedule_.state()));
}

Result<CheckInCounters> Daemon::LoadCounters() {
  auto text = fs_.ReadFile(config_.device.data_dir / "checkin.json", kMaxCountersFile);
  if (!text) {
    if (text.error().code() == common::Errc::FileNotFound) return CheckInCounters{};
    return text.error();
  }
  return ParseCheckInCounters(*text);
}

Result<void> Daemon::SaveCounters(const CheckInCounters& c) {
  return fs_.WriteFileAtomic(config_.device.data_dir / "checkin.json", SerializeCheckInCounters(c));
}

// ---------------------------------------------------------------------------------------------
// After a boot: the trial system proves itself, or the old one is back

void Daemon::AfterBoot() {
  auto state = agent_.Reconcile();
  if (!state) {
    log::error("journal: {}", state.error().ToString());
    QueueIncident("journal_unusable", "device", "", state.error());
    RefreshSnapshot();
    return;
  }
  if (state->update && state->update->state == UpdateState::Trial) {
    const PendingUpdate u = *state->update;
    const std::string id = UpdateIdFor(u.target, u.version);
    auto committed = agent_.Commit();
    if (committed) {
      Publish("committed", "update " + u.version + " is installed");
      QueueReport(id, u.target, "committed", "");
      std::lock_guard lock(mutex_);
      if (policy_) (void)policy_->Forget(id);
      notices_.erase(id);
    } else {
      // Health checks failed: the journal says Reverting; the next boot runs the old slot.
      Publish("failed", "update " + u.version + " did not work and is being undone");
      QueueIncident("health_check_failed", "device", u.target, committed.error());
      RunReboot();
    }
    state = agent_.store().Load();
  } else if (state->update && (state->update->state == UpdateState::Switched ||
                               state->update->state == UpdateState::Reverting)) {
    // Installed before this start and still waiting for its reboot.
    awaiting_reboot_ = UpdateIdFor(state->update->target, state->update->version);
    SetState(localapi::UpdateState::kAwaitingReboot, awaiting_reboot_);
    next_decision_ = clock_.Now();
  }
  // Whatever a boot ended (rolled back, committed by an earlier start), reported once.
  if (state && state->last && state->last->outcome != "failed") {
    const LastResult& last = *state->last;
    const std::string marker =
        Hex(last.outcome + "\n" + last.target + "\n" + last.version + "\n" + last.detail, 32);
    auto reported = fs_.ReadFile(config_.device.data_dir / "last-reported", 256);
    if (!reported || *reported != marker) {
      QueueReport(UpdateIdFor(last.target, last.version), last.target, last.outcome.c_str(),
                  last.detail, "r-" + marker);
      if (auto w = fs_.WriteFileAtomic(config_.device.data_dir / "last-reported", marker); !w) {
        log::warn("{}", w.error().ToString());
      }
      if (last.outcome == "rolled_back") {
        Publish("rolled_back", "the previous version is running again");
      }
    }
  }
  RefreshSnapshot();
}

// ---------------------------------------------------------------------------------------------
// Checks

Result<CheckResult> Daemon::CheckOnce() {
  SetState(localapi::UpdateState::kChecking);
  hint_.reset();
  auto result = config_.server.url.empty() ? CheckRepositoryAlone() : CheckWithServer();
  {
    std::lock_guard lock(mutex_);
    status_.last_check = clock_.Now();
  }
  if (awaiting_reboot_) {
    SetState(localapi::UpdateState::kAwaitingReboot, awaiting_reboot_);
  } else {
    SetState(localapi::UpdateState::kIdle);
  }
  RefreshSnapshot();
  return result;
}

Result<deviceapi::DeviceClient*> Daemon::Client() {
  if (client_) return client_.get();
  const fs::path dir = config_.device.data_dir / "identity";
  auto identity = deviceapi::LoadIdentity(fs_, dir);
  if (!identity && identity.error().code() != common::Errc::FileNotFound) return identity.error();
  if (!identity) {
    // First contact: enrol with the one-time token or the manufacturer's certificate.
    deviceapi::ServerEndpoint endpoint;
    endpoint.server_url = config_.server.url;
    UPKEEP_ASSIGN_OR_RETURN(endpoint.server_ca_pem,
                            fs_.ReadFile(config_.server.ca_file, kMaxPemFile));
    std::string token;
    if (!config_.server.manufacturer_certificate.empty()) {
      UPKEEP_ASSIGN_OR_RETURN(endpoint.manufacturer_certificate_pem,
                              fs_.ReadFile(config_.server.manufacturer_certificate, kMaxPemFile));
      UPKEEP_ASSIGN_OR_RETURN(endpoint.manufacturer_key_pem,
                              fs_.ReadFile(config_.server.manufacturer_key, kMaxPemFile));
    } else if (!config_.server.token_file.empty()) {
      UPKEEP_ASSIGN_OR_RETURN(token, fs_.ReadFile(config_.server.token_file, 4096));
      while (!token.empty() &&
             (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) {
        token.pop_back();
      }
    } else {
      return Error(Errc::InvalidConfig,
                   "not enrolled: configure server.token_file or server.manufacturer_certificate");
    }
    std::string serial = config_.device.serial;
    if (serial.empty()) {
      auto machine_id = fs_.ReadFile("/etc/machine-id", 256);
      if (machine_id) serial = machine_id->substr(0, machine_id->find('\n'));
    }
    if (serial.empty())
      return Error(Errc::InvalidConfig, "device.serial: no serial and no machine ID");
    UPKEEP_ASSIGN_OR_RETURN(auto enrolling, deviceapi::DeviceClient::ForEnrolment(endpoint));
    auto enrolled = enrolling->Enrol(token, config_.device.hardware, serial);
    if (!enrolled) return enrolled.error();
    if (!enrolled->director_root) {
      return Error(deviceapi::Errc::ProtocolError, "the server sent no director root at enrolment");
    }
    // The identity first: the token is spent now, and the director root travels inside it.
    UPKEEP_TRY(deviceapi::SaveIdentity(fs_, dir, *enrolled));
    Publish("enrolled", "the device is registered with its fleet server");
    identity = std::move(*enrolled);
  }
  // The director root the device pins from enrolment on (written again if a power cut came
  // between the identity and it).
  const fs::path pinned = config_.device.data_dir / "director" / "root.json";
  UPKEEP_ASSIGN_OR_RETURN(const bool has_root, fs_.Exists(pinned));
  if (!has_root) {
    if (!identity->director_root) {
      return Error(deviceapi::Errc::InvalidIdentity, "the stored identity holds no director root");
    }
    UPKEEP_TRY(fs_.CreateDirectories(pinned.parent_path()));
    UPKEEP_TRY(fs_.WriteFileAtomic(pinned, *identity->director_root));
  }
  UPKEEP_ASSIGN_OR_RETURN(client_, deviceapi::DeviceClient::ForIdentity(*identity));
  device_id_ = identity->device_id;
  return client_.get();
}

Result<CheckResult> Daemon::CheckWithServer() {
  UPKEEP_ASSIGN_OR_RETURN(deviceapi::DeviceClient * client, Client());
  UPKEEP_ASSIGN_OR_RETURN(CheckInCounters counters, LoadCounters());
  ++counters.counter;
  UPKEEP_TRY(SaveCounters(counters));  // persisted before it is sent
  UPKEEP_ASSIGN_OR_RETURN(DeviceState state, agent_.store().Load());

  deviceapi::CheckInRequest q;
  q.counter = counters.counter;
  q.model = config_.device.hardware;
  q.hardware = config_.device.hardware;
  for (const auto& [name, c] : state.components) {
    q.components[name] = {c.version, c.target, c.security_version};
  }
  {
    std::lock_guard lock(mutex_);
    if (policy_) {
      const PolicyState& p = policy_->state();
      q.auto_install = p.auto_install;
      q.notifications = p.notifications;
      q.security_auto_install = p.security_auto_install;
      for (const auto& [id, record] : p.updates) {
        if (record.postponed_until) {
          const std::uint64_t until = UnixSeconds(*record.postponed_until);
          q.postponed_until = q.postponed_until ? std::min(*q.postponed_until, until) : until;
        }
      }
    }
  }
  if (state.update) {
    q.update_state = ToString(state.update->state);
    q.update_target = state.update->target;
  }
  q.if_none_match = etag_;
  UPKEEP_ASSIGN_OR_RETURN(deviceapi::CheckInAnswer answer, client->CheckIn(q));
  {
    std::lock_guard lock(mutex_);
    if (policy_ && policy_->state().security_setting_unreported) {
      (void)policy_->MarkSecuritySettingReported();
    }
  }
  CheckResult result;
  if (answer.not_modified) {
    result.not_modified = true;
    return result;
  }
  hint_ = answer.next_checkin_seconds;
  if (auto support = client->SupportPeriod(); support) {
    if (auto end = EndOfDay(support->security_updates_until)) {
      std::lock_guard lock(mutex_);
      support_until_ = end;
    }
  }

  // Uptane full verification: the director's choice must match the image repository's signed
  // release exactly, and be meant for this device, now.
  auto source = agent_.OpenSource(config_.repository.url);
  std::optional<Error> failure;
  std::optional<metadata::DirectorVerified> verified;
  if (!source) {
    failure = source.error();
  } else {
    const metadata::DirectorFiles files{answer.director.roots, answer.director.timestamp,
                                        answer.director.snapshot, answer.director.targets};
    auto v = metadata::VerifyDirectorAnswer(
        files, config_.device.data_dir / "director", fs_, clock_, *source->updater,
        {device_id_, config_.device.hardware, counters.counter, counters.accepted_counter});
    if (v) {
      verified = std::move(*v);
    } else {
      failure = v.error();
    }
  }
  if (failure) {
    // A network problem is retried quietly, and so is a problem of the device itself (files,
    // configuration); anything that failed verification is an incident.
    const bool not_verification =
        failure->code().category() == std::error_code(common::Errc::NetworkError).category() ||
        failure->code() == metadata::Errc::FetchFailed || failure->code() == Errc::InvalidConfig;
    if (!not_verification) {
      QueueIncident("verification_failed", "network", "", *failure);
      Publish("rejected", kRejected);
    }
    return *failure;
  }
  counters.accepted_counter = verified->counter;
  UPKEEP_TRY(SaveCounters(counters));
  etag_ = answer.etag;

  std::vector<Candidate> candidates;
  for (const metadata::TargetFile& target : verified->images) {
    auto m = metadata::UpdateMetadataOf(target);
    if (!m) continue;  // full verification checked it already
    auto component = ComponentFor(config_, target, *m);
    if (!component) {
      QueueIncident("verification_failed", "network", target.path, component.error());
      Publish("rejected", kRejected);
      continue;
    }
    if (auto it = state.components.find(*component); it != state.components.end() &&
                                                     it->second.target == target.path &&
                                                     it->second.version == m->version) {
      continue;  // installed
    }
    candidates.push_back({target, *m, *component, UpdateIdFor(target.path, m->version),
                          m->is_security ? UpdateKind::Security : UpdateKind::Feature});
  }
  std::optional<InstallWindow> window;
  if (answer.install_window) {
    window = InstallWindow{FromUnix(answer.install_window->not_before),
                           FromUnix(answer.install_window->not_after)};
  }
  Handle(*source, std::move(candidates), window, result);
  return result;
}

Result<CheckResult> Daemon::CheckRepositoryAlone() {
  if (config_.repository.url.empty()) {
    return Error(Errc::InvalidConfig, "neither server.url nor repository.url is configured");
  }
  UPKEEP_ASSIGN_OR_RETURN(ReleaseSource source, agent_.OpenSource(config_.repository.url));
  UPKEEP_ASSIGN_OR_RETURN(DeviceState state, agent_.store().Load());
  std::vector<Candidate> candidates;
  if (const auto* top = source.updater->trusted()->targets("targets")) {
    for (ReleaseChoice& choice : ChooseReleases(config_, state, top->body.targets)) {
      const std::string id = UpdateIdFor(choice.target.path, choice.update.version);
      const UpdateKind kind =
          choice.update.is_security ? UpdateKind::Security : UpdateKind::Feature;
      candidates.push_back({std::move(choice.target), std::move(choice.update),
                            std::move(choice.component), id, kind});
    }
  }
  CheckResult result;
  Handle(source, std::move(candidates), std::nullopt, result);
  return result;
}

void Daemon::Handle(ReleaseSource& source, std::vector<Candidate> candidates,
                    const std::optional<InstallWindow>& window, CheckResult& result) {
  // Security updates first, and components before the root filesystem (whose reboot ends the
  // check): a pending feature update never delays a security one.
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) {
                     const int ka = a.kind == UpdateKind::Security ? 0 : 1;
                     const int kb = b.kind == UpdateKind::Security ? 0 : 1;
                     if (ka != kb) return ka < kb;
                     return (a.component != "rootfs") > (b.component != "rootfs");
                   });
  bool rootfs_installed = false;
  for (const Candidate& c : candidates) {
    result.offered.push_back(c.update_id);
    Decision d;
    {
      std::lock_guard lock(mutex_);
      if (!policy_) {
        result.waiting.push_back(c.update_id);
        continue;
      }
      auto offered = policy_->Offer(c.update_id, c.kind, clock_.Now());
      if (!offered) {
        log::warn("policy: {}", offered.error().ToString());
        result.waiting.push_back(c.update_id);
        continue;
      }
      d = policy_->Decide(*offered, clock_.Now(), window);
    }
    log::info("{} {} ({}): {} ({})", c.target.path, c.update.version, ToString(c.kind),
              ToString(d.verdict), ToString(d.reason));
    if (d.publish_notice || d.record_notice) PublishNotice(c, d.publish_notice);
    if (d.verdict != Verdict::Install || (rootfs_installed && c.component == "rootfs") ||
        awaiting_reboot_) {
      result.waiting.push_back(c.update_id);
      if (d.verdict == Verdict::Wait && d.until) {
        next_decision_ = next_decision_ ? std::min(*next_decision_, *d.until) : *d.until;
      }
      continue;
    }
    if (InstallCandidate(source, c, "network")) {
      result.installed.push_back(c.update_id);
      if (c.component == "rootfs") rootfs_installed = true;
    } else {
      result.rejected.push_back(c.update_id);
    }
  }
  if (policy_error_ && !candidates.empty() && !policy_incident_sent_) {
    policy_incident_sent_ = true;
    QueueIncident("policy_corrupt", "device", "", *policy_error_);
  }
}

bool Daemon::InstallCandidate(ReleaseSource& source, const Candidate& c,
                              const std::string& origin) {
  SetState(localapi::UpdateState::kDownloading, c.update_id);
  auto outcome = agent_.InstallTarget(source, c.target);
  if (!outcome) {
    const Error& e = outcome.error();
    if (e.code() == Errc::AlreadyInstalled) {
      std::lock_guard lock(mutex_);
      if (policy_) (void)policy_->Forget(c.update_id);
      return true;
    }
    if (e.code() == install::Errc::DownloadFailed || e.code() == install::Errc::PayloadTruncated) {
      // The journal keeps the written part; the next check resumes it.
      Publish("paused", "the download was interrupted and will resume");
      SetState(localapi::UpdateState::kIdle);
      return false;
    }
    log::error("{} {}: {}", c.target.path, c.update.version, e.ToString());
    QueueIncident("verification_failed", origin, c.target.path, e);
    QueueReport(c.update_id, c.target.path, "failed", ErrorCode(e));
    Publish("rejected", kRejected);
    SetState(localapi::UpdateState::kIdle);
    return false;
  }
  if (outcome->reboot_required) {
    {
      std::lock_guard lock(mutex_);
      if (policy_) (void)policy_->MarkInstalled(c.update_id, clock_.Now());
    }
    QueueReport(c.update_id, c.target.path, "in_progress", "");
    Publish("installed", "update " + c.update.version + " is installed and needs a restart");
    awaiting_reboot_ = c.update_id;
    SetState(localapi::UpdateState::kAwaitingReboot, c.update_id);
    MaybeReboot(c.update_id);
  } else {
    {
      std::lock_guard lock(mutex_);
      if (policy_) (void)policy_->Forget(c.update_id);
      notices_.erase(c.update_id);
    }
    QueueReport(c.update_id, c.target.path, "committed", "");
    Publish("installed", c.component + " " + c.update.version + " is installed");
    SetState(localapi::UpdateState::kIdle);
  }
  RefreshSnapshot();
  return true;
}

void Daemon::InstallBundle(PendingBundle b) {
  // The user asked for this bundle: it installs whatever the automatic policy says, but it is
  // verified exactly like a network update (the agent's TUF client over the bundle).
  const std::string where = "/proc/self/fd/" + std::to_string(b.fd.get());
  SetState(localapi::UpdateState::kVerifying);
  auto fail = [&](const Error& e) {
    log::error("bundle {} (install {}): {}", PrintableText(b.path), b.install_id, e.ToString());
    QueueIncident("verification_failed", "bundle", "", e);
    Publish("rejected", kRejected);
    SetState(localapi::UpdateState::kIdle);
  };
  if (awaiting_reboot_) {
    return fail(Error(Errc::UpdatePending, "an installed update waits for its reboot"));
  }
  auto source = agent_.OpenSource(where);
  if (!source) return fail(source.error());
  auto path = agent_.ChooseBundleTarget(*source);
  if (!path) return fail(path.error());
  auto target = source->updater->GetTargetInfo(*path);
  if (!target) return fail(target.error());
  auto m = metadata::UpdateMetadataOf(*target);
  if (!m) return fail(m.error());
  auto component = ComponentFor(config_, *target, *m);
  if (!component) return fail(component.error());
  const Candidate c{*target, *m, *component, UpdateIdFor(target->path, m->version),
                    m->is_security ? UpdateKind::Security : UpdateKind::Feature};
  {
    std::lock_guard lock(mutex_);
    if (policy_) (void)policy_->Offer(c.update_id, c.kind, clock_.Now());
  }
  (void)InstallCandidate(*source, c, "bundle");
}

void Daemon::MaybeReboot(const std::string& update_id) {
  RebootDecision r;
  {
    std::lock_guard lock(mutex_);
    if (policy_) r = policy_->DecideReboot(update_id, clock_.Now());
  }
  if (!r.reboot_now) {
    if (r.until) next_decision_ = next_decision_ ? std::min(*next_decision_, *r.until) : *r.until;
    return;
  }
  RunReboot();
}

void Daemon::RunReboot() {
  if (options_.reboot) {
    Publish("rebooting", "the device restarts to finish the update");
    if (auto r = options_.reboot(); !r) log::error("reboot: {}", r.error().ToString());
    return;
  }
  if (config_.bootloader.reboot_command.empty()) {
    log::info("an update waits for the device to restart");
    return;
  }
  Publish("rebooting", "the device restarts to finish the update");
  modules::ProcessOptions o;
  o.timeout = std::chrono::seconds(60);
  o.kill_grace = std::chrono::seconds(2);
  o.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  auto r = modules::RunProcess(config_.bootloader.reboot_command, o);
  if (!r || !r->Succeeded()) log::error("reboot command failed");
}

// ---------------------------------------------------------------------------------------------
// Reports, incidents and events

void Daemon::QueueReport(const std::string& update_id, const std::string& target,
                         const char* outcome, const std::string& detail, std::string report_id) {
  if (config_.server.url.empty()) return;
  deviceapi::ReportBody report;
  report.report_id = report_id.empty()
                         ? "r-" + Hex(std::to_string(random_.Next()) + update_id + outcome, 32)
                         : std::move(report_id);
  report.update_id = update_id;
  report.target = target;
  const std::string o = outcome;
  report.outcome = o == "committed"     ? deviceapi::ReportOutcome::Committed
                   : o == "rolled_back" ? deviceapi::ReportOutcome::RolledBack
                   : o == "cancelled"   ? deviceapi::ReportOutcome::Cancelled
                   : o == "in_progress" ? deviceapi::ReportOutcome::InProgress
                                        : deviceapi::ReportOutcome::Failed;
  Json data = Json::object();
  if (!detail.empty()) data["detail"] = detail;
  report.events.push_back({UnixSeconds(clock_.Now()), "update." + o, std::move(data)});
  auto json = deviceapi::ReportJson(report);
  if (!json) {
    log::error("report: {}", json.error().ToString());
    return;
  }
  if (auto q = outbox_.Enqueue(OutboxKind::kReport, report.report_id, *json); !q) {
    log::error("outbox: {}", q.error().ToString());
  }
}

void Daemon::QueueIncident(const std::string& kind, const std::string& source,
                           const std::string& target, const Error& error) {
  log::error("incident {} ({}): {}", kind, source, error.ToString());
  if (config_.server.url.empty()) return;
  deviceapi::IncidentBody incident;
  incident.incident_id = "i-" + Hex(std::to_string(random_.Next()) + kind + target, 32);
  incident.kind = kind;
  incident.source = source;
  incident.target = target;
  incident.error = ErrorCode(error);
  incident.detail = error.ToString();
  incident.time = UnixSeconds(clock_.Now());
  // Error text may carry bytes from an untrusted source: keep the JSON valid.
  incident.detail = PrintableText(incident.detail);
  incident.target = PrintableText(incident.target);
  auto json = deviceapi::IncidentJson(incident);
  if (!json) {
    log::error("incident: {}", json.error().ToString());
    return;
  }
  if (auto q = outbox_.Enqueue(OutboxKind::kIncident, incident.incident_id, *json); !q) {
    log::error("outbox: {}", q.error().ToString());
  }
}

void Daemon::DeliverOutbox() {
  if (config_.server.url.empty()) return;
  auto pending = outbox_.Pending();
  if (!pending || pending->empty()) {
    outbox_retry_.reset();
    return;
  }
  auto client = Client();
  if (!client) {
    outbox_retry_ = clock_.Now() + std::chrono::minutes(10);
    return;
  }
  ClientSender sender(**client);
  auto round = outbox_.Deliver(sender);
  if (!round) {
    log::warn("outbox: {}", round.error().ToString());
    return;
  }
  outbox_retry_ = round->retry_at;
}

void Daemon::Publish(const std::string& type, const std::string& message) {
  localapi::Event e;
  {
    std::lock_guard lock(mutex_);
    e.sequence = next_sequence_++;
    e.time = clock_.Now();
    e.type = type;
    e.message = message;
    events_.push_back(e);
    while (events_.size() > options_.max_events) events_.pop_front();
  }
  if (options_.on_event) options_.on_event(e);
}

void Daemon::PublishNotice(const Candidate& c, bool to_user) {
  Notice notice{c.update_id, c.target.path, c.update};
  const Json json = NoticeJson(notice);
  log::info("notice {}: {}", c.update_id, NoticeText(notice));
  if (!to_user) return;
  localapi::Notice n;
  n.id = "n-" + c.update_id;
  n.update_id = c.update_id;
  n.security = c.kind == UpdateKind::Security;
  n.title = json.value("title", std::string(n.security ? "Security update" : "Update"));
  n.text = NoticeText(notice);
  bool first = false;
  {
    std::lock_guard lock(mutex_);
    if (policy_ && n.security) {
      if (auto it = policy_->state().updates.find(c.update_id);
          it != policy_->state().updates.end()) {
        n.install_by = it->second.first_offered + policy_->options().security_postpone_cap;
      }
    }
    notices_[c.update_id] = n;
    first = notified_.insert(c.update_id).second;
  }
  if (!first) return;
  Publish("notice", n.title);
  if (auto r = RunNotifier(config_.notices, notice); !r) {
    log::warn("notifier: {}", r.error().ToString());
  }
}

void Daemon::SetState(localapi::UpdateState state, std::optional<std::string> update_id) {
  bool changed = false;
  {
    std::lock_guard lock(mutex_);
    changed = status_.state != state;
    status_.state = state;
    if (update_id) status_.update_id = std::move(update_id);
    if (state == localapi::UpdateState::kIdle) {
      status_.update_id.reset();
      status_.progress.reset();
    }
  }
  if (changed) Publish("state", localapi::ToString(state));
}

void Daemon::RefreshSnapshot() {
  auto state = agent_.store().Load();
  if (!state) return;
  std::vector<localapi::Component> components;
  for (const auto& [name, c] : state->components) components.push_back({name, c.version});
  std::lock_guard lock(mutex_);
  components_ = std::move(components);
}

// ---------------------------------------------------------------------------------------------
// Local API

Result<localapi::DeviceInfo> Daemon::Device(const localapi::Peer&) {
  localapi::DeviceInfo info;
  info.model = config_.device.model.empty() ? config_.device.hardware : config_.device.model;
  info.hardware = config_.device.hardware;
  std::lock_guard lock(mutex_);
  info.components = components_;
  return info;
}

Result<localapi::SupportInfo> Daemon::Support(const localapi::Peer&) {
  localapi::SupportInfo s;
  std::lock_guard lock(mutex_);
  if (support_until_) {
    s.support_until = *support_until_ - std::chrono::hours(24);
    s.ended = clock_.Now() >= *support_until_;
  }
  return s;
}

Result<localapi::Status> Daemon::GetStatus(const localapi::Peer&) {
  std::lock_guard lock(mutex_);
  return status_;
}

Result<std::vector<localapi::Notice>> Daemon::Notices(const localapi::Peer&) {
  std::lock_guard lock(mutex_);
  bool show = true;
  if (policy_) show = policy_->state().notifications;
  std::vector<localapi::Notice> out;
  for (const auto& [id, n] : notices_) {
    if (show || n.security) out.push_back(n);
  }
  return out;
}

namespace {
localapi::PolicySettings SettingsOf(const PolicyState& p) {
  localapi::PolicySettings s;
  s.auto_install = p.auto_install;
  s.notifications = p.notifications;
  s.security_auto_install = p.security_auto_install;
  s.reboot_later = p.reboot_later;
  return s;
}

Error ToApiError(const Error& e) {
  if (e.code() == Errc::UnknownUpdate) return Error(localapi::Errc::NotFound, e.message());
  if (e.code() == Errc::InvalidPolicyValue)
    return Error(localapi::Errc::InvalidArgument, e.message());
  if (e.code() == Errc::ConfirmationRequired || e.code() == Errc::SecurityUpdateNotRefusable) {
    return Error(localapi::Errc::Conflict, e.message());
  }
  return e;
}
}  // namespace

Result<localapi::PolicySettings> Daemon::GetPolicy(const localapi::Peer&) {
  std::lock_guard lock(mutex_);
  if (!policy_) return Error(localapi::Errc::Unavailable, "the policy file is damaged");
  return SettingsOf(policy_->state());
}

Result<localapi::PolicySettings> Daemon::SetPolicy(const localapi::Peer&,
                                                   const localapi::PolicySettings& want) {
  std::lock_guard lock(mutex_);
  if (!policy_) return Error(localapi::Errc::Unavailable, "the policy file is damaged");
  const PolicyState& p = policy_->state();
  if (want.auto_install != p.auto_install) {
    if (auto r = policy_->SetAutoInstall(want.auto_install); !r) return ToApiError(r.error());
  }
  if (want.notifications != p.notifications) {
    if (auto r = policy_->SetNotifications(want.notifications); !r) return ToApiError(r.error());
  }
  if (want.reboot_later != p.reboot_later) {
    if (auto r = policy_->SetRebootLater(want.reboot_later); !r) return ToApiError(r.error());
  }
  if (want.security_auto_install != p.security_auto_install) {
    auto r = policy_->SetSecurityAutoInstall(want.security_auto_install, want.confirm_security_off);
    if (!r) return ToApiError(r.error());
  }
  return SettingsOf(policy_->state());
}

Result<void> Daemon::CheckNow(const localapi::Peer&) {
  {
    std::lock_guard lock(mutex_);
    check_requested_ = true;
  }
  Wake();
  return Ok();
}

Result<localapi::PostponeResult> Daemon::Postpone(const localapi::Peer&,
                                                  const localapi::PostponeRequest& request) {
  std::lock_guard lock(mutex_);
  if (!policy_) return Error(localapi::Errc::Unavailable, "the policy file is damaged");
  auto until = policy_->Postpone(request.update_id, request.until, clock_.Now());
  if (!until) return ToApiError(until.error());
  if (auto it = notices_.find(request.update_id); it != notices_.end() && it->second.security) {
    it->second.install_by = *until;
  }
  return localapi::PostponeResult{request.update_id, *until};
}

Result<localapi::InstallAccepted> Daemon::Install(localapi::InstallRequest request) {
  std::string id;
  {
    std::lock_guard lock(mutex_);
    if (bundles_.size() >= 4) return Error(localapi::Errc::Unavailable, "installs queued");
    id = "install-" + std::to_string(next_install_id_++);
    bundles_.push_back({id, std::move(request.bundle), request.path, request.peer});
  }
  Wake();
  return localapi::InstallAccepted{id};
}

Result<std::vector<localapi::Event>> Daemon::Events(const localapi::Peer&, std::uint64_t after,
                                                    std::size_t max) {
  std::lock_guard lock(mutex_);
  std::vector<localapi::Event> out;
  for (const auto& e : events_) {
    if (e.sequence > after && out.size() < max) out.push_back(e);
  }
  return out;
}

}  // namespace upkeep::agent
