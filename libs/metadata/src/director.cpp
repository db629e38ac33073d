#include "upkeep/metadata/director.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <utility>

#include "upkeep/common/encoding.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/metadata/update_metadata.hpp"

namespace upkeep::metadata {

namespace {

constexpr std::string_view kSha256 = "sha256";

// The device ID alphabet of the device API: [A-Za-z0-9._-]{1,64}.
bool IsValidDeviceId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

// The director's object in "custom": device, hardware and check-in counter.
struct DirectorEntry {
  std::string device;
  std::string hardware;
  std::uint64_t counter = 0;
};

Json DirectorCustom(const std::string& device, const std::string& hardware, std::uint64_t counter) {
  return Json{{std::string(kDirectorCustomKey),
               {{"device", device}, {"hardware", hardware}, {"counter", counter}}}};
}

// Reads {"upkeep_director": {"device", "hardware", "counter"}} from `custom`; other keys of
// `custom` are ignored, unknown keys inside "upkeep_director" are not.
Result<DirectorEntry> ParseDirectorCustom(const Json* custom, const std::string& where) {
  auto invalid = [&](const std::string& why) {
    return Error(Errc::InvalidMetadata, where + ": " + why);
  };
  if (custom == nullptr || !custom->is_object()) return invalid("no custom object");
  auto it = custom->find(std::string(kDirectorCustomKey));
  if (it == custom->end() || !it->is_object()) return invalid("no upkeep_director object");
  const Json& d = *it;
  for (const auto& [key, unused] : d.items()) {
    if (key != "device" && key != "hardware" && key != "counter") {
      return invalid("unknown field upkeep_director." + key);
    }
  }
  auto device = d.find("device");
  auto hardware = d.find("hardware");
  auto counter = d.find("counter");
  if (device == d.end() || !device->is_string()) return invalid("upkeep_director.device");
  if (hardware == d.end() || !hardware->is_string()) return invalid("upkeep_director.hardware");
  if (counter == d.end() || !counter->is_number_integer() ||
      (!counter->is_number_unsigned() && counter->get<std::int64_t>() < 0)) {
    return invalid("upkeep_director.counter");
  }
  return DirectorEntry{device->get<std::string>(), hardware->get<std::string>(),
                       counter->get<std::uint64_t>()};
}

// The device's checks on one director object (role or target).
Result<std::uint64_t> CheckDirectorCustom(const Json* custom, const std::string& where,
                                          const DirectorDevice& device) {
  UPKEEP_ASSIGN_OR_RETURN(DirectorEntry entry, ParseDirectorCustom(custom, where));
  if (entry.device != device.device_id) {
    return Error(Errc::DirectorWrongDevice, where + ": names another device");
  }
  if (entry.hardware != device.hardware) {
    return Error(Errc::DirectorWrongHardware, where + ": names hardware " + entry.hardware +
                                                  ", this device is " + device.hardware);
  }
  if (entry.counter < device.accepted_counter) {
    return Error(Errc::DirectorStaleCounter, where + ": counter " + std::to_string(entry.counter) +
                                                 " is below the last accepted " +
                                                 std::to_string(device.accepted_counter));
  }
  if (entry.counter > device.sent_counter) {
    return Error(Errc::DirectorCounterAhead, where + ": counter " + std::to_string(entry.counter) +
                                                 " is above the counter sent " +
                                                 std::to_string(device.sent_counter));
  }
  return entry.counter;
}

Result<std::uint64_t> NextVersion(std::uint64_t previous, std::string_view role) {
  if (previous == std::numeric_limits<std::uint64_t>::max()) {
    return Error(Errc::InvalidMetadata, std::string(role) + " version cannot grow");
  }
  return previous + 1;
}

template <typename Body>
Result<void> SignRole(Metadata<Body>& md, const Root& root,
                      const std::vector<crypto::PrivateKey>& keys) {
  const std::string role(Body::kType);
  for (const auto& key : keys) UPKEEP_TRY(md.Sign(key));
  // The server's configuration must match the root devices trust: refuse to hand out files they
  // would reject.
  auto role_keys = root.body.roles.find(role);
  if (role_keys == root.body.roles.end()) {
    return Error(Errc::InvalidMetadata, "director root has no " + role + " role");
  }
  return VerifyThreshold(root.body.keys, role_keys->second, md.canonical_signed, md.signatures,
                         Errc::ThresholdNotMet, role);
}

template <typename Body>
Result<bool> VerifiesUnder(const Metadata<Body>& md, const Root& root) {
  auto role_keys = root.body.roles.find(Body::kType);
  if (role_keys == root.body.roles.end()) return false;
  return VerifyThreshold(root.body.keys, role_keys->second, md.canonical_signed, md.signatures,
                         Errc::ThresholdNotMet, Body::kType)
      .has_value();
}

MetaFile MetaFor(std::uint64_t version, std::string_view bytes) {
  MetaFile meta;
  meta.version = version;
  meta.length = bytes.size();
  meta.hashes = Hashes{{std::string(kSha256), HexEncode(crypto::Sha256(bytes))}};
  return meta;
}

// The previous targets and snapshot, when they can be kept for `body` (see the header).
std::optional<std::pair<Targets, Snapshot>> KeepablePrevious(const Root& root,
                                                             const DirectorBuildRequest& request,
                                                             const TargetsBody& body,
                                                             TimePoint timestamp_expires) {
  if (!request.previous_targets || !request.previous_snapshot) return std::nullopt;
  auto targets = ParseTargets(*request.previous_targets);
  auto snapshot = ParseSnapshot(*request.previous_snapshot);
  if (!targets || !snapshot) return std::nullopt;
  if (targets->version != request.previous.targets ||
      snapshot->version != request.previous.snapshot) {
    return std::nullopt;
  }
  auto listed = snapshot->body.meta.find("targets.json");
  if (listed == snapshot->body.meta.end() ||
      listed->second != MetaFor(targets->version, *request.previous_targets)) {
    return std::nullopt;
  }
  auto targets_ok = VerifiesUnder(*targets, root);
  auto snapshot_ok = VerifiesUnder(*snapshot, root);
  if (!targets_ok || !*targets_ok || !snapshot_ok || !*snapshot_ok) return std::nullopt;
  if (targets->expires < timestamp_expires || snapshot->expires < timestamp_expires) {
    return std::nullopt;
  }
  // Same device, hardware and assignment: the body and role custom as they would be signed now
  // at the previous counter.
  auto custom = targets->unrecognized_fields.find("custom");
  if (custom == targets->unrecognized_fields.end()) return std::nullopt;
  auto entry = ParseDirectorCustom(&*custom, "previous targets");
  if (!entry || entry->device != request.device_id || entry->hardware != request.hardware ||
      entry->counter > request.counter) {
    return std::nullopt;
  }
  TargetsBody expected = body;
  for (auto& [path, file] : expected.targets) {
    file.custom = DirectorCustom(request.device_id, request.hardware, entry->counter);
  }
  const Json expected_fields = {
      {"custom", DirectorCustom(request.device_id, request.hardware, entry->counter)}};
  if (targets->body != expected || targets->unrecognized_fields != expected_fields) {
    return std::nullopt;
  }
  // nothrow: both errors returned when parsed above
  return std::make_pair(std::move(targets).value(), std::move(snapshot).value());
}

// An in-memory repository over the files of one check-in answer.
class AnswerFetcher final : public Fetcher {
 public:
  static constexpr const char* kBase = "director-answer/";

