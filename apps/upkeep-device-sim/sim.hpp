#pragma once

#include <iosfwd>

namespace upkeep::devicesim {

// upkeep-device-sim: simulated devices for trying a fleet server (docs/server.md). Each device
// has its own key, certificate and state directory and runs the device side of the protocol
// with the same libraries as the agent: libs/deviceapi for enrolment, check-ins and reports, and
// metadata::VerifyDirectorAnswer (TUF + Uptane full verification against the image repository)
// before it "installs" anything. Installing means downloading the image and checking its length
// and hashes; nothing is written to a slot.
//   upkeep-device-sim [--state DIR] enrol --server URL --server-ca FILE (--token T | --token-file F)
//   upkeep-device-sim [--state DIR] run --image-repo DIR|URL --image-root FILE [--rounds N]
//                                       [--fail-percent P]
int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 1,
  kExitFailure = 2,  // a device could not enrol, check in or report
};

}  // namespace upkeep::devicesim
