// fleet_sim: how fast a release reaches a large fleet, decided by the server's real rollout code.
//
// N devices (default 100,000; a share of them offline) check in once a day at a random time
// inside the check-in window, as the agent schedules them. A release is imported at t = 0 and a
// campaign created for it; each check-in runs the director's decision (server::DirectDevice, the
// code behind every real check-in answer) in a database transaction, and a device offered the
// release reports `committed` (server::RecordCampaignOutcome) `--install-minutes` later. Time runs
// on a simulated clock in one-minute steps; the database is a real SQLite file (on /dev/shm when
// there is one). The TLS and HTTP layers are bench/server.sh's business.
//
// Prints, for a security release (fast path: every phase open at once) and a feature release
// (phases 1/10/50/100 % a soak time apart): the time until 95% of the online devices installed it,
// and the peak rate of check-ins plus reports per second.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>
#include <unistd.h>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/main_guard.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/server/campaigns.hpp"
#include "upkeep/server/fleet.hpp"
#include "upkeep/storage/database.hpp"

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using upkeep::Result;
namespace server = upkeep::server;
namespace storage = upkeep::storage;

struct Options {
  unsigned devices = 100000;
  double online = 0.9;
  unsigned window_hours = 24;
  unsigned install_minutes = 15;
  unsigned max_days = 10;
  double soak_hours = 24;
  std::uint64_t seed = 1;
  std::string dir;
};

struct Outcome {
  double hours_to_95 = -1;       // -1: not reached within max_days
  double peak_per_second = 0;    // check-ins + reports, busiest minute
  std::uint64_t checkins = 0;
};

// Creates the devices, one release and one campaign; runs the days.
Result<Outcome> Simulate(const Options& o, bool security, const fs::path& db_path) {
  std::error_code ec;
  fs::remove(db_path, ec);
  storage::Options so;
  so.pool_size = 1;
  UPKEEP_ASSIGN_OR_RETURN(auto db, storage::OpenDatabase("sqlite:" + db_path.string(), so));
  UPKEEP_TRY(server::MigrateFleetSchema(*db));
  const std::int64_t t0 = 1'800'000'000;  // a Unix time; only differences matter
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<std::int64_t> offset(0, std::int64_t{o.window_hours} * 3600 - 1);
  std::bernoulli_distribution is_online(o.online);

  struct Device {
    std::string id;
    std::int64_t next_checkin = 0;
    std::int64_t install_done = -1;  // when its report goes out (-1: none pending)
    bool online = true;
    bool installed = false;
  };
  std::vector<Device> devices(o.devices);
  std::uint64_t online_count = 0;
  auto created = db->InTransaction([&](storage::Tx& tx) -> Result<void> {
    for (std::size_t i = 0; i < devices.size(); ++i) {
      Device& d = devices[i];
      char id[32];
      std::snprintf(id, sizeof id, "d-%016zx", i);
      d.id = id;
      d.next_checkin = t0 + offset(rng);
      d.online = is_online(rng);
      online_count += d.online ? 1 : 0;
      UPKEEP_TRY(tx.Exec(
          "INSERT INTO devices (id, model, serial, hardware, device_group, certificate_serial, "
          "enrolled_at) VALUES ($1, 'cam', $1, 'cam', 'field', $1, $2)",
          {d.id, t0}));
    }
    UPKEEP_TRY(tx.Exec(
        "INSERT INTO releases (id, seq, security, source, created_at) VALUES ('r', 1, $1, 'sim', "
        "$2)",
        {std::int64_t{security ? 1 : 0}, t0}));
    UPKEEP_TRY(tx.Exec(
        "INSERT INTO release_targets (release_id, hardware, target_path, length, sha256, version, "
        "security) VALUES ('r', 'cam', 'rootfs/2.0.payload', 1000, $1, '2.0', $2)",
        {std::string(64, 'a'), std::int64_t{security ? 1 : 0}}));
    return upkeep::Ok();
  });
  if (!created) return std::move(created).error();
  upkeep::FakeClock clock{upkeep::Clock::TimePoint(std::chrono::seconds(t0))};
  server::CampaignSpec spec;
  spec.id = "c";
  spec.release = "r";
  spec.group = "field";
  spec.soak = std::chrono::seconds(static_cast<std::int64_t>(o.soak_hours * 3600));
  UPKEEP_TRY(server::CreateCampaign(*db, clock, spec));

  Outcome out;
  std::uint64_t installed = 0;
  const std::uint64_t goal = (online_count * 95 + 99) / 100;
  const std::int64_t end = t0 + std::int64_t{o.max_days} * 86400;
  for (std::int64_t minute = t0; minute < end && installed < goal; minute += 60) {
    std::uint64_t requests = 0;
    auto minute_done = db->InTransaction([&](storage::Tx& tx) -> Result<void> {
      for (Device& d : devices) {
        if (!d.online) continue;
        if (d.install_done >= 0 && d.install_done < minute + 60) {
          UPKEEP_TRY(server::RecordCampaignOutcome(tx, d.id, "rootfs/2.0.payload", "committed",
                                                   d.install_done));
          d.install_done = -1;
          d.installed = true;
          ++installed;
          ++requests;
        }
        if (d.next_checkin >= minute + 60) continue;
        server::DeviceView view{d.id, "cam", "field",
                                {d.installed ? "rootfs/2.0.payload" : "rootfs/1.0.payload"}};
        UPKEEP_ASSIGN_OR_RETURN(server::Direction direction,
                                server::DirectDevice(tx, view, d.next_checkin));
        ++requests;
        ++out.checkins;
        if (!direction.targets.empty() && d.install_done < 0 && !d.installed) {
          d.install_done = d.next_checkin + std::int64_t{o.install_minutes} * 60;
        }
        d.next_checkin += 86400;
      }
      return upkeep::Ok();
    });
    if (!minute_done) return std::move(minute_done).error();
    out.peak_per_second = std::max(out.peak_per_second, static_cast<double>(requests) / 60.0);
    if (installed >= goal) out.hours_to_95 = static_cast<double>(minute + 60 - t0) / 3600.0;
  }
  db.reset();
  fs::remove(db_path, ec);
  fs::remove(db_path.string() + "-wal", ec);
  fs::remove(db_path.string() + "-shm", ec);
  return out;
}

