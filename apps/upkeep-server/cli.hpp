#pragma once

#include <iosfwd>

namespace upkeep::server {

// upkeep-server: the fleet server (docs/server.md).
//   upkeep-server [-c FILE] serve
//   upkeep-server [-c FILE] --dump-config
//   upkeep-server init DIR [--dns NAME]... [--ip ADDRESS]...
//   upkeep-server [-c FILE] admin incidents list [--json] [--undelivered]
//   upkeep-server [-c FILE] admin token create --model M [--group G] [--expires-days N]
//   upkeep-server [-c FILE] admin devices list [--json]
//   upkeep-server [-c FILE] admin devices block|assign|unassign|set-group ...
//   upkeep-server [-c FILE] admin releases import|list ...
//   upkeep-server [-c FILE] admin groups list|set-window|clear-window ...
//   upkeep-server [-c FILE] admin campaigns create|list|pause|resume|cancel ...
int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 1,     // bad command line or configuration
  kExitFailure = 2,   // the database, the TLS identity or the device CA cannot be used
  kExitNotFound = 3,  // no device, release or campaign with that name
  kExitConflict = 4,  // it exists already, or is not in a state the command applies to
  kExitRejected = 5,  // the image repository did not verify (release import)
};

}  // namespace upkeep::server
