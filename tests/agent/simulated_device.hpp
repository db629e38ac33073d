#pragma once

// A release pipeline and a simulated device for agent tests: images are built into chunked
// payloads, signed into a TUF repository with upkeep's own tooling, published to a directory a
// test server (or a bundle) serves, and installed by an Agent configured with file slots and the
// file bootloader. Everything lives in one temporary directory.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "temp_dir.hpp"
#include "upkeep/agent/agent.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/install/bundle.hpp"
#include "upkeep/install/payload.hpp"
#include "upkeep/metadata/update_metadata.hpp"
#include "upkeep/repository/repository.hpp"

namespace upkeep::testing {

// Deterministic image bytes: `size` bytes from `seed`, with a run of zeros in the middle so that
// payloads compress and releases share chunks.
inline std::string MakeImage(std::size_t size, unsigned seed) {
  std::string image(size, '\0');
  std::mt19937 rng(seed);
  for (std::size_t i = 0; i < size; ++i) {
    if (i < size / 3 || i > size / 2) image[i] = static_cast<char>(rng() & 0xff);
  }
  return image;
}

inline void WriteBytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

struct ReleaseSpec {
  std::string name = "rootfs/image";  // target path prefix: <name>.payload, <name>.chunks.json
  std::string role = "targets";       // the role that signs payload and chunk index
  std::string version = "2.0";
  std::string image;
  std::vector<std::string> hardware = {"sim-cam"};
  std::uint64_t security_version = 7;
  std::optional<std::uint64_t> authorised_rollback_sequence;
  std::uint64_t chunk_size = 16 * 1024;
  install::ChunkCompression compression = install::ChunkCompression::Zstd;
  // Overrides installed_size in the update metadata (to test a mismatch).
  std::optional<std::uint64_t> installed_size;
  // Overrides the chunk index's target name and the role signing it.
  std::optional<std::string> index_name;
  std::optional<std::string> index_role;
  metadata::Component component = metadata::Component::Rootfs;
};

class ReleaseRepo {
 public:
  explicit ReleaseRepo(const std::filesystem::path& dir) : dir_(dir) {
    std::filesystem::create_directories(dir_ / "build");
    repository::InitOptions o;
    auto repo = repository::Repository::Init(dir_ / "repo", o, fs_, clock_);
    EXPECT_TRUE(repo.has_value()) << repo.error().ToString();
  }

  // Builds, adds and signs a release; call Publish afterwards.
  void Add(const ReleaseSpec& r) {
    const std::string base = std::filesystem::path(r.name).filename().string() + "-" + r.version;
    const auto image = dir_ / "build" / (base + ".img");
    WriteBytes(image, r.image);
    install::BuildOptions b;
    b.chunk_size = r.chunk_size;
    b.compression = r.compression;
    const auto payload = dir_ / "build" / (base + ".payload");
    auto index = install::BuildPayload(image, payload, b);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    const auto index_file = dir_ / "build" / (base + ".chunks.json");
    WriteBytes(index_file, install::SerializeChunkIndex(*index));

    metadata::UpdateMetadata m;
    m.version = r.version;
    m.hardware = r.hardware;
    m.security_version = r.security_version;
    m.is_security = true;
    m.security = metadata::SecurityInfo{metadata::Severity::High, {"CVE-2026-0001"},
                                        "Fixes a remote code execution."};
    m.disruption.reboot = true;
    m.disruption.downtime_seconds = 30;
    m.payload.format = metadata::PayloadFormat::Chunked;
    m.payload.installed_size = r.installed_size.value_or(r.image.size());
    m.payload.chunk_index = r.index_name.value_or(r.name + "-" + r.version + ".chunks.json");
    m.authorised_rollback_sequence = r.authorised_rollback_sequence;
    m.component = r.component;
    auto repo = Open();
    ASSERT_TRUE(repo.has_value());
    const auto custom = metadata::ToCustomJson(m);
    auto added = repo->AddTarget(payload, payload_target(r), custom, r.role);
    ASSERT_TRUE(added.has_value()) << added.error().ToString();
    added = repo->AddTarget(index_file, *m.payload.chunk_index, custom,
                            r.index_role.value_or(r.role));
    ASSERT_TRUE(added.has_value()) << added.error().ToString();
    SignAll(*repo);
  }

  // Delegates target paths matching `paths` to a new role `name` (keys kept in the repository).
  void Delegate(const std::string& name, const std::vector<std::string>& paths) {
    auto repo = Open();
    ASSERT_TRUE(repo.has_value());
    repository::Repository::Delegation d;
    d.name = name;
    d.paths = paths;
    auto made = repo->Delegate(d);
    ASSERT_TRUE(made.has_value()) << made.error().ToString();
    delegated_.push_back(name);
    SignAll(*repo);
  }

  // A single-file release (for an update module): `bytes` as target `name`, format raw.
  void AddFile(const std::string& name, const std::string& bytes, metadata::Component component,
               const std::string& version, std::uint64_t security_version = 1,
               const std::string& role = "targets") {
    const auto file = dir_ / "build" / std::filesystem::path(name).filename();
    WriteBytes(file, bytes);
    metadata::UpdateMetadata m;
    m.component = component;
    m.version = version;
    m.hardware = {"sim-cam"};
    m.security_version = security_version;
    m.is_feature = true;
    m.payload.format = metadata::PayloadFormat::Raw;
    m.payload.installed_size = bytes.size();
    auto repo = Open();
    ASSERT_TRUE(repo.has_value());
    auto added = repo->AddTarget(file, name, metadata::ToCustomJson(m), role);
    ASSERT_TRUE(added.has_value()) << added.error().ToString();
    SignAll(*repo);
  }

