#pragma once

// upkeep-module TYPE STAGE WORKDIR: runs one stage of a shipped update module.
// TYPE is file, dir or deb; STAGE one of Download, Install, Commit, Rollback, Cleanup.

#include <ostream>

namespace upkeep::module_tool {

// Exit status: 0 the stage succeeded, 1 it failed (the reason is on `err`), 2 usage error.
int Main(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::module_tool
