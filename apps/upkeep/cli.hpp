#pragma once

#include <iosfwd>

namespace upkeep::tool {

// upkeep: release tooling.
//   upkeep image build IMAGE -o DIR [--chunk-size BYTES] [--level N] [--threads N]
//   upkeep image verify INDEX PAYLOAD [-o IMAGE]
//   upkeep bundle create --repo DIR --root ROOT --target PATH... -o FILE
//   upkeep bundle verify FILE --root ROOT --target PATH... [-o DIR]
// Exit status 0 on success, 1 on failure, 2 on bad usage.
int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::tool
