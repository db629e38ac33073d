#include "upkeep/agent/release_choice.hpp"

#include <algorithm>
#include <charconv>
#include <set>

#include "upkeep/agent/agent.hpp"

namespace upkeep::agent {

namespace {

std::vector<std::string_view> Segments(std::string_view v) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= v.size(); ++i) {
    if (i == v.size() || v[i] == '.' || v[i] == '-') {
      out.push_back(v.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

bool IsNumber(std::string_view s) {
  return !s.empty() && s.size() <= 18 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::uint64_t Number(std::string_view s) {
  std::uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// Whether (security_version, version) of `a` is above that of `b`.
bool Newer(std::uint64_t a_security, std::string_view a_version, std::uint64_t b_security,
           std::string_view b_version) {
  if (a_security != b_security) return a_security > b_security;
  return CompareVersions(a_version, b_version) > 0;
}

}  // namespace

int CompareVersions(std::string_view a, std::string_view b) {
  const auto sa = Segments(a);
  const auto sb = Segments(b);
  for (std::size_t i = 0; i < std::max(sa.size(), sb.size()); ++i) {
    if (i >= sa.size()) return -1;
    if (i >= sb.size()) return 1;
    if (IsNumber(sa[i]) && IsNumber(sb[i])) {
      const std::uint64_t x = Number(sa[i]);
      const std::uint64_t y = Number(sb[i]);
      if (x != y) return x < y ? -1 : 1;
    } else if (const int c = sa[i].compare(sb[i]); c != 0) {
      return c < 0 ? -1 : 1;
    }
  }
  return 0;
}

std::vector<ReleaseChoice> ChooseReleases(
    const AgentConfig& config, const DeviceState& state,
    const std::map<std::string, metadata::TargetFile, std::less<>>& targets) {
  // Chunk indexes are targets too, named by the releases that use them.
  std::set<std::string, std::less<>> indexes;
  for (const auto& [path, file] : targets) {
    auto m = metadata::UpdateMetadataOf(file);
    if (m && m->payload.chunk_index) indexes.insert(*m->payload.chunk_index);
  }
  std::map<std::string, ReleaseChoice> best;
  for (const auto& [path, file] : targets) {
    if (indexes.contains(path)) continue;
    auto m = metadata::UpdateMetadataOf(file);
    if (!m) continue;
    if (std::find(m->hardware.begin(), m->hardware.end(), config.device.hardware) ==
        m->hardware.end()) {
      continue;
    }
    auto component = ComponentFor(config, file, *m);
    if (!component) continue;
    if (auto floor = state.security.find(*component);
        floor != state.security.end() && m->security_version < floor->second.security_version) {
      continue;
    }
    if (auto installed = state.components.find(*component);
        installed != state.components.end() &&
        !Newer(m->security_version, m->version, installed->second.security_version,
               installed->second.version)) {
      continue;
    }
    auto it = best.find(*component);
    if (it == best.end() || Newer(m->security_version, m->version, it->second.update.security_version,
                                  it->second.update.version)) {
      best.insert_or_assign(*component, ReleaseChoice{*component, file, std::move(*m)});
    }
  }
  std::vector<ReleaseChoice> out;
  for (auto& [component, choice] : best) out.push_back(std::move(choice));
  return out;
}

}  // namespace upkeep::agent
