// Fuzz target: the device API's request bodies as the fleet server receives them (any bytes, any
// endpoint). What parses must be consistent: canonical JSON stored for a check-in, report or
// incident parses again; IDs and models hold only [A-Za-z0-9._-]; a counter is non-negative.
// Nothing may throw or abort.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/server/fleet.hpp"

namespace {

namespace server = upkeep::server;

bool IsName(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

void MustParse(const std::string& canonical) {
  if (!upkeep::metadata::ParseJson(canonical)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 128 * 1024) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  if (auto e = server::ParseEnrolRequest(body)) {
    if (!IsName(e->model)) std::abort();
  }
  if (auto c = server::ParseCheckinRequest(body)) {
    if (c->counter < 0 || !IsName(c->model) || !IsName(c->hardware)) std::abort();
    MustParse(c->components_json);
    MustParse(c->policy_json);
    MustParse(c->update_json);
  }
  if (auto r = server::ParseReportRequest(body)) {
    if (!IsName(r->report_id) || !IsName(r->update_id)) std::abort();
    MustParse(r->body_json);
  }
  if (auto i = server::ParseIncidentRequest(body)) {
    if (!IsName(i->incident_id) || !IsName(i->kind)) std::abort();
    MustParse(i->body_json);
  }
  return 0;
}
