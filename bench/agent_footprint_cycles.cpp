// agent_footprint_cycles: the memory of the agent daemon over many scheduled checks, for
// bench/agent_footprint.sh (docs/adr/0008-agent-daemon-footprint.md).
//
// Runs the daemon's own code (agent::Daemon, with the local API served on a Unix socket as
// `upkeep-agent run` does) from an agent configuration file, on a FakeClock instead of the system
// clock: one Tick at start (the boot check), then CYCLES times: advance the clock by the
// schedule's period and Tick. With a check window that closes before the clock's offset in the
// period (the script's configuration), every Tick runs a check: the image repository
// (repository.url) is read and verified for real each time. Prints the process's memory from
// /proc/self/status after the boot check, every --sample-every cycles, and at the end, as
//   mem LABEL CYCLES VmRSS_KiB RssAnon_KiB RssFile_KiB RssShmem_KiB
// then `checks OK FAILED` and `elapsed SECONDS`. Exit 0 when every check succeeded and all cycles
// ran; 1 on a bad configuration or a check that failed; 2 when --max-seconds ran out first.

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>

#include "upkeep/agent/config.hpp"
#include "upkeep/agent/daemon.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/main_guard.hpp"
#include "upkeep/localapi/server.hpp"

namespace {

namespace agent = upkeep::agent;
namespace localapi = upkeep::localapi;

struct Memory {
  std::uint64_t rss = 0, anon = 0, file = 0, shmem = 0;  // KiB
};

Memory ReadMemory() {
  Memory m;
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long kib = 0;
    if (std::sscanf(line.c_str(), "VmRSS: %llu", &kib) == 1) m.rss = kib;
    if (std::sscanf(line.c_str(), "RssAnon: %llu", &kib) == 1) m.anon = kib;
    if (std::sscanf(line.c_str(), "RssFile: %llu", &kib) == 1) m.file = kib;
    if (std::sscanf(line.c_str(), "RssShmem: %llu", &kib) == 1) m.shmem = kib;
  }
  return m;
}

void Print(const char* label, std::uint64_t cycles) {
  const Memory m = ReadMemory();
  std::printf("mem %s %llu %llu %llu %llu %llu\n", label, static_cast<unsigned long long>(cycles),
              static_cast<unsigned long long>(m.rss), static_cast<unsigned long long>(m.anon),
              static_cast<unsigned long long>(m.file), static_cast<unsigned long long>(m.shmem));
  std::fflush(stdout);
}

int Run(int argc, char** argv) {
  std::string config_file;
  std::string socket;
  std::string repository;
  std::uint64_t cycles = 10000;
  std::uint64_t sample_every = 1000;
  unsigned max_seconds = 900;
  std::string log_level = "error";
  CLI::App app{
      "agent_footprint_cycles: the agent daemon's memory over many checks on a fake clock"};
  app.add_option("config", config_file, "Agent configuration file (TOML)")->required();
  app.add_option("--socket", socket, "Local API socket (default: local_api.socket)");
  app.add_option("--repository", repository,
                 "Image repository: a URL, or a published repository's directory (default: "
                 "repository.url)");
  app.add_option("--cycles", cycles, "Checks after the boot check");
  app.add_option("--sample-every", sample_every, "Print the memory every N cycles (0: never)");
  app.add_option("--max-seconds", max_seconds, "Stop after this much real time");
  app.add_option("--log-level", log_level, "debug, info, warn, error or off");
  CLI11_PARSE(app, argc, argv);
  upkeep::log::Init(log_level.c_str());

  auto config = agent::LoadConfig(config_file);
  if (!config) {
    std::cerr << "agent_footprint_cycles: " << config.error().ToString() << "\n";
    return 1;
  }
  if (!socket.empty()) config->local_api.socket = socket;
  // The configuration file only takes http(s) URLs for repository.url; the daemon itself also
  // reads a published repository from a directory.
  if (!repository.empty()) config->repository.url = repository;
  const auto period = config->schedule.period;
  const auto past_window = config->schedule.window_start + config->schedule.window_length;
  if (past_window + std::chrono::seconds(1) >= period) {
    std::cerr << "agent_footprint_cycles: the check window must close before the end of the "
                 "period, so that every cycle checks\n";
    return 1;
  }

  // Start in the next period, just after its check window: each Advance(period) then lands
  // after the next period's check time.
  const auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  const auto period_start = upkeep::Clock::TimePoint((now.time_since_epoch() / period) * period);
  upkeep::FakeClock clock(period_start + period + past_window + std::chrono::seconds(1));
  upkeep::LocalFilesystem fs;
  agent::SeededRandom random(1);
  auto daemon = agent::Daemon::Create(*config, fs, clock, random);
  if (!daemon) {
    std::cerr << "agent_footprint_cycles: " << daemon.error().ToString() << "\n";
    return 1;
  }
  if (auto made = fs.CreateDirectories(config->local_api.socket.parent_path()); !made) {
    std::cerr << "agent_footprint_cycles: local API: " << made.error().ToString() << "\n";
    return 1;
  }
  localapi::LocalApiOptions api;
  api.socket_path = config->local_api.socket;
  api.mode = static_cast<mode_t>(config->local_api.mode);
  auto server = localapi::LocalApiServer::Start(api, **daemon);
  if (!server) {
    std::cerr << "agent_footprint_cycles: local API: " << server.error().ToString() << "\n";
    return 1;
  }

  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::optional<upkeep::Clock::TimePoint> last_success;
  auto count = [&] {
    const auto& state = (*daemon)->schedule().state();
    if (state.last_success && state.last_success != last_success) {
      ++ok;
      last_success = state.last_success;
    } else {
      ++failed;
    }
  };
  const auto started = std::chrono::steady_clock::now();
  (void)(*daemon)->Tick();  // the boot check (boot delay 0)
  count();
  Print("boot", 0);
  std::uint64_t done = 0;
  bool out_of_time = false;
  for (; done < cycles; ++done) {
    if (std::chrono::steady_clock::now() - started > std::chrono::seconds(max_seconds)) {
      out_of_time = true;
      break;
    }
    clock.Advance(period);
    (void)(*daemon)->Tick();
    count();
    if (sample_every != 0 && (done + 1) % sample_every == 0 && done + 1 < cycles) {
      Print("sample", done + 1);
    }
  }
  Print("end", done);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("checks %llu %llu\n", static_cast<unsigned long long>(ok),
              static_cast<unsigned long long>(failed));
  std::printf("elapsed %.1f\n", elapsed);
  std::printf("fake_clock_sleeps %zu\n", clock.sleeps().size());
  (*server)->Stop(std::chrono::seconds(1));
  if (out_of_time) return 2;
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  return upkeep::GuardMain("agent_footprint_cycles", std::cerr, 3, [&] { return Run(argc, argv); });
}
