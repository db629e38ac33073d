// Fuzz target: the local API client's answer parsers (upkeep/localapi/client.hpp), as a process
// listening on the daemon's socket path could send them. Every parser must fail with an error
// value, and what parses must obey the API's rules.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/localapi/client.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::localapi;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  (void)ParseDeviceAnswer(input);
  (void)ParseSupportAnswer(input);
  (void)ParseStatusAnswer(input);
  (void)ParsePolicyAnswer(input);
  (void)ParseCheckAnswer(input);
  if (auto n = ParseNoticesAnswer(input)) {
    for (const auto& notice : *n) {
      if (notice.id.empty()) std::abort();
    }
  }
  if (auto p = ParsePostponeAnswer(input)) {
    if (p->update_id.empty()) std::abort();
  }
  if (auto i = ParseInstallAnswer(input)) {
    if (i->install_id.empty()) std::abort();
  }
  if (auto events = ParseEventsAnswer(input, 7)) {
    std::uint64_t last = 7;
    for (const auto& e : *events) {
      if (e.sequence <= last || e.type.empty()) std::abort();
      last = e.sequence;
    }
  }
  for (const unsigned status : {400u, 401u, 403u, 404u, 409u, 413u, 422u, 429u, 431u, 500u, 503u,
                                418u}) {
    const auto e = ParseErrorAnswer(status, input);
    // EN 303 645 5.3-9: a rejection never carries the server's text.
    if (e.code() == Errc::Rejected && e.message() != "update rejected") std::abort();
    if (e.code() == Errc::Rejected && status != 422) std::abort();
  }
  return 0;
}
