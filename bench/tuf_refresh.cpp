// bench/tuf_refresh: times upkeep's TUF client on a served repository.
//   cold: empty metadata directory (trusted root only), refresh + one target lookup
//   warm: the metadata directory of a previous run, a new Updater, refresh + the same lookup
// Prints one JSON line with medians in milliseconds; bench/tuf_refresh.sh compares it with the
// tuf-js client on the same repository in the same run.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/metadata/updater.hpp"
#include "upkeep/transport/http_fetcher.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

bool RunOnce(const fs::path& dir, const std::string& url, const std::string& target) {
  upkeep::LocalFilesystem filesystem;
  upkeep::SystemClock clock;
  upkeep::transport::HttpFetcher fetcher;
  upkeep::metadata::Updater updater(dir, url, fetcher, filesystem, clock);
  if (auto r = updater.Refresh(); !r) {
    std::fprintf(stderr, "refresh failed: %s\n", r.error().ToString().c_str());
    return false;
  }
  auto info = updater.GetTargetInfo(target);
  if (!info) {
    std::fprintf(stderr, "lookup failed: %s\n", info.error().ToString().c_str());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url, root, target, work;
  int iterations = 10;
  CLI::App app{"upkeep TUF refresh benchmark"};
  app.add_option("--metadata-url", url)->required();
  app.add_option("--root", root)->required();
  app.add_option("--target", target)->required();
  app.add_option("--work-dir", work)->required();
  app.add_option("--iterations", iterations)->check(CLI::Range(1, 50));
  CLI11_PARSE(app, argc, argv);

  std::stringstream root_bytes;
  root_bytes << std::ifstream(root, std::ios::binary).rdbuf();
  std::vector<double> cold, warm;
  for (int i = 0; i < iterations; ++i) {
    const fs::path dir = fs::path(work) / ("run-" + std::to_string(i));
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::ofstream(dir / "root.json", std::ios::binary) << root_bytes.str();
    auto t0 = Clock::now();
    if (!RunOnce(dir, url, target)) return 1;
    auto t1 = Clock::now();
    if (!RunOnce(dir, url, target)) return 1;
    auto t2 = Clock::now();
    cold.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    warm.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
    fs::remove_all(dir);
  }
  std::printf("{\"cold_ms_median\": %.3f, \"warm_ms_median\": %.3f, \"iterations\": %d}\n",
              Median(cold), Median(warm), iterations);
  return 0;
}
