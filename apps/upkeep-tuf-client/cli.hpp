#pragma once

#include <iosfwd>

namespace upkeep::tufclient {

// upkeep-tuf-client: a TUF 1.0 client on the command line.
//   --metadata-dir DIR init TRUSTED_ROOT
//   --metadata-dir DIR --metadata-url URL refresh
//   --metadata-dir DIR --metadata-url URL --target-name PATH --target-base-url URL
//     --target-dir TDIR download
// Exit status 0 on success, 1 on any failure. Reports go to `out`, errors to `err`.
int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::tufclient
