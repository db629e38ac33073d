#pragma once

// Runs upkeep-server's command line in-process (the same Main the binary runs).

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"

namespace upkeep::server {

struct CliRun {
  int code;
  std::string out;
  std::string err;
};

inline CliRun Cli(std::vector<std::string> args) {
  args.insert(args.begin(), "upkeep-server");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  const int code = Main(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

// `upkeep-server init DIR --ip 127.0.0.1`, then DIR/server.toml changed to listen on 127.0.0.1
// port 0 (tests never bind another address). Returns the configuration's text; empty when init
// failed.
inline std::string InitLoopbackServer(const std::string& dir) {
  if (Cli({"init", dir, "--ip", "127.0.0.1"}).code != kExitOk) return "";
  const std::string config = dir + "/server.toml";
  std::ifstream in(config);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"0.0.0.0", "127.0.0.1"},
                                 {"port = 8443", "port = 0"}}) {
    if (const auto at = text.find(from); at != std::string::npos) text.replace(at, from.size(), to);
  }
  std::ofstream(config) << text;
  return text;
}

}  // namespace upkeep::server