int Run(int argc, char** argv) {
  Options o;
  CLI::App app{"fleet_sim: time for a release to reach 95% of a simulated fleet"};
  app.add_option("--devices", o.devices, "devices")->capture_default_str()->check(
      CLI::Range(1u, 1000000u));
  app.add_option("--online", o.online, "share of devices online")->capture_default_str()->check(
      CLI::Range(0.01, 1.0));
  app.add_option("--window-hours", o.window_hours, "daily check-in window")
      ->capture_default_str()
      ->check(CLI::Range(1u, 24u));
  app.add_option("--install-minutes", o.install_minutes, "from offer to report")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1440u));
  app.add_option("--soak-hours", o.soak_hours, "soak time of the feature release's phases")
      ->capture_default_str();
  app.add_option("--max-days", o.max_days, "simulated days at most")->capture_default_str()->check(
      CLI::Range(1u, 60u));
  app.add_option("--seed", o.seed, "random seed")->capture_default_str();
  app.add_option("--dir", o.dir, "directory for the database (default /dev/shm or /tmp)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  upkeep::log::Init("off");
  fs::path dir = o.dir;
  std::error_code ec;
  if (dir.empty()) dir = fs::is_directory("/dev/shm", ec) ? "/dev/shm" : fs::temp_directory_path(ec);
  const fs::path db_path = dir / ("upkeep-fleet-sim-" + std::to_string(::getpid()) + ".db");
  for (const bool security : {true, false}) {
    const auto started = std::chrono::steady_clock::now();
    auto r = Simulate(o, security, db_path);
    if (!r) {
      std::cerr << "fleet_sim: " << r.error().ToString() << "\n";
      return 2;
    }
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("fleet %s release: %u devices (%.0f%% online), daily check-ins in a %u h window: "
                "95%% of online devices installed after %s, peak %.1f requests/s "
                "(%llu check-ins simulated in %.1f s)\n",
                security ? "security" : "feature", o.devices, o.online * 100, o.window_hours,
                r->hours_to_95 < 0 ? "never (within --max-days)"
                                   : (std::to_string(r->hours_to_95).substr(0, 5) + " h").c_str(),
                r->peak_per_second, static_cast<unsigned long long>(r->checkins), wall);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return upkeep::GuardMain("fleet_sim", std::cerr, 2, [&] { return Run(argc, argv); });
}