  void Add(const std::string& name, std::string bytes) { files_[kBase + name] = std::move(bytes); }
  [[nodiscard]] bool Has(const std::string& name) const { return files_.contains(kBase + name); }

  Result<void> Fetch(const std::string& url, std::uint64_t max_bytes, const Sink& sink) override {
    auto it = files_.find(url);
    if (it == files_.end()) return Error(common::Errc::RemoteNotFound, url);
    const std::string& body = it->second;
    if (body.size() > max_bytes) {
      return Error(common::Errc::LengthExceeded,
                   url + ": " + std::to_string(body.size()) + " bytes");
    }
    return sink(std::span<const char>(body.data(), body.size()));
  }

 private:
  std::map<std::string, std::string> files_;
};

}  // namespace

Result<std::string> CreateDirectorRoot(const DirectorRootKeys& keys,
                                       const std::vector<crypto::PrivateKey>& signers,
                                       std::uint64_t version, TimePoint expires) {
  if (version == 0) return Error(Errc::InvalidMetadata, "director root version must be >= 1");
  Root root = Root::Create(expires);
  root.version = version;
  root.body.consistent_snapshot = false;
  const std::pair<std::string_view, const DirectorRoleKeys*> roles[] = {
      {kRootRole, &keys.root},
      {kTargetsRole, &keys.targets},
      {kSnapshotRole, &keys.snapshot},
      {kTimestampRole, &keys.timestamp}};
  for (const auto& [name, role] : roles) {
    RoleKeys role_keys;
    role_keys.threshold = role->threshold;
    for (const auto& pub : role->keys) {
      Key key = Key::FromPublicKey(pub);
      if (std::find(role_keys.keyids.begin(), role_keys.keyids.end(), key.keyid) ==
          role_keys.keyids.end()) {
        role_keys.keyids.push_back(key.keyid);
      }
      root.body.keys.emplace(key.keyid, std::move(key));
    }
    if (role_keys.keyids.empty() || role_keys.threshold == 0 ||
        role_keys.threshold > role_keys.keyids.size()) {
      return Error(Errc::InvalidMetadata,
                   std::string(name) + ": needs keys and a threshold between 1 and their number");
    }
    root.body.roles.emplace(std::string(name), std::move(role_keys));
  }
  for (const auto& signer : signers) UPKEEP_TRY(root.Sign(signer));
  UPKEEP_TRY(VerifyThreshold(root.body.keys, root.body.roles.at(std::string(kRootRole)),
                             root.canonical_signed, root.signatures, Errc::ThresholdNotMet,
                             kRootRole));
  return root.ToBytes();
}

Result<DirectorRepository> BuildDirectorRepository(const Root& root, const DirectorOnlineKeys& keys,
                                                   const DirectorBuildRequest& request) {
  if (root.body.ConsistentSnapshot()) {
    return Error(Errc::InvalidMetadata, "the director root must not use consistent snapshots");
  }
  if (!IsValidDeviceId(request.device_id)) {
    return Error(Errc::InvalidMetadata, "invalid device ID");
  }
  if (request.hardware.empty()) return Error(Errc::InvalidMetadata, "empty hardware");

  // The assignment: path, length and hashes of each image-repository target, nothing else.
  TargetsBody body;
  for (const TargetFile& image : request.assignments) {
    UPKEEP_TRY(ValidateTargetFile(image, TargetPathRules::kPublish));
    if (!image.hashes.contains(kSha256)) {
      return Error(Errc::InvalidTargetHash, image.path + ": no sha256 hash");
    }
    TargetFile file;
    file.path = image.path;
    file.length = image.length;
    file.hashes = image.hashes;
    file.custom = DirectorCustom(request.device_id, request.hardware, request.counter);
    auto [it, inserted] = body.targets.emplace(file.path, file);
    if (!inserted && it->second != file) {
      return Error(Errc::InvalidMetadata, image.path + ": assigned twice with different files");
    }
  }

  const TimePoint timestamp_expires = request.now + request.timestamp_validity;
  DirectorRepository out;
  if (auto kept = KeepablePrevious(root, request, body, timestamp_expires)) {
    out.targets = *request.previous_targets;
    out.snapshot = *request.previous_snapshot;
    out.versions.targets = kept->first.version;
    out.versions.snapshot = kept->second.version;
    out.targets_changed = false;
  } else {
    Targets targets = Targets::Create(request.now + request.targets_validity);
    UPKEEP_ASSIGN_OR_RETURN(targets.version, NextVersion(request.previous.targets, kTargetsRole));
    targets.body = std::move(body);
    targets.unrecognized_fields["custom"] =
        DirectorCustom(request.device_id, request.hardware, request.counter);
    UPKEEP_TRY(SignRole(targets, root, keys.targets));
    UPKEEP_ASSIGN_OR_RETURN(out.targets, targets.ToBytes());

    Snapshot snapshot = Snapshot::Create(request.now + request.snapshot_validity);
    UPKEEP_ASSIGN_OR_RETURN(snapshot.version,
                            NextVersion(request.previous.snapshot, kSnapshotRole));
    snapshot.body.meta.emplace("targets.json", MetaFor(targets.version, out.targets));
    UPKEEP_TRY(SignRole(snapshot, root, keys.snapshot));
    UPKEEP_ASSIGN_OR_RETURN(out.snapshot, snapshot.ToBytes());
    out.versions.targets = targets.version;
    out.versions.snapshot = snapshot.version;
  }

  Timestamp timestamp = Timestamp::Create(timestamp_expires);
  UPKEEP_ASSIGN_OR_RETURN(timestamp.version,
                          NextVersion(request.previous.timestamp, kTimestampRole));
  timestamp.body.snapshot_meta = MetaFor(out.versions.snapshot, out.snapshot);
  UPKEEP_TRY(SignRole(timestamp, root, keys.timestamp));
  UPKEEP_ASSIGN_OR_RETURN(out.timestamp, timestamp.ToBytes());
  out.versions.timestamp = timestamp.version;
  return out;
}

Result<DirectorVerified> FullVerification(const Targets& director_targets, Updater& image_updater,
                                          const DirectorDevice& device) {
  // 5.4.4.6 step 6: the director's targets delegate nothing.
  if (director_targets.body.delegations) {
    return Error(Errc::DirectorHasDelegations, "director targets must not delegate");
  }
  DirectorVerified out;
  // The role names its device and check-in even when it lists no image (5.2.3.1).
  auto role_custom = director_targets.unrecognized_fields.find("custom");
  const Json* role_json =
      role_custom == director_targets.unrecognized_fields.end() ? nullptr : &*role_custom;
  UPKEEP_ASSIGN_OR_RETURN(out.counter, CheckDirectorCustom(role_json, "director targets", device));

  for (const auto& [path, director] : director_targets.body.targets) {
    UPKEEP_TRY(CheckDirectorCustom(&director.custom, "director target " + path, device));
    UPKEEP_TRY(ValidateTargetFile(director));
    // 5.4.4.2 step 10.1: the image repository lists exactly this path.
    auto image = image_updater.GetTargetInfo(path);
    if (!image) {
      if (image.error().code() == Errc::TargetNotFound) {
        return Error(Errc::DirectorTargetNotInImageRepository,
                     path + ": not in the image repository");
      }
      return image.error();
    }
    // 5.4.4.2 step 10.2.1: same length and hashes.
    if (image->length != director.length) {
      return Error(Errc::DirectorImageMismatch,
                   path + ": length differs from the image repository");
    }
    if (!director.hashes.contains(kSha256) || !image->hashes.contains(kSha256)) {
      return Error(Errc::DirectorImageMismatch, path + ": no sha256 hash to compare");
    }
    for (const auto& [algorithm, value] : director.hashes) {
      auto other = image->hashes.find(algorithm);
      if (other != image->hashes.end() && other->second != value) {
        return Error(Errc::DirectorImageMismatch,
                     path + ": " + algorithm + " differs from the image repository");
      }
    }
    // 5.4.4.2 step 10.2.2: the image repository's hardware list includes this device's model.
    UPKEEP_ASSIGN_OR_RETURN(UpdateMetadata update, UpdateMetadataOf(*image));
    if (std::find(update.hardware.begin(), update.hardware.end(), device.hardware) ==
        update.hardware.end()) {
      return Error(Errc::DirectorImageNotForHardware,
                   path + ": the image repository does not list hardware " + device.hardware);
    }
    // nothrow: the error case returned above
    out.images.push_back(std::move(image).value());
  }
  return out;
}

Result<DirectorVerified> VerifyDirectorAnswer(const DirectorFiles& answer,
                                              const std::filesystem::path& metadata_dir,
                                              Filesystem& filesystem, const Clock& clock,
                                              Updater& image_updater,
                                              const DirectorDevice& device) {
  UpdaterConfig config;
  config.prefix_targets_with_hash = false;
  AnswerFetcher fetcher;
  for (const std::string& bytes : answer.roots) {
    if (bytes.size() > config.root_max_length) {
      return Error(Errc::MetadataTooLarge, "director root in answer is too large");
    }
    auto root = ParseRoot(bytes);
    if (!root) {
      return Error(Errc::InvalidMetadata, "director root in answer: " + root.error().ToString());
    }
    const std::string name = std::to_string(root->version) + ".root.json";
    if (fetcher.Has(name)) {
      return Error(Errc::InvalidMetadata, "director root " + name + " sent twice");
    }
    fetcher.Add(name, bytes);
  }
  fetcher.Add("timestamp.json", answer.timestamp);
  fetcher.Add("snapshot.json", answer.snapshot);
  fetcher.Add("targets.json", answer.targets);

  Updater director(metadata_dir, AnswerFetcher::kBase, fetcher, filesystem, clock, config);
  UPKEEP_TRY(director.Refresh());
  const Targets* targets = director.trusted()->targets(kTargetsRole);
  if (targets == nullptr) return Error(Errc::NotTrusted, "director targets not loaded");
  return FullVerification(*targets, image_updater, device);
}

}  // namespace upkeep::metadata
