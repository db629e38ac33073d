#include "repository_simulator.hpp"

#include <fstream>

#include <stdexcept>

#include "upkeep/common/encoding.hpp"

namespace upkeep::testing {

namespace {

Json Expiry(metadata::TimePoint now) {
  return metadata::FormatDateTime(now + std::chrono::days(30));
}

Json Base(const char* type, metadata::TimePoint now) {
  return Json{{"_type", type}, {"spec_version", "1.0.31"}, {"version", 1}, {"expires", Expiry(now)}};
}

template <typename T>
T Must(Result<T> r) {
  if (!r) throw std::runtime_error(r.error().ToString());
  return std::move(r).value();
}

}  // namespace

RepositorySimulator::RepositorySimulator(metadata::TimePoint now, bool consistent_snapshot) {
  root = Base("root", now);
  root["consistent_snapshot"] = consistent_snapshot;
  root["keys"] = Json::object();
  root["roles"] = Json::object();
  timestamp = Base("timestamp", now);
  timestamp["meta"] = {{"snapshot.json", {{"version", 1}}}};
  snapshot = Base("snapshot", now);
  snapshot["meta"] = {{"targets.json", {{"version", 1}}}};
  targets = Base("targets", now);
  targets["targets"] = Json::object();
  for (const char* role : {"root", "timestamp", "snapshot", "targets"}) {
    root["roles"][role] = {{"keyids", Json::array()}, {"threshold", 1}};
    AddTopLevelKey(role);
  }
}

Json RepositorySimulator::KeyJson(const crypto::PrivateKey& key) {
  const auto& pub = key.public_key();
  return Json{{"keytype", pub.keytype()},
              {"scheme", pub.scheme()},
              {"keyval", {{"public", pub.public_value()}}}};
}

std::string RepositorySimulator::KeyId(const crypto::PrivateKey& key) {
  return Must(metadata::ComputeKeyId(KeyJson(key)));
}

crypto::PrivateKey RepositorySimulator::AddTopLevelKey(const std::string& role,
                                                       crypto::KeyAlgorithm alg) {
  auto key = Must(crypto::PrivateKey::Generate(alg));
  const std::string id = KeyId(key);
  root["keys"][id] = KeyJson(key);
  root["roles"][role]["keyids"].push_back(id);
  signers[role].push_back(key);
  return key;
}

crypto::PrivateKey RepositorySimulator::RotateTopLevelKey(const std::string& role) {
  for (const auto& id : root["roles"][role]["keyids"]) {
    bool used_elsewhere = false;
    for (const auto& [other, r] : root["roles"].items()) {
      if (other == role) continue;
      for (const auto& k : r["keyids"]) used_elsewhere |= (k == id);
    }
    if (!used_elsewhere) root["keys"].erase(id.get<std::string>());
  }
  root["roles"][role]["keyids"] = Json::array();
  signers[role].clear();
  return AddTopLevelKey(role);
}

crypto::PrivateKey RepositorySimulator::AddDelegation(const std::string& delegator,
                                                      Json role_json) {
  auto key = Must(crypto::PrivateKey::Generate(crypto::KeyAlgorithm::Ed25519));
  const std::string id = KeyId(key);
  Json* parent = Body(delegator);
  if (!parent->contains("delegations")) {
    (*parent)["delegations"] = {{"keys", Json::object()}, {"roles", Json::array()}};
  }
  (*parent)["delegations"]["keys"][id] = KeyJson(key);
  role_json["keyids"] = Json::array({id});
  if (!role_json.contains("threshold")) role_json["threshold"] = 1;
  const std::string name = role_json["name"].get<std::string>();
  (*parent)["delegations"]["roles"].push_back(std::move(role_json));
  Json body = targets;  // same header fields
  body["_type"] = "targets";
  body["version"] = 1;
  body["targets"] = Json::object();
  body.erase("delegations");
  delegated[name] = body;
  snapshot["meta"][name + ".json"] = {{"version", 1}};
  signers[name].push_back(key);
  return key;
}

void RepositorySimulator::AddTarget(const std::string& role, const std::string& path,
                                    const std::string& content) {
  (*Body(role))["targets"][path] = {
      {"length", content.size()},
      {"hashes", {{"sha256", HexEncode(crypto::Sha256(content))}}}};
  target_contents_[path] = content;
}

Json* RepositorySimulator::Body(const std::string& role) {
  if (role == "root") return &root;
  if (role == "timestamp") return &timestamp;
  if (role == "snapshot") return &snapshot;
  if (role == "targets") return &targets;
  return &delegated.at(role);
}

void RepositorySimulator::Bump(const std::string& role) {
  Json* body = Body(role);
  (*body)["version"] = (*body)["version"].get<std::uint64_t>() + 1;
}

std::string RepositorySimulator::Sign(const Json& body,
                                      const std::vector<crypto::PrivateKey>& keys) {
  const std::string canonical = Must(metadata::Canonicalize(body));
  const std::span<const std::uint8_t> msg(reinterpret_cast<const std::uint8_t*>(canonical.data()),
                                          canonical.size());
  Json sigs = Json::array();
  for (const auto& key : keys) {
    sigs.push_back({{"keyid", KeyId(key)}, {"sig", HexEncode(Must(key.Sign(msg)))}});
  }
  return Json{{"signatures", sigs}, {"signed", body}}.dump(1);
}

std::string RepositorySimulator::MetadataUrl(const std::string& role,
                                             std::uint64_t version) const {
  std::string url = kMetadataUrl;
  if (version > 0) url += std::to_string(version) + ".";
  return url + PercentEncode(role) + ".json";
}

void RepositorySimulator::Publish() {
  const auto root_version = root["version"].get<std::uint64_t>();
  if (!roots_.contains(root_version)) roots_[root_version] = Sign(root, signers["root"]);
  for (const auto& [v, bytes] : roots_) files[MetadataUrl("root", v)] = bytes;

  auto meta_entry = [&](const Json& body, const std::string& bytes) {
    Json m = {{"version", body["version"]}};
    if (meta_hashes_and_length) {
      m["length"] = bytes.size();
      m["hashes"] = {{"sha256", HexEncode(crypto::Sha256(bytes))}};
    }
    return m;
  };
  auto publish_targets = [&](const std::string& name, const Json& body) {
    const std::string bytes = Sign(body, signers[name]);
    const auto v = consistent() ? body["version"].get<std::uint64_t>() : 0;
    files[MetadataUrl(name, v)] = bytes;
    snapshot["meta"][name + ".json"] = meta_entry(body, bytes);
  };
  publish_targets("targets", targets);
  for (const auto& [name, body] : delegated) publish_targets(name, body);

  const std::string snapshot_bytes = Sign(snapshot, signers["snapshot"]);
  files[MetadataUrl("snapshot", consistent() ? snapshot["version"].get<std::uint64_t>() : 0)] =
      snapshot_bytes;
  timestamp["meta"]["snapshot.json"] = meta_entry(snapshot, snapshot_bytes);
  files[MetadataUrl("timestamp", 0)] = Sign(timestamp, signers["timestamp"]);

  for (const auto& [path, content] : target_contents_) {
    files[std::string(kTargetsUrl) + PercentEncodePath(path)] = content;
    const auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
    const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    files[std::string(kTargetsUrl) +
          PercentEncodePath(dir + HexEncode(crypto::Sha256(content)) + "." + base)] = content;
  }
}

void RepositorySimulator::ServeTo(MemoryFetcher& fetcher) const {
  fetcher.Clear();
  for (const auto& [url, body] : files) fetcher.Set(url, body);
}

void RepositorySimulator::WriteTo(const std::filesystem::path& dir) const {
  const std::string prefix = "https://repo.test/";
  for (const auto& [url, body] : files) {
    if (!url.starts_with(prefix)) continue;
    const auto name = PercentDecode(url.substr(prefix.size()));
    if (!name) continue;
    std::error_code ec;
    std::filesystem::create_directories((dir / *name).parent_path(), ec);
    std::ofstream(dir / *name, std::ios::binary) << body;
  }
}

}  // namespace upkeep::testing
