// agent_footprint_supervisor: a lower bound for the supervisor process of
// docs/adr/0008-agent-daemon-footprint.md, for bench/agent_footprint.sh. It serves the local API
// (upkeep::localapi as it is: the optional LAN listener stays off, but its TLS context is created
// all the same) on a Unix socket with a backend that answers GET /v1/status, and links neither
// libcurl nor the agent's update code. After --seconds idle it prints
//   mem VmRSS_KiB RssAnon_KiB RssFile_KiB RssShmem_KiB
// What the real supervisor adds (schedule, policy, outbox, configuration) is small beside this.

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "upkeep/common/log.hpp"
#include "upkeep/common/main_guard.hpp"
#include "upkeep/localapi/server.hpp"

namespace {

namespace localapi = upkeep::localapi;
using upkeep::Error;
using upkeep::Result;

class StatusOnly final : public localapi::LocalApiBackend {
 public:
  Result<localapi::DeviceInfo> Device(const localapi::Peer&) override { return No(); }
  Result<localapi::SupportInfo> Support(const localapi::Peer&) override { return No(); }
  Result<localapi::Status> GetStatus(const localapi::Peer&) override { return localapi::Status{}; }
  Result<std::vector<localapi::Notice>> Notices(const localapi::Peer&) override {
    return std::vector<localapi::Notice>{};
  }
  Result<localapi::PolicySettings> GetPolicy(const localapi::Peer&) override { return No(); }
  Result<localapi::PolicySettings> SetPolicy(const localapi::Peer&,
                                             const localapi::PolicySettings&) override {
    return No();
  }
  Result<void> CheckNow(const localapi::Peer&) override { return No(); }
  Result<localapi::PostponeResult> Postpone(const localapi::Peer&,
                                            const localapi::PostponeRequest&) override {
    return No();
  }
  Result<localapi::InstallAccepted> Install(localapi::InstallRequest) override { return No(); }
  Result<std::vector<localapi::Event>> Events(const localapi::Peer&, std::uint64_t,
                                              std::size_t) override {
    return std::vector<localapi::Event>{};
  }

 private:
  static Error No() { return Error(localapi::Errc::Unavailable, "not in this probe"); }
};

int Run(int argc, char** argv) {
  std::string socket;
  unsigned seconds = 2;
  CLI::App app{"agent_footprint_supervisor: the local API alone, idle"};
  app.add_option("socket", socket, "Unix socket to serve the local API on")->required();
  app.add_option("--seconds", seconds, "Idle time before the memory is read");
  CLI11_PARSE(app, argc, argv);
  upkeep::log::Init("error");
  StatusOnly backend;
  localapi::LocalApiOptions api;
  api.socket_path = socket;
  auto server = localapi::LocalApiServer::Start(api, backend);
  if (!server) {
    std::cerr << "agent_footprint_supervisor: " << server.error().ToString() << "\n";
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  std::ifstream in("/proc/self/status");
  std::string line;
  unsigned long long rss = 0, anon = 0, file = 0, shmem = 0, kib = 0;
  while (std::getline(in, line)) {
    if (std::sscanf(line.c_str(), "VmRSS: %llu", &kib) == 1) rss = kib;
    if (std::sscanf(line.c_str(), "RssAnon: %llu", &kib) == 1) anon = kib;
    if (std::sscanf(line.c_str(), "RssFile: %llu", &kib) == 1) file = kib;
    if (std::sscanf(line.c_str(), "RssShmem: %llu", &kib) == 1) shmem = kib;
  }
  std::printf("mem %llu %llu %llu %llu\n", rss, anon, file, shmem);
  (*server)->Stop(std::chrono::seconds(1));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return upkeep::GuardMain("agent_footprint_supervisor", std::cerr, 3,
                           [&] { return Run(argc, argv); });
}
