#pragma once

// Runs upkeep-server's command line in-process (the same Main the binary runs).

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

}  // namespace upkeep::server
