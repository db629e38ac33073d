#include "upkeep/agent/agent.hpp"

#include <algorithm>
#include <random>

#include "upkeep/common/directory_fetcher.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/install/bundle.hpp"
#include "upkeep/metadata/errc.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/metadata/updater.hpp"
#include "upkeep/modules/module.hpp"
#include "upkeep/transport/http_fetcher.hpp"

namespace upkeep::agent {

namespace fs = std::filesystem;
using metadata::Json;

namespace {

constexpr const char* kRootfs = "rootfs";
constexpr std::uint64_t kMaxSmallFile = 64 * 1024;
constexpr std::uint64_t kMaxEventLog = 1 << 20;

std::string RandomId() {
  std::random_device rd;
  std::vector<unsigned char> bytes(16);
  for (auto& b : bytes) b = static_cast<unsigned char>(rd() & 0xff);
  return HexEncode(bytes);
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

// File and GRUB environments go through the agent's Filesystem; U-Boot's through libubootenv.
std::unique_ptr<install::Bootloader> MakeBootloader(const BootloaderConfig& c, Filesystem& fs) {
  std::unique_ptr<install::BootEnv> env;
  if (c.type == "uboot") {
    env = install::MakeUBootEnv(c.env);
  } else if (c.type == "grub") {
    env = install::MakeGrubEnv(c.env, fs);
  } else {
    env = install::MakeFileBootEnv(c.env, fs);
  }
  install::BootloaderOptions o;
  o.slot_variable = c.slot_variable;
  o.boot_limit = c.boot_limit;
  return std::make_unique<install::Bootloader>(std::move(env), o);
}

modules::ModuleSpec ModuleSpecOf(const ModuleConfig& module) {
  modules::ModuleSpec spec;
  spec.command = module.command;
  spec.timeout = module.timeout;
  return spec;
}

}  // namespace

Result<std::string> ComponentFor(const AgentConfig& config, const metadata::TargetFile& target,
                                 const metadata::UpdateMetadata& m) {
  const bool claims_rootfs = m.component == metadata::Component::Rootfs;
  std::string component;
  if (target.path.starts_with(config.slots.target_namespace)) {
    component = kRootfs;
  } else {
    for (const auto& [name, module] : config.components) {
      const std::string ns = module.target_namespace.empty() ? name + "/" : module.target_namespace;
      if (target.path.starts_with(ns)) component = name;
    }
  }
  if (component.empty()) {
    return Error(Errc::TargetOutsideNamespace,
                 target.path + " lies outside every component's namespace on this device" +
                     (claims_rootfs ? " (root filesystem images come from " +
                                          config.slots.target_namespace + ")"
                                    : ""));
  }
  if (claims_rootfs != (component == kRootfs)) {
    return Error(Errc::TargetOutsideNamespace,
                 target.path + " is in the namespace of component " + component +
                     " but its update metadata names component " + metadata::ToString(m.component));
  }
  return component;
}

Agent::Agent(AgentConfig config, Filesystem& fs, const Clock& clock)
    : config_(std::move(config)),
      fs_(fs),
      clock_(clock),
      store_(config_.device.data_dir, fs),
      bootloader_(MakeBootloader(config_.bootloader, fs)) {}

Agent::Agent(Agent&&) noexcept = default;
Agent::~Agent() = default;

fs::path Agent::SlotPath(const std::string& slot) const {
  return slot == bootloader_->options().slot_a ? config_.slots.a : config_.slots.b;
}

void Agent::Emit(const char* id, std::string message, Json data) {
  install::Event e{id, std::move(message), std::move(data)};
  log::info("[{}] {}", e.id, e.message);
  // The event log is for the fleet and support: best effort, bounded, never fatal. Text from
  // untrusted sources (a mirror's answer, a module's output) is recorded with invalid UTF-8
  // replaced, so a hostile byte can neither abort the agent nor break the log's JSON lines.
  const fs::path log = config_.device.data_dir / "events.jsonl";
  if (auto size = fs_.FileSize(log); size && *size > kMaxEventLog) {
    (void)fs_.Rename(log, config_.device.data_dir / "events.1.jsonl");
  }
  const Json line = {{"time", static_cast<std::int64_t>(clock_.Now().time_since_epoch().count())},
                     {"id", e.id},
                     {"message", e.message},
                     {"data", e.data}};
  if (auto appended = fs_.AppendFile(log, metadata::DumpJson(line) + "\n"); !appended) {
    log::warn("event log: {}", appended.error().ToString());
  }
  if (extra_sink_) extra_sink_(e);
}

Result<void> Agent::Persist(DeviceState& state, const Transition& row, const Step& step) {
  const UpdateState from = state.update ? state.update->state : UpdateState::Idle;
  const PendingUpdate previous = state.update.value_or(PendingUpdate{});
  if (row.to == UpdateState::Idle) {
    if (row.outcome != nullptr) {
      state.last = LastResult{row.outcome, previous.target, previous.version, step.detail};
    }
    state.update.reset();
  } else {
    state.update->state = row.to;
  }
  UPKEEP_TRY(store_.Save(state));
  if (row.event != nullptr) {
    Json data = {{"from", ToString(from)},
                 {"to", ToString(row.to)},
                 {"target", previous.target},
                 {"version", previous.version},
                 {"update_id", previous.id}};
    if (!step.detail.empty()) data["detail"] = step.detail;
    data.update(step.extra);
    Emit(row.event,
         std::string(ToString(row.trigger)) + ": " + ToString(from) + " -> " + ToString(row.to) +
             (step.detail.empty() ? "" : " (" + step.detail + ")"),
         std::move(data));
  }
  return Ok();
}

Result<std::string> Agent::BootedSlot() const {
  auto text = fs_.ReadFile(config_.bootloader.cmdline, kMaxSmallFile);
  if (!text) return Error(install::Errc::BootEnvInvalid, text.error().ToString());
  UPKEEP_ASSIGN_OR_RETURN(std::string slot, install::BootedSlotFromCmdline(*text));
  if (slot != bootloader_->options().slot_a && slot != bootloader_->options().slot_b) {
    return Error(install::Errc::BootEnvInvalid, "booted from unknown slot " + slot);
  }
  return slot;
}

Result<std::string> Agent::BootId() const {
  auto text = fs_.ReadFile(config_.bootloader.boot_id, kMaxSmallFile);
  if (!text) return Error(install::Errc::BootEnvInvalid, text.error().ToString());
  return Trim(*text);
}

Result<void> Agent::CheckPolicy(const DeviceState& state, const metadata::UpdateMetadata& m,
                                const std::string& component) const {
  if (std::find(m.hardware.begin(), m.hardware.end(), config_.device.hardware) ==
      m.hardware.end()) {
    return Error(Errc::WrongHardware,
                 "release " + m.version + " is not built for " + config_.device.hardware);
  }
  SecurityFloor floor;
  if (auto it = state.security.find(component); it != state.security.end()) floor = it->second;
  if (m.security_version < floor.security_version) {
    const bool authorised =
        m.authorised_rollback_sequence && *m.authorised_rollback_sequence > floor.rollback_sequence;
    if (!authorised) {
      return Error(Errc::SecurityVersionRollback,
                   "security_version " + std::to_string(m.security_version) + " is below " +
                       std::to_string(floor.security_version) + " installed on " + component);
    }
  }
  return Ok();
}

void Agent::RaiseFloor(DeviceState& state, const std::string& component,
                       std::uint64_t security_version,
                       std::optional<std::uint64_t> rollback_sequence) {
  SecurityFloor& floor = state.security[component];
  if (rollback_sequence && security_version < floor.security_version) {
    floor.security_version = security_version;  // the signed, one-time way down
    floor.rollback_sequence = std::max(floor.rollback_sequence, *rollback_sequence);
  } else {
    floor.security_version = std::max(floor.security_version, security_version);
    if (rollback_sequence) {
      floor.rollback_sequence = std::max(floor.rollback_sequence, *rollback_sequence);
    }
  }
}

Result<DeviceState> Agent::ReconcileForInstall() {
  UPKEEP_TRY(fs_.CreateDirectories(config_.device.data_dir / "metadata"));
  UPKEEP_TRY(fs_.CreateDirectories(config_.device.data_dir / "work"));
  UPKEEP_ASSIGN_OR_RETURN(DeviceState state, Reconcile());
  if (state.update && state.update->state != UpdateState::Writing &&
      state.update->state != UpdateState::Written) {
    return Error(Errc::UpdatePending, std::string("update ") + state.update->version + " is " +
                                          ToString(state.update->state) +
                                          ": reboot, commit or roll back first");
  }
  return state;
}

Result<ReleaseSource> Agent::OpenSource(const std::string& where_arg) {
  UPKEEP_TRY(fs_.CreateDirectories(config_.device.data_dir / "metadata"));
  // The trusted root provisioned at manufacture starts the chain.
  const fs::path metadata_dir = config_.device.data_dir / "metadata";
  UPKEEP_ASSIGN_OR_RETURN(const bool has_root, fs_.Exists(metadata_dir / "root.json"));
  if (!has_root) {
    auto root = fs_.ReadFile(config_.trust.root, 512'000);
    if (!root) return Error(Errc::InvalidConfig, "trust.root: " + root.error().ToString());
    UPKEEP_TRY(fs_.WriteFileAtomic(metadata_dir / "root.json", *root));
  }

  ReleaseSource source;
  const std::string where = where_arg.empty() ? config_.repository.url : where_arg;
  std::error_code ec;
  if (where.starts_with("http://") || where.starts_with("https://")) {
    transport::HttpFetcherOptions http;
    http.ca_file = config_.repository.ca_file.string();
    source.fetcher = std::make_unique<transport::HttpFetcher>(http);
    const std::string base = where.ends_with('/') ? where : where + "/";
    source.metadata_url = base + "metadata/";
    source.targets_url = base + "targets/";
  } else if (!where.empty() && fs::is_directory(where, ec)) {
    // A published repository on a mounted medium or a local mirror.
    source.fetcher = std::make_unique<DirectoryFetcher>(where, fs_);
    source.metadata_url = DirectoryFetcher::kMetadataUrl;
    source.targets_url = DirectoryFetcher::kTargetsUrl;
  } else if (!where.empty()) {
    auto bundle = install::Bundle::Open(where);
    if (!bundle && bundle.error().code() == install::Errc::ReadFailed) {
      // An unreadable medium (stick pulled, no such file) is a source problem, like a network one.
      return Error(install::Errc::DownloadFailed, bundle.error().message());
    }
    if (!bundle) return bundle.error();
    source.bundle = std::make_unique<install::Bundle>(std::move(*bundle));
    source.fetcher = std::make_unique<install::BundleFetcher>(*source.bundle);
    source.metadata_url = install::kBundleMetadataUrl;
    source.targets_url = install::kBundleTargetsUrl;
  } else {
    return Error(Errc::InvalidConfig, "no source given and no repository.url configured");
  }
  source.updater = std::make_unique<metadata::Updater>(metadata_dir, source.metadata_url,
                                                       *source.fetcher, fs_, clock_);
  UPKEEP_TRY(source.updater->Refresh());
  return source;
}

Result<std::string> Agent::ChooseBundleTarget(ReleaseSource& source) const {
  if (!source.bundle) return Error(Errc::InvalidConfig, "a repository install needs a target name");
  const auto* top = source.updater->trusted()->targets("targets");
  std::vector<std::string> candidates;
  std::vector<std::string> indexes;  // chunk indexes travel with their payloads
  if (top != nullptr) {
    for (const auto& [path, file] : top->body.targets) {
      auto m = metadata::UpdateMetadataOf(file);
      if (!m || std::find(m->hardware.begin(), m->hardware.end(), config_.device.hardware) ==
                    m->hardware.end()) {
        continue;
      }
      if (m->payload.chunk_index) indexes.push_back(*m->payload.chunk_index);
      const std::string url = source.updater->TargetUrl(file, install::kBundleTargetsUrl);
      const auto entry =
          PercentDecode(std::string_view(url).substr(std::string_view("bundle:/").size()));
      if (entry && source.bundle->Find(*entry) != nullptr) candidates.push_back(path);
    }
  }
  std::erase_if(candidates, [&](const std::string& c) {
    return std::find(indexes.begin(), indexes.end(), c) != indexes.end();
  });
  if (candidates.size() != 1) {
    return Error(Errc::NoInstallableTarget,
                 candidates.empty() ? "the bundle holds no release for " + config_.device.hardware
                                    : "the bundle holds several releases for " +
                                          config_.device.hardware + "; name one");
  }
  return candidates.front();
}

Result<InstallOutcome> Agent::Install(const std::string& source_arg,
                                      const std::optional<std::string>& target_arg) {
  // A pending reboot or commit is reported before any source is opened.
  UPKEEP_TRY(ReconcileForInstall());
  UPKEEP_ASSIGN_OR_RETURN(ReleaseSource source, OpenSource(source_arg));
  std::string target_path;
  if (target_arg) {
    target_path = *target_arg;
  } else {
    UPKEEP_ASSIGN_OR_RETURN(target_path, ChooseBundleTarget(source));
  }
  UPKEEP_ASSIGN_OR_RETURN(const metadata::TargetFile target,
                          source.updater->GetTargetInfo(target_path));
  return InstallTarget(source, target);
}

Result<InstallOutcome> Agent::InstallTarget(ReleaseSource& source,
                                            const metadata::TargetFile& target) {
  UPKEEP_ASSIGN_OR_RETURN(DeviceState state, ReconcileForInstall());
  UPKEEP_ASSIGN_OR_RETURN(const metadata::UpdateMetadata m, metadata::UpdateMetadataOf(target));
  // The path decides the component, so the image repository's delegations decide who may ship it.
  auto component_or = ComponentFor(config_, target, m);
  if (!component_or) {
    Emit(install::event::kInstallRefused, component_or.error().message(),
         {{"target", target.path}, {"error", component_or.error().ToString()}});
    return component_or.error();
  }
  const std::string component = *component_or;
  if (auto it = state.components.find(component);
      it != state.components.end() && it->second.target == target.path &&
      it->second.version == m.version && !state.update) {
    return Error(Errc::AlreadyInstalled, component + " " + m.version + " is installed");
  }
  if (auto policy = CheckPolicy(state, m, component); !policy) {
    Emit(install::event::kInstallRefused, policy.error().message(),
         {{"target", target.path}, {"version", m.version}, {"error", policy.error().ToString()}});
    return policy.error();
  }
  if (component == kRootfs) return InstallRootfs(state, source, target, m);
  return InstallModule(state, source, target, m, component);
}

// --- Install: choose the step to begin with, then run the flow --------------------------------

struct Agent::RootfsInstall {
  ReleaseSource& source;
  const metadata::TargetFile& target;
  const install::ChunkIndex& index;
  InstallOutcome& outcome;
};

Result<InstallOutcome> Agent::InstallRootfs(DeviceState& state, ReleaseSource& source,
                                            const metadata::TargetFile& target,
                                            const metadata::UpdateMetadata& m) {
  if (m.payload.format != metadata::PayloadFormat::Chunked || !m.payload.chunk_index) {
    return Error(Errc::UnsupportedPayload,
                 "root filesystem releases must be chunked payloads (upkeep image build)");
  }
  // The chunk index is a TUF target of its own: verified in full before any payload byte. It
  // decides every byte of the image, so it must come from the root filesystem's namespace too.
  if (!m.payload.chunk_index->starts_with(config_.slots.target_namespace)) {
    return Error(Errc::TargetOutsideNamespace, "chunk index " + *m.payload.chunk_index +
                                                   " lies outside the root filesystem's " +
                                                   "namespace " + config_.slots.target_namespace);
  }
  const fs::path work = config_.device.data_dir / "work";
  UPKEEP_ASSIGN_OR_RETURN(const metadata::TargetFile index_target,
                          source.updater->GetTargetInfo(*m.payload.chunk_index));
  UPKEEP_ASSIGN_OR_RETURN(const fs::path index_file,
                          source.updater->DownloadTarget(index_target, source.targets_url, work));
  UPKEEP_ASSIGN_OR_RETURN(const install::ChunkIndex index,
                          install::ParseChunkIndexFile(index_file));
  if (index.image_size != m.payload.installed_size) {
    return Error(install::Errc::ImageSizeMismatch,
                 "chunk index image_size " + std::to_string(index.image_size) +
                     " differs from the release's installed_size " +
                     std::to_string(m.payload.installed_size));
  }
  if (index.payload_size != target.length) {
    return Error(install::Errc::InvalidChunkIndex,
                 "chunk index payload_size differs from the signed payload length");
  }

  UPKEEP_ASSIGN_OR_RETURN(const std::string booted, BootedSlot());
  const std::string to_slot = bootloader_->OtherSlot(booted);

  const bool same = state.update && state.update->target == target.path &&
                    state.update->image_sha256 == index.image_sha256 &&
                    state.update->to_slot == to_slot;
  Step begin;
  begin.trigger = Trigger::Begin;
  if (!same) {
    // A different release replaces an unfinished one: its partial image is simply overwritten.
    PendingUpdate p;  // state Idle: Begin moves it to Writing
    p.id = RandomId();
    p.component = kRootfs;
    p.target = target.path;
    p.version = m.version;
    p.security_version = m.security_version;
    p.rollback_sequence = m.authorised_rollback_sequence;
    p.from_slot = booted;
    p.to_slot = to_slot;
    p.image_sha256 = index.image_sha256;
    p.image_size = index.image_size;
    state.update = std::move(p);
    begin.extra = {{"slot", to_slot}, {"image_size", index.image_size}};
  }

  InstallOutcome outcome;
  outcome.target = target.path;
  outcome.version = m.version;
  outcome.component = kRootfs;
  outcome.to_slot = to_slot;
  RootfsInstall install{source, target, index, outcome};
  rootfs_install_ = &install;
  auto ran = RunFlow(*this, state, Command::Continue, std::move(begin));
  rootfs_install_ = nullptr;
  if (!ran) return ran.error();
  outcome.reboot_required = state.update && state.update->state == UpdateState::Switched;
  return outcome;
}

Result<InstallOutcome> Agent::InstallModule(DeviceState& state, ReleaseSource& source,
                                            const metadata::TargetFile& target,
                                            const metadata::UpdateMetadata& m,
                                            const std::string& component) {
  auto it = config_.components.find(component);
  if (it == config_.components.end()) {
    return Error(Errc::UnknownComponent, "no module configured for component " + component);
  }
  if (state.update) {
    return Error(Errc::UpdatePending, "a root filesystem update is in progress");
  }
  // The artifact is verified in full (length and hashes) before the module sees it.
  const fs::path download = config_.device.data_dir / "work";
  UPKEEP_ASSIGN_OR_RETURN(const fs::path file,
                          source.updater->DownloadTarget(target, source.targets_url, download));
  modules::ComponentHeader header;
  header.component = component;
  header.version = m.version;
  header.target = target.path;
  header.module_args_json = it->second.args_json;
  const fs::path artifacts[] = {file};
  // Before the journal names the install: a crash here leaves the journal idle, and the next
  // install prepares the work directory afresh.
  auto prepared = modules::PrepareWorkDir(fs_, ModuleWorkDir(component), header, artifacts);
  (void)fs_.Remove(file);
  if (!prepared) return prepared.error();

  PendingUpdate p;  // state Idle: BeginModule moves it to ModuleInstalling
  p.id = RandomId();
  p.component = component;
  p.target = target.path;
  p.version = m.version;
  p.security_version = m.security_version;
  p.rollback_sequence = m.authorised_rollback_sequence;
  if (auto sha = target.hashes.find("sha256"); sha != target.hashes.end()) {
    p.image_sha256 = sha->second;
  }
  p.image_size = target.length;
  module_update_id_ = p.id;
  state.update = std::move(p);
  Step begin;
  begin.trigger = Trigger::BeginModule;
  begin.extra = {{"component", component}};
  auto ran = RunFlow(*this, state, Command::Continue, std::move(begin));
  module_update_id_.clear();
  if (!ran) return ran.error();
  InstallOutcome outcome;
  outcome.target = target.path;
  outcome.version = m.version;
  outcome.component = component;
  return outcome;
}

// --- Commands after the install ----------------------------------------------------------------

// Each command first applies what the device tells (Continue), then acts on the step that
// leaves: the command is meant for the update as it is now, not as it was before the reboot.
Result<DeviceState> Agent::Reconcile() {
  UPKEEP_ASSIGN_OR_RETURN(DeviceState state, store_.Load());
  if (!state.update) return state;
  UPKEEP_TRY(RunFlow(*this, state, Command::Continue));
  return state;
}

Result<DeviceState> Agent::Commit() {
  UPKEEP_ASSIGN_OR_RETURN(DeviceState state, Reconcile());
  if (!state.update) return Error(Errc::NothingToCommit, "no update is on trial");
  UPKEEP_TRY(RunFlow(*this, state, Command::Commit));
  return state;
}

Result<DeviceState> Agent::Rollback() {
  UPKEEP_ASSIGN_OR_RETURN(DeviceState state, Reconcile());
  if (!state.update) return Error(Errc::NothingToRollBack, "no update is in progress");
  UPKEEP_TRY(RunFlow(*this, state, Command::Rollback));
  return state;
}

// --- The handlers: one per state of the flow (flow.cpp) -----------------------------------------

namespace {

Error NotOnTrial(const PendingUpdate& u) {
  return Error(Errc::NothingToCommit,
               std::string("the update is ") + ToString(u.state) + ", not on trial");
}

Step Move(Trigger trigger, std::string detail = "") {
  Step s;
  s.trigger = trigger;
  s.detail = std::move(detail);
  return s;
}

}  // namespace

// Writing the image into the inactive slot, from the source an Install gave. Without one (a
// restart) the journal waits here for the next Install of the same release, which resumes.
Result<Step> Agent::OnWriting(DeviceState& state, Command command) {
  if (command == Command::Rollback) return Move(Trigger::Cancel, "abandoned before the switch");
  if (command == Command::Commit) return NotOnTrial(*state.update);
  if (rootfs_install_ == nullptr) return Step{};
  RootfsInstall& in = *rootfs_install_;
  const std::string booted = state.update->from_slot;
  install::ImageInstallOptions o;
  o.target = SlotPath(state.update->to_slot);
  o.target_capacity = config_.slots.file_size;
  if (config_.install.reuse_chunks) {
    o.reuse_from = SlotPath(booted);
    if (auto it = state.components.find(kRootfs); it != state.components.end()) {
      o.reuse_scan_bytes = it->second.image_size;
    }
  }
  o.start_chunk = static_cast<std::size_t>(state.update->durable_chunks);
  o.checkpoint_bytes = config_.install.checkpoint_mib << 20;
  o.on_checkpoint = [&](std::size_t durable) -> Result<void> {
    state.update->durable_chunks = durable;
    return store_.Save(state);
  };
  o.on_progress = progress_;
  o.on_event = [this](const install::Event& e) { Emit(e.id.c_str(), e.message, e.data); };
  o.max_resumes = config_.install.max_resumes;
  o.resume_delay = config_.install.resume_delay;
  o.clock = &clock_;
  o.read_back = config_.slots.read_back;
  auto report =
      install::InstallImage(in.index, *in.source.fetcher,
                            in.source.updater->TargetUrl(in.target, in.source.targets_url), o);
  if (!report) {
    // A transfer that keeps failing leaves the journal where it is, to resume later; anything
    // else (a rejected chunk, a bad slot) ends this update.
    if (report.error().code() != install::Errc::DownloadFailed &&
        report.error().code() != install::Errc::PayloadTruncated) {
      Step fail = Move(Trigger::Fail, report.error().ToString());
      fail.error = report.error();
      return fail;
    }
    Emit(install::event::kInstallFailed, report.error().message(),
         {{"target", in.target.path}, {"error", report.error().ToString()}, {"resumable", true}});
    return report.error();
  }
  in.outcome.report = *report;
  state.update->durable_chunks = in.index.chunks.size();
  return Move(Trigger::ImageVerified);
}

// The image is complete: an Install records this boot's ID and switches; a restart waits for
// the next Install (the switch needs no source, but only an Install asks for it).
Result<Step> Agent::OnWritten(DeviceState& state, Command command) {
  if (command == Command::Rollback) return Move(Trigger::Cancel, "abandoned before the switch");
  if (command == Command::Commit) return NotOnTrial(*state.update);
  if (rootfs_install_ == nullptr) return Step{};
  UPKEEP_ASSIGN_OR_RETURN(state.update->boot_id, BootId());
  return Move(Trigger::Switch);
}

// Journal first (with the boot's ID), then the bootloader: repeated until the device reboots,
// and the reboot tells which slot came up.
Result<Step> Agent::OnSwitched(DeviceState& state, Command command) {
  PendingUpdate& u = *state.update;
  UPKEEP_ASSIGN_OR_RETURN(const std::string booted, BootedSlot());
  UPKEEP_ASSIGN_OR_RETURN(const std::string boot_id, BootId());
  if (boot_id != u.boot_id) {
    if (booted == u.to_slot) {
      u.boot_id = boot_id;
      return Move(Trigger::BootedNew);
    }
    UPKEEP_ASSIGN_OR_RETURN(const std::string marker, bootloader_->TrialUpdateId());
    if (marker == u.id) return Move(Trigger::BootedOld, "the new slot did not boot");
    // The switch never reached the boot environment before the reboot: switch now.
    u.boot_id = boot_id;
    return Move(Trigger::Switch);
  }
  if (command == Command::Rollback) {
    UPKEEP_TRY(bootloader_->Revert(u.from_slot));
    return Move(Trigger::Cancel, "reverted before the reboot");
  }
  UPKEEP_TRY(bootloader_->StartTrial(u.to_slot, u.id));  // (again, if interrupted)
  if (command == Command::Commit) {
    return Error(Errc::NotRebooted, "reboot into slot " + u.to_slot + " first");
  }
  return Step{};
}

// On trial: a fallback by the firmware ends the update; Commit runs the health checks and makes
// the slot permanent (bootloader first: if the journal write is lost, the next commit finds the
// slot already permanent and records it again) or sets the bootloader back.
Result<Step> Agent::OnTrial(DeviceState& state, Command command) {
  const PendingUpdate u = *state.update;
  UPKEEP_ASSIGN_OR_RETURN(const std::string booted, BootedSlot());
  UPKEEP_ASSIGN_OR_RETURN(const std::string boot_id, BootId());
  if (boot_id != u.boot_id && booted == u.from_slot) {
    return Move(Trigger::BootedOld, "the firmware fell back during the trial");
  }
  if (command == Command::Rollback) {
    UPKEEP_TRY(bootloader_->Revert(u.from_slot));
    return Move(Trigger::Cancel, "rollback requested");
  }
  if (command != Command::Commit) return Step{};
  if (auto health = RunHealthChecks(); !health) {
    UPKEEP_TRY(bootloader_->Revert(u.from_slot));
    Step failed = Move(Trigger::HealthFailed, health.error().message());
    failed.error = health.error();
    return failed;
  }
  Emit(install::event::kHealthPassed, "health checks passed on slot " + u.to_slot,
       {{"slot", u.to_slot}, {"checks", config_.health.commands.size()}});
  UPKEEP_TRY(bootloader_->Commit());
  state.components[kRootfs] = InstalledComponent{u.version,    u.target,           u.image_sha256,
                                                 u.image_size, u.security_version, u.to_slot};
  RaiseFloor(state, kRootfs, u.security_version, u.rollback_sequence);
  return Move(Trigger::HealthPassed);
}

// Back to the old slot: the bootloader is set back until the device boots it.
Result<Step> Agent::OnReverting(DeviceState& state, Command command) {
  const PendingUpdate& u = *state.update;
  UPKEEP_ASSIGN_OR_RETURN(const std::string booted, BootedSlot());
  UPKEEP_ASSIGN_OR_RETURN(const std::string boot_id, BootId());
  if (boot_id != u.boot_id && booted == u.from_slot) return Move(Trigger::BootedOld, "reverted");
  if (command == Command::Rollback) return Move(Trigger::Cancel);
  UPKEEP_TRY(bootloader_->Revert(u.from_slot));
  if (command == Command::Commit) return NotOnTrial(u);
  return Step{};
}

fs::path Agent::ModuleWorkDir(const std::string& component) const {
  return config_.device.data_dir / "modules" / component;
}

// The module's Download and Install stages, for the install this process began. Found here on
// a restart, the install was interrupted (the module may have changed anything): Rollback.
Result<Step> Agent::OnModuleInstalling(DeviceState& state, Command /*command*/) {
  const PendingUpdate& u = *state.update;
  if (module_update_id_ != u.id) return RollBackModule(u, "the install was interrupted");
  auto it = config_.components.find(u.component);
  if (it == config_.components.end()) return RollBackModule(u, "no module configured");
  const modules::ModuleSpec spec = ModuleSpecOf(it->second);
  for (const modules::Stage stage : {modules::Stage::Download, modules::Stage::Install}) {
    auto ran = modules::RunStage(spec, stage, ModuleWorkDir(u.component));
    if (!ran) {
      return RollBackModule(
          u, std::string(modules::StageName(stage)) + " failed: " + ran.error().ToString());
    }
  }
  return Move(Trigger::ModuleInstalled);
}

// The module's Commit (idempotent: after a restart it runs again), then Cleanup; the component
// and its floor are recorded with the move to Idle.
Result<Step> Agent::OnModuleCommitting(DeviceState& state, Command /*command*/) {
  const PendingUpdate u = *state.update;
  auto it = config_.components.find(u.component);
  if (it == config_.components.end()) return RollBackModule(u, "no module configured");
  const modules::ModuleSpec spec = ModuleSpecOf(it->second);
  const fs::path work = ModuleWorkDir(u.component);
  if (auto committed = modules::RunStage(spec, modules::Stage::Commit, work); !committed) {
    return RollBackModule(u, "Commit failed: " + committed.error().ToString());
  }
  if (auto cleanup = modules::RunStage(spec, modules::Stage::Cleanup, work); !cleanup) {
    log::warn("component {}: committed, but Cleanup failed: {}", u.component,
              cleanup.error().ToString());
  }
  state.components[u.component] =
      InstalledComponent{u.version, u.target, u.image_sha256, u.image_size, u.security_version, ""};
  RaiseFloor(state, u.component, u.security_version, u.rollback_sequence);
  Step done = Move(Trigger::ModuleCommitted);
  done.extra = {{"component", u.component}};
  return done;
}

Step Agent::RollBackModule(const PendingUpdate& u, const std::string& why) {
  const std::string message = "component " + u.component + ": " + why;
  std::optional<Error> failure;
  if (auto it = config_.components.find(u.component); it == config_.components.end()) {
    failure =
        Error(modules::Errc::RollbackFailed, message + "; the component may be between versions");
  } else {
    const modules::ModuleSpec spec = ModuleSpecOf(it->second);
    const fs::path work = ModuleWorkDir(u.component);
    auto rolled = modules::RunStage(spec, modules::Stage::Rollback, work);
    if (auto cleanup = modules::RunStage(spec, modules::Stage::Cleanup, work); !cleanup) {
      log::warn("component {}: Cleanup after Rollback failed: {}", u.component,
                cleanup.error().ToString());
    }
    failure =
        rolled ? Error(modules::Errc::RolledBack, message + "; rolled back to the previous version")
               : Error(modules::Errc::RollbackFailed,
                       message + "; Rollback failed too: " + rolled.error().ToString());
  }
  const bool rolled_back = failure->code() == modules::Errc::RolledBack;
  Step s = Move(rolled_back ? Trigger::ModuleRolledBack : Trigger::Fail, failure->message());
  s.extra = {
      {"component", u.component}, {"rolled_back", rolled_back}, {"error", failure->ToString()}};
  // Only the caller that began this install hears of the failure; after a restart the journal
  // and the event log record it.
  if (module_update_id_ == u.id) s.error = Error(Errc::ModuleFailed, failure->ToString());
  return s;
}

Result<void> Agent::RunHealthChecks() {
  std::vector<std::vector<std::string>> checks = config_.health.commands;
  for (const auto& unit : config_.health.systemd_units) {
    checks.push_back({"/bin/systemctl", "is-active", "--quiet", unit});
  }
  for (const auto& command : checks) {
    modules::ProcessOptions o;
    o.timeout = config_.health.timeout;
    o.kill_grace = std::chrono::seconds(2);
    o.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
    auto r = modules::RunProcess(command, o);
    std::string why;
    if (!r) {
      why = r.error().message();
    } else if (!r->Succeeded()) {
      why = r->timed_out ? "timed out" : "exit code " + std::to_string(r->exit_code);
      if (r->term_signal != 0) why = "signal " + std::to_string(r->term_signal);
    }
    if (!why.empty()) {
      return Error(Errc::HealthCheckFailed, command.front() + ": " + why);
    }
  }
  return Ok();
}

Result<StatusReport> Agent::Status() {
  StatusReport r;
  r.config = config_;
  // What the current boot says about a pending update is applied first, so status is current.
  UPKEEP_ASSIGN_OR_RETURN(r.state, store_.Load());
  if (r.state.update && (IsModuleState(r.state.update->state) || (BootedSlot() && BootId()))) {
    UPKEEP_ASSIGN_OR_RETURN(r.state, Reconcile());
  }
  auto boot = bootloader_->Status();
  if (boot) {
    r.boot = *boot;
  } else {
    r.boot_error = boot.error().ToString();
  }
  r.booted_slot = BootedSlot().value_or("");
  return r;
}

Result<std::string> Agent::SimulateBoot() {
  if (config_.bootloader.type != "file") {
    return Error(Errc::InvalidConfig, "simulated boots need bootloader.type = \"file\"");
  }
  UPKEEP_ASSIGN_OR_RETURN(const std::string slot, install::SimulateFirmwareBoot(
                                                      bootloader_->env(), bootloader_->options()));
  UPKEEP_TRY(fs_.WriteFileAtomic(config_.bootloader.cmdline, "root=" + SlotPath(slot).string() +
                                                                 " upkeep.slot=" + slot + "\n"));
  UPKEEP_TRY(fs_.WriteFileAtomic(config_.bootloader.boot_id, RandomId() + "\n"));
  return slot;
}

}  // namespace upkeep::agent
