#pragma once

// The common part of the local API's test backends: fixed answers for the read-only calls, a
// stored policy, and a record of every call with the peer that made it. Each test file derives
// its own fake and overrides what it examines.

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "upkeep/localapi/backend.hpp"

namespace upkeep::testing {

inline const Clock::TimePoint kT0 = std::chrono::sys_days(std::chrono::year(2026) / 12 / 7);

class RecordingBackend : public localapi::LocalApiBackend {
 public:
  Result<localapi::DeviceInfo> Device(const localapi::Peer& peer) override {
    Record(peer, "device");
    return localapi::DeviceInfo{
        "Acme Thermostat T2", "rev-c", {{"firmware", "1.4.2"}, {"app", "2.0.0"}}};
  }
  Result<localapi::Status> GetStatus(const localapi::Peer& peer) override {
    Record(peer, "status");
    return localapi::Status{localapi::UpdateState::kDownloading, "sec-2026-12",
                            localapi::Progress{512, 2048}, kT0};
  }
  Result<localapi::PolicySettings> GetPolicy(const localapi::Peer& peer) override {
    Record(peer, "get_policy");
    std::lock_guard l(mu);
    return policy;
  }
  Result<localapi::PolicySettings> SetPolicy(const localapi::Peer& peer,
                                             const localapi::PolicySettings& s) override {
    Record(peer, "set_policy");
    std::lock_guard l(mu);
    policy = s;
    return policy;
  }
  // Events 1..last_event, `after` and `max` applied.
  Result<std::vector<localapi::Event>> Events(const localapi::Peer& peer, std::uint64_t after,
                                              std::size_t max) override {
    Record(peer, "events");
    std::lock_guard l(mu);
    last_max = max;
    std::vector<localapi::Event> out;
    for (std::uint64_t s = after + 1; s <= last_event && out.size() < max; ++s) {
      out.push_back(
          localapi::Event{s, kT0 + std::chrono::seconds(s), "state", "step " + std::to_string(s)});
    }
    return out;
  }

  void Record(const localapi::Peer& peer, const std::string& call) {
    std::lock_guard l(mu);
    calls.push_back(call);
    last_peer = peer;
  }
  std::vector<std::string> Calls() {
    std::lock_guard l(mu);
    return calls;
  }

  std::mutex mu;
  std::vector<std::string> calls;
  localapi::Peer last_peer;
  localapi::PolicySettings policy;
  std::uint64_t last_event = 3;
  std::size_t last_max = 0;
};

}  // namespace upkeep::testing
