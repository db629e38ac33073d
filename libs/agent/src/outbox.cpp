#include "upkeep/agent/outbox.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "upkeep/common/errc.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"

namespace upkeep::agent {

namespace {

constexpr std::size_t kSequenceDigits = 16;

const char* KindName(OutboxKind kind) { return kind == OutboxKind::kReport ? "report" : "incident"; }

bool IsIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

struct EntryName {
  std::uint64_t sequence = 0;
  OutboxKind kind = OutboxKind::kReport;
  std::string id;
};

// "<16 digits>-<report|incident>-<id>.json"; anything else is not an entry.
std::optional<EntryName> ParseName(std::string_view name) {
  if (name.size() < kSequenceDigits + 2 || !name.ends_with(".json")) return std::nullopt;
  EntryName e;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + kSequenceDigits, e.sequence);
  if (ec != std::errc() || end != name.data() + kSequenceDigits || name[kSequenceDigits] != '-') {
    return std::nullopt;
  }
  std::string_view rest = name.substr(kSequenceDigits + 1);
  rest.remove_suffix(5);
  if (rest.starts_with("report-")) {
    e.kind = OutboxKind::kReport;
    rest.remove_prefix(7);
  } else if (rest.starts_with("incident-")) {
    e.kind = OutboxKind::kIncident;
    rest.remove_prefix(9);
  } else {
    return std::nullopt;
  }
  if (rest.empty() || rest.size() > 128 || !std::all_of(rest.begin(), rest.end(), IsIdChar)) {
    return std::nullopt;
  }
  e.id = std::string(rest);
  return e;
}

}  // namespace

Outbox::Outbox(std::filesystem::path dir, Filesystem& filesystem, const Clock& clock,
               OutboxOptions options)
    : dir_(std::move(dir)), fs_(filesystem), clock_(clock), options_(options) {}

Result<std::vector<std::string>> Outbox::Pending() const {
  auto names = fs_.ListDirectory(dir_);
  if (!names) {
    if (names.error().code() == common::Errc::FileNotFound) return std::vector<std::string>();
    return std::move(names).error();
  }
  std::vector<std::string> entries;
  for (std::string& n : *names) {
    if (ParseName(n)) entries.push_back(std::move(n));
  }
  return entries;  // sorted by name, so by sequence
}

Result<void> Outbox::DropOldestIfFull(std::vector<std::string>& names) {
  while (names.size() >= options_.max_entries && !names.empty()) {
    auto victim = std::find_if(names.begin(), names.end(), [](const std::string& n) {
      return ParseName(n)->kind == OutboxKind::kReport;  // nothrow: names come from Pending()
    });
    if (victim == names.end()) victim = names.begin();
    log::warn("outbox: full ({} entries): dropping {}", names.size(), *victim);
    UPKEEP_TRY(fs_.Remove(dir_ / *victim));
    names.erase(victim);
  }
  return Ok();
}

Result<void> Outbox::Enqueue(OutboxKind kind, std::string_view id, std::string_view body) {
  if (id.empty() || id.size() > 128 || !std::all_of(id.begin(), id.end(), IsIdChar)) {
    return Error(common::Errc::InvalidArgument, "outbox: not a valid ID: " + PrintableText(id));
  }
  if (body.size() > options_.max_entry_bytes) {
    return Error(common::Errc::InvalidArgument, "outbox: entry larger than the limit");
  }
  UPKEEP_TRY(fs_.CreateDirectories(dir_));
  UPKEEP_ASSIGN_OR_RETURN(std::vector<std::string> names, Pending());
  std::uint64_t next = 1;
  for (const std::string& n : names) {
    const auto e = ParseName(n);
    if (!e) continue;
    if (e->kind == kind && e->id == id) return Ok();  // queued already
    next = std::max(next, e->sequence + 1);
  }
  UPKEEP_TRY(DropOldestIfFull(names));
  char sequence[kSequenceDigits + 1];
  std::snprintf(sequence, sizeof sequence, "%016llu", static_cast<unsigned long long>(next));
  const std::string name =
      std::string(sequence) + "-" + KindName(kind) + "-" + std::string(id) + ".json";
  return fs_.WriteFileAtomic(dir_ / name, body);
}

Result<OutboxRound> Outbox::Deliver(OutboxSender& sender) {
  OutboxRound round;
  UPKEEP_ASSIGN_OR_RETURN(std::vector<std::string> names, Pending());
  round.pending = names.size();
  if (retry_at_ && clock_.Now() < *retry_at_) {
    round.retry_at = retry_at_;
    return round;
  }
  for (const std::string& name : names) {
    const auto entry = ParseName(name);
    if (!entry) continue;
    auto body = fs_.ReadFile(dir_ / name, options_.max_entry_bytes);
    Result<void> sent = body ? sender.Send(entry->kind, *body) : Result<void>(std::move(body).error());
    if (!sent && body && sender.Retryable(sent.error())) {
      ++failures_;
      const auto shift = std::min(failures_ - 1, 20u);
      const auto delay = std::min<std::chrono::seconds>(options_.retry_max,
                                                        options_.retry_base * (1LL << shift));
      retry_at_ = clock_.Now() + delay;
      round.retry_at = retry_at_;
      log::info("outbox: {} not delivered ({}); next try in {} s", name,
                PrintableText(sent.error().ToString()), delay.count());
      return round;
    }
    if (sent) {
      UPKEEP_TRY(fs_.Remove(dir_ / name));
      ++round.delivered;
    } else {
      // Refused for good (or unreadable): kept aside, never sent again.
      log::warn("outbox: {} refused: {}", name, PrintableText(sent.error().ToString()));
      UPKEEP_TRY(fs_.CreateDirectories(dir_ / "rejected"));
      UPKEEP_TRY(fs_.Rename(dir_ / name, dir_ / "rejected" / name));
      ++round.rejected;
    }
    --round.pending;
  }
  failures_ = 0;
  retry_at_.reset();
  return round;
}

}  // namespace upkeep::agent
