#pragma once

// A device for the repository tests: it trusts a published repository's first root and reads the
// repository over HTTP from a server on 127.0.0.1, with the real client stack.

#include <filesystem>
#include <string>

#include "http_test_server.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/metadata/updater.hpp"
#include "upkeep/transport/http_fetcher.hpp"

namespace upkeep::testing {

class Device {
 public:
  Device(const std::filesystem::path& www, std::filesystem::path dir, const Clock& clock)
      : server(www), dir_(std::move(dir)), clock_(clock) {
    std::filesystem::create_directories(dir_);
    std::filesystem::copy_file(www / "metadata" / "1.root.json", dir_ / "root.json");
  }

  // A new client over the device's metadata directory, as after a restart.
  metadata::Updater Client() {
    return metadata::Updater(dir_, server.base_url() + "/metadata/", fetcher_, fs_, clock_);
  }

  HttpTestServer server;

 private:
  std::filesystem::path dir_;
  const Clock& clock_;
  transport::HttpFetcher fetcher_;
  LocalFilesystem fs_;
};

}  // namespace upkeep::testing
