#include "upkeep/agent/schedule.hpp"

#include <algorithm>
#include <limits>

#include "upkeep/agent/config.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::agent {

namespace {

using std::chrono::seconds;

constexpr std::uint64_t kScheduleFormat = 1;
// 9999-12-31T23:59:59Z: any later time in a persisted file is corrupt (and would overflow).
constexpr std::uint64_t kMaxUnixSeconds = 253402300799;

Error BadOption(const std::string& key, const std::string& what) {
  return Error(Errc::InvalidConfig, "schedule." + key + ": " + what);
}

}  // namespace

std::uint64_t SeededRandom::Next() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

seconds UniformSeconds(RandomSource& random, seconds lo, seconds hi) {
  if (hi <= lo) return lo;
  const auto span = static_cast<std::uint64_t>(hi.count() - lo.count()) + 1;
  // Modulo bias is below span / 2^64: negligible for spans of seconds.
  const auto offset = static_cast<std::int64_t>(random.Next() % span);
  return lo + seconds(offset);
}

Result<void> ValidateScheduleOptions(const ScheduleOptions& o) {
  if (o.boot_delay_min.count() < 0) return BadOption("boot_delay_min", "must not be negative");
  if (o.boot_delay_max < o.boot_delay_min) {
    return BadOption("boot_delay_max", "must not be below boot_delay_min");
  }
  if (o.period.count() <= 0) return BadOption("period", "must be positive");
  if (o.window_start.count() < 0) return BadOption("window_start", "must not be negative");
  if (o.window_length.count() <= 0) return BadOption("window_length", "must be positive");
  if (o.window_start + o.window_length > o.period) {
    return BadOption("window_length", "window_start + window_length exceeds the period");
  }
  if (o.backoff_base.count() <= 0) return BadOption("backoff_base", "must be positive");
  if (o.backoff_cap < o.backoff_base) return BadOption("backoff_cap", "must be >= backoff_base");
  if (o.hint_min.count() <= 0) return BadOption("hint_min", "must be positive");
  if (o.hint_max < o.hint_min) return BadOption("hint_max", "must be >= hint_min");
  return Ok();
}

Result<ScheduleState> ParseScheduleState(std::string_view text) {
  auto corrupt = [](const Error& e) {
    return Error(Errc::ScheduleCorrupt, "schedule.json: " + e.message());
  };
  auto doc = metadata::ParseJson(text);
  if (!doc) return corrupt(doc.error());
  auto read = [&]() -> Result<ScheduleState> {
    UPKEEP_ASSIGN_OR_RETURN(metadata::JsonReader r,
                            metadata::JsonReader::Of(*doc, metadata::Errc::InvalidMetadata, ""));
    UPKEEP_ASSIGN_OR_RETURN(const std::uint64_t format,
                            r.Uint("format", {.min = kScheduleFormat, .max = kScheduleFormat}));
    (void)format;
    ScheduleState s;
    UPKEEP_ASSIGN_OR_RETURN(const std::uint64_t failures,
                            r.Uint("failures", {.max = std::numeric_limits<std::uint32_t>::max()}));
    s.failures = static_cast<std::uint32_t>(failures);
    if (const auto* last = r.Optional("last_success"); last != nullptr && last->is_null()) {
      r.MarkRead("last_success");
    } else {
      UPKEEP_ASSIGN_OR_RETURN(const std::uint64_t t,
                              r.Uint("last_success", {.max = kMaxUnixSeconds}));
      s.last_success = Clock::TimePoint(seconds(static_cast<std::int64_t>(t)));
    }
    UPKEEP_TRY(r.NoUnknownKeys());
    return s;
  };
  auto state = read();
  if (!state) return corrupt(state.error());
  return state;
}

std::string SerializeScheduleState(const ScheduleState& s) {
  metadata::Json doc = {{"format", kScheduleFormat}, {"failures", s.failures}};
  if (s.last_success) {
    doc["last_success"] = s.last_success->time_since_epoch().count();
  } else {
    doc["last_success"] = nullptr;
  }
  return metadata::DumpJson(doc) + "\n";
}

const char* ToString(CheckReason reason) {
  switch (reason) {
    case CheckReason::Boot:
      return "boot";
    case CheckReason::Periodic:
      return "periodic";
    case CheckReason::Backoff:
      return "backoff";
    case CheckReason::Requested:
      return "requested";
    case CheckReason::ServerHint:
      return "server_hint";
  }
  return "unknown";
}

CheckSchedule::CheckSchedule(ScheduleOptions options, RandomSource& random, ScheduleState state)
    : options_(ValidateScheduleOptions(options) ? options : ScheduleOptions{}),
      random_(random),
      state_(state) {}

Clock::TimePoint CheckSchedule::NextCheck(Clock::TimePoint now) const {
  return next_ ? *next_ : now;
}

void CheckSchedule::OnBoot(Clock::TimePoint now) {
  next_ = now + UniformSeconds(random_, options_.boot_delay_min, options_.boot_delay_max);
  reason_ = CheckReason::Boot;
}

void CheckSchedule::OnSuccess(Clock::TimePoint now, std::optional<std::uint64_t> hint) {
  state_.failures = 0;
  state_.last_success = now;
  if (hint) {
    const auto lo = static_cast<std::uint64_t>(options_.hint_min.count());
    const auto hi = static_cast<std::uint64_t>(options_.hint_max.count());
    next_ = now + seconds(static_cast<std::int64_t>(std::clamp(*hint, lo, hi)));
    reason_ = CheckReason::ServerHint;
    return;
  }
  next_ = NextPeriodic(now);
  reason_ = CheckReason::Periodic;
}

seconds CheckSchedule::BackoffCeiling(std::uint32_t failures) const {
  if (failures == 0) return seconds(0);
  const std::int64_t base = options_.backoff_base.count();
  const std::int64_t cap = options_.backoff_cap.count();
  std::int64_t ceiling = base;
  // Doubling stops at the cap, so neither the shift nor the product can overflow.
  for (std::uint32_t i = 1; i < failures && ceiling < cap; ++i) ceiling *= 2;
  return seconds(std::min(ceiling, cap));
}

void CheckSchedule::OnFailure(Clock::TimePoint now) {
  if (state_.failures < std::numeric_limits<std::uint32_t>::max()) ++state_.failures;
  next_ = now + UniformSeconds(random_, seconds(1), BackoffCeiling(state_.failures));
  reason_ = CheckReason::Backoff;
}

void CheckSchedule::RequestNow(Clock::TimePoint now) {
  next_ = now;
  reason_ = CheckReason::Requested;
}

Clock::TimePoint CheckSchedule::NextPeriodic(Clock::TimePoint t) {
  const std::int64_t period = options_.period.count();
  const std::int64_t since_epoch = t.time_since_epoch().count();
  // Floor division, so a time before 1970 (a clock not yet set) still lands in its own period.
  std::int64_t k = since_epoch / period;
  if (since_epoch % period < 0) --k;
  const seconds offset = options_.window_start +
                         UniformSeconds(random_, seconds(0), options_.window_length - seconds(1));
  return Clock::TimePoint(seconds((k + 1) * period)) + offset;
}

}  // namespace upkeep::agent
