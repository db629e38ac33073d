// Fuzz target: the agent's local API request bodies (PUT /v1/policy, POST /v1/postpone, POST
// /v1/install), as any local user can send them. Whatever parses must obey the documented limits.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/localapi/requests.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::localapi;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  (void)ParsePolicyRequest(input);
  if (auto p = ParsePostponeRequest(input)) {
    if (p->update_id.empty() || p->update_id.size() > 256) std::abort();
  }
  if (auto path = ParseInstallRequest(input)) {
    if (path->empty() || path->front() != '/' || path->find('\0') != std::string::npos ||
        path->size() > 4096) {
      std::abort();
    }
  }
  return 0;
}