  // Adds a raw application file to `role` without asserting: the error code, or success.
  std::error_code TryAddFile(const std::string& name, const std::string& bytes,
                             const std::string& role) {
    const auto file = dir_ / "build" / std::filesystem::path(name).filename();
    WriteBytes(file, bytes);
    metadata::UpdateMetadata m;
    m.component = metadata::Component::Application;
    m.version = "1";
    m.hardware = {"sim-cam"};
    m.is_feature = true;
    m.payload.format = metadata::PayloadFormat::Raw;
    m.payload.installed_size = bytes.size();
    auto repo = Open();
    if (!repo) return repo.error().code();
    auto added = repo->AddTarget(file, name, metadata::ToCustomJson(m), role);
    return added ? std::error_code() : added.error().code();
  }

  void Publish() {
    auto repo = Open();
    ASSERT_TRUE(repo.has_value());
    auto r = repo->Publish(www());
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
  }

  // An offline bundle with the given releases (payload and chunk index of each).
  std::filesystem::path Bundle(const std::vector<ReleaseSpec>& releases, const std::string& file) {
    std::vector<std::string> targets;
    for (const auto& r : releases) {
      targets.push_back(payload_target(r));
      targets.push_back(r.name + "-" + r.version + ".chunks.json");
    }
    return BundleTargets(targets, file);
  }

  std::filesystem::path BundleTargets(const std::vector<std::string>& targets,
                                      const std::string& file) {
    const auto out = dir_ / file;
    LocalFilesystem fs;
    auto root = fs.ReadFile(root_path(), 1 << 20);
    EXPECT_TRUE(root.has_value());
    auto made = install::CreateBundle(www(), *root, targets, out);
    EXPECT_TRUE(made.has_value()) << made.error().ToString();
    return out;
  }

  static std::string payload_target(const ReleaseSpec& r) {
    return r.name + "-" + r.version + ".payload";
  }
  [[nodiscard]] std::filesystem::path www() const { return dir_ / "www"; }
  [[nodiscard]] std::filesystem::path root_path() const { return www() / "metadata" / "1.root.json"; }

 private:
  Result<repository::Repository> Open() {
    return repository::Repository::Open(dir_ / "repo", fs_, clock_);
  }
  // Signs the top-level targets role and every delegated role with whichever repository keys
  // each accepts.
  void SignAll(repository::Repository& repo) {
    std::vector<std::string> roles = {"targets"};
    roles.insert(roles.end(), delegated_.begin(), delegated_.end());
    for (const auto& role : roles) {
      for (const auto& key : std::filesystem::directory_iterator(dir_ / "repo" / "keys")) {
        (void)repo.Sign(role, key.path());  // keys of other roles are refused
      }
    }
  }
  std::filesystem::path dir_;
  std::vector<std::string> delegated_;
  LocalFilesystem fs_;
  SystemClock clock_;
};

// A device with two file slots, the file bootloader and an agent data directory. Slot a holds
// `installed` and is booted.
class SimulatedDevice {
 public:
  SimulatedDevice(const std::filesystem::path& dir, const std::filesystem::path& trusted_root,
                  const std::string& installed)
      : dir_(dir) {
    std::filesystem::create_directories(dir_);
    WriteBytes(dir_ / "slot-a", installed);
    WriteBytes(dir_ / "slot-b", "");
    WriteBytes(dir_ / "bootenv", "upkeep_slot=a\n");
    config.device.hardware = "sim-cam";
    config.device.data_dir = dir_ / "data";
    config.trust.root = trusted_root;
    config.slots.a = dir_ / "slot-a";
    config.slots.b = dir_ / "slot-b";
    config.bootloader.type = "file";
    config.bootloader.env = dir_ / "bootenv";
    config.bootloader.cmdline = dir_ / "cmdline";
    config.bootloader.boot_id = dir_ / "boot_id";
    config.health.commands = {{"/bin/true"}};
    config.install.resume_delay = std::chrono::milliseconds(0);
    config.install.checkpoint_mib = 1;
  }

  // A fresh agent over the device (as after a restart of the process).
  agent::Agent Agent() {
    agent::Agent a(config, fs_, clock_);
    a.SetEventSink([this](const install::Event& e) { events.push_back(e.id); });
    return a;
  }
  // Power on: the firmware's boot counting picks the slot.
  std::string Boot() {
    auto a = Agent();
    auto slot = a.SimulateBoot();
    EXPECT_TRUE(slot.has_value()) << slot.error().ToString();
    return slot.value_or("");
  }
  [[nodiscard]] std::string Slot(const std::string& s) const {
    std::ifstream in(dir_ / ("slot-" + s), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }

  agent::AgentConfig config;
  std::vector<std::string> events;

 private:
  std::filesystem::path dir_;
  LocalFilesystem fs_;
  SystemClock clock_;
};

}  // namespace upkeep::testing
