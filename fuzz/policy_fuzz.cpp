// Fuzz target: the agent's policy file (policy.json) and schedule file (schedule.json), as read at
// start-up. What parses must serialize and parse back to the same state, and deciding any update
// with it must not crash.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/agent/policy.hpp"
#include "upkeep/agent/schedule.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::agent;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto policy = ParsePolicyState(input)) {
    const std::string text = SerializePolicyState(*policy);
    auto again = ParsePolicyState(text);
    if (!again || !(*again == *policy) || SerializePolicyState(*again) != text) std::abort();
    PolicyOptions options;
    options.maintenance_window = DailyWindow{};
    for (const auto& [id, record] : policy->updates) {
      const OfferedUpdate update{id, record.kind, record.first_offered};
      const auto now = record.first_offered + options.security_postpone_cap;
      const Decision d = Decide(*policy, options, update, now);
      // Past the cap, a security update with automatic installation on is never postponed.
      if (record.kind == UpdateKind::Security && policy->security_auto_install &&
          d.verdict != Verdict::Install) {
        std::abort();
      }
      (void)DecideReboot(*policy, options, id, now);
    }
  }
  if (auto schedule = ParseScheduleState(input)) {
    const std::string text = SerializeScheduleState(*schedule);
    auto again = ParseScheduleState(text);
    if (!again || SerializeScheduleState(*again) != text) std::abort();
  }
  return 0;
}
