#include "client_cli.hpp"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <ostream>
#include <thread>

#include "cli.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/localapi/client.hpp"
#include "upkeep/localapi/server.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::agent {

namespace {

using localapi::Errc;
using localapi::LocalApiClient;
using metadata::DumpJson;
using metadata::Json;
using SteadyClock = std::chrono::steady_clock;

// Most pages of events read in one go (100 events each): bounds a walk through the log.
constexpr int kMaxEventPages = 10'000;
// Polls with the daemon idle again, after it was busy, before an install without a result ends.
constexpr int kIdlePollsBeforeGivingUp = 3;

// Text from the daemon on one line: no control characters, no line breaks (no spoofed lines).
std::string OneLine(std::string_view text) {
  std::string s = PrintableText(text);
  for (char& c : s) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  return s;
}

Json OptionalTime(const std::optional<Clock::TimePoint>& t) {
  return t ? Json(localapi::FormatTime(*t)) : Json(nullptr);
}

std::string TimeText(const std::optional<Clock::TimePoint>& t, const char* none) {
  return t ? localapi::FormatTime(*t) : std::string(none);
}

const char* OnOff(bool b) { return b ? "on" : "off"; }

Json PolicyJson(const localapi::PolicySettings& p) {
  return Json{{"auto_install", p.auto_install},
              {"notifications", p.notifications},
              {"security_auto_install", p.security_auto_install},
              {"reboot_later", p.reboot_later}};
}

std::string PolicyText(const localapi::PolicySettings& p) {
  return std::string("auto-install: ") + OnOff(p.auto_install) +
         "\nnotifications: " + OnOff(p.notifications) +
         "\nsecurity-auto-install: " + OnOff(p.security_auto_install) +
         "\nreboot-later: " + OnOff(p.reboot_later) + "\n";
}

Json StatusJson(const localapi::Status& s) {
  Json j = {{"state", localapi::ToString(s.state)},
            {"update_id", s.update_id ? Json(*s.update_id) : Json(nullptr)},
            {"progress", nullptr},
            {"last_check", OptionalTime(s.last_check)}};
  if (s.progress) j["progress"] = {{"done", s.progress->done}, {"total", s.progress->total}};
  return j;
}

unsigned Percent(const localapi::Progress& p) {
  if (p.total == 0) return 0;
  const std::uint64_t done = p.done > p.total ? p.total : p.done;
  // done * 100 cannot overflow for any size a device holds; divide first for the rest.
  if (done > UINT64_MAX / 100) return static_cast<unsigned>(done / (p.total / 100 + 1));
  return static_cast<unsigned>(done * 100 / p.total);
}

std::string StatusText(const localapi::Status& s) {
  std::string t = std::string("state: ") + localapi::ToString(s.state);
  if (s.update_id) t += " (update " + OneLine(*s.update_id) + ")";
  t += "\n";
  if (s.progress) {
    t += "progress: " + std::to_string(Percent(*s.progress)) + "% (" +
         std::to_string(s.progress->done) + "/" + std::to_string(s.progress->total) + " bytes)\n";
  }
  t += "last check: " + TimeText(s.last_check, "never") + "\n";
  return t;
}

// Output for people or, with --json, one JSON object per line on stdout (docs/agent.md):
// {"type":"event",...}, {"type":"progress",...}, then {"type":"result",...} or
// {"type":"error",...}.
class Printer {
 public:
  Printer(const ClientOptions& o, std::ostream& out, std::ostream& err)
      : out_(out),
        err_(err),
        json_(o.json),
        bar_(!o.json && o.progress_bar.value_or(::isatty(STDERR_FILENO) == 1)),
        silent_if_not_running_(o.silent_if_not_running) {}

  void Result(const Json& result, const std::string& text) {
    EndBar();
    if (json_) {
      out_ << DumpJson(Json{{"type", "result"}, {"result", result}}) << "\n" << std::flush;
    } else {
      out_ << text << std::flush;  // built from OneLine / PrintableText pieces
    }
  }

  // `first`: the error came from the first request, so the daemon's absence means nothing was
  // done (kExitDaemonNotRunning); later, losing the daemon is a failure of its own.
  int Fail(const Error& e, bool first = false) {
    EndBar();
    int code = ClientExitCode(e);
    if (code == kExitDaemonNotRunning && !first) code = kExitDevice;
    if (code == kExitDaemonNotRunning && silent_if_not_running_) return code;
    // EN 303 645 5.3-9: a rejected update is "update rejected", whatever was sent with it.
    const bool rejected = e.code() == Errc::Rejected;
    const std::string message = rejected ? std::string("update rejected") : e.message();
    if (json_) {
      out_ << DumpJson(Json{{"type", "error"},
                            {"code", std::string(e.code().category().name()) + "." +
                                         e.code().message()},
                            {"message", message},
                            {"exit_code", code}})
           << "\n"
           << std::flush;
    } else if (rejected) {
      err_ << "update rejected\n" << std::flush;
    } else if (e.code() == Errc::DaemonNotRunning && code == kExitDaemonNotRunning) {
      err_ << "upkeep-agent: the update daemon is not running (" << OneLine(e.message())
           << ")\n"
           << std::flush;
    } else {
      err_ << "upkeep-agent: " << OneLine(e.ToString()) << "\n" << std::flush;
    }
    return code;
  }

  int Usage(const std::string& message) {
    EndBar();
    if (json_) {
      out_ << DumpJson(Json{{"type", "error"},
                            {"code", "usage"},
                            {"message", message},
                            {"exit_code", static_cast<int>(kExitUsage)}})
           << "\n";
    } else {
      err_ << "upkeep-agent: " << message << "\n";
    }
    return kExitUsage;
  }

  // An event from the daemon's log; `as_result`: the `events` command (stdout) rather than
  // events seen while following something (stderr).
  void Event(const localapi::Event& e, bool as_result) {
    EndBar();
    if (json_) {
      out_ << DumpJson(Json{{"type", "event"},
                            {"sequence", e.sequence},
                            {"time", localapi::FormatTime(e.time)},
                            {"event", e.type},
                            {"message", e.message}})
           << "\n"
           << std::flush;
      return;
    }
    std::ostream& to = as_result ? out_ : err_;
    if (as_result) to << e.sequence << " " << localapi::FormatTime(e.time) << " ";
    to << OneLine(e.type) << ": " << OneLine(e.message) << "\n" << std::flush;
  }

  void Progress(const localapi::Status& s) {
    const unsigned percent = s.progress ? Percent(*s.progress) : 0;
    const bool changed = s.state != last_state_ || percent / 10 != last_percent_ / 10 ||
                         (bar_ && percent != last_percent_) || !shown_;
    if (!changed) return;
    shown_ = true;
    last_state_ = s.state;
    last_percent_ = percent;
    const char* state = localapi::ToString(s.state);
    if (json_) {
      Json j = {{"type", "progress"}, {"state", state}, {"done", nullptr}, {"total", nullptr}};
      if (s.progress) {
        j["done"] = s.progress->done;
        j["total"] = s.progress->total;
      }
      out_ << DumpJson(j) << "\n" << std::flush;
    } else if (bar_) {
      constexpr unsigned kWidth = 30;
      const unsigned filled = percent * kWidth / 100;
      err_ << "\r" << std::string(filled, '#') << std::string(kWidth - filled, '.') << " "
           << percent << "% " << state << "   " << std::flush;
      bar_open_ = true;
    } else {
      err_ << state;
      if (s.progress) err_ << " " << percent << "%";
      err_ << "\n" << std::flush;
    }
  }

  void Note(const std::string& text) {
    if (json_) return;
    EndBar();
    err_ << text << "\n" << std::flush;
  }

 private:
  void EndBar() {
    if (bar_open_) err_ << "\n";
    bar_open_ = false;
  }

  std::ostream& out_;
  std::ostream& err_;
  bool json_;
  bool bar_;
  bool silent_if_not_running_;
  bool bar_open_ = false;
  bool shown_ = false;
  localapi::UpdateState last_state_ = localapi::UpdateState::kIdle;
  unsigned last_percent_ = 0;
};

LocalApiClient MakeClient(const ClientOptions& o) {
  localapi::LocalApiClientOptions c;
  if (!o.socket.empty()) c.socket_path = o.socket;
  c.request_timeout = o.request_timeout;
  return LocalApiClient(c);
}

SteadyClock::time_point Deadline(std::chrono::seconds bound, unsigned override_seconds) {
  return SteadyClock::now() +
         (override_seconds != 0 ? std::chrono::seconds(override_seconds) : bound);
}

// The sequence of the newest event, so that following starts after it.
Result<std::uint64_t> LastSequence(const LocalApiClient& client) {
  std::uint64_t after = 0;
  for (int page = 0; page < kMaxEventPages; ++page) {
    UPKEEP_ASSIGN_OR_RETURN(std::vector<localapi::Event> events, client.Events(after));
    if (events.empty()) break;
    after = events.back().sequence;
  }
  return after;
}

// Prints the events after `cursor` (advancing it), as the command's result (`events`) or as
// events seen while following something; with `stop_at_install_result`, stops at an install's
// last event, returned as its type.
Result<std::optional<std::string>> DrainEvents(const LocalApiClient& client, std::uint64_t& cursor,
                                               Printer& p, bool as_result,
                                               bool stop_at_install_result) {
  for (int page = 0; page < kMaxEventPages; ++page) {
    UPKEEP_ASSIGN_OR_RETURN(std::vector<localapi::Event> events, client.Events(cursor));
    if (events.empty()) break;
    for (const auto& e : events) {
      cursor = e.sequence;
      if (stop_at_install_result && (e.type == "installed" || e.type == "rejected")) {
        return std::optional<std::string>(e.type);
      }
      p.Event(e, as_result);
    }
  }
  return std::optional<std::string>();
}

void Sleep(const ClientOptions& o, SteadyClock::time_point deadline) {
  const auto left = deadline - SteadyClock::now();
  if (left <= SteadyClock::duration::zero()) return;
  std::this_thread::sleep_for(std::min<SteadyClock::duration>(o.poll_interval, left));
}

int RunCheck(const ClientCommands& c, Printer& p) {
  const ClientOptions& o = *c.options;
  const LocalApiClient client = MakeClient(o);
  if (!c.wait) {
    if (auto r = client.CheckNow(); !r) return p.Fail(r.error(), true);
    p.Result(Json{{"accepted", true}}, "check started\n");
    return kExitOk;
  }
  auto before = client.GetStatus();
  if (!before) return p.Fail(before.error(), true);
  auto cursor = LastSequence(client);
  if (!cursor) return p.Fail(cursor.error());
  if (auto r = client.CheckNow(); !r) return p.Fail(r.error());
  const auto deadline = Deadline(o.check_timeout, c.timeout_seconds);
  bool seen_checking = false;
  for (int i = 0; i < 1'000'000; ++i) {
    auto drained = DrainEvents(client, *cursor, p, false, false);
    if (!drained) return p.Fail(drained.error());
    auto st = client.GetStatus();
    if (!st) return p.Fail(st.error());
    if (st->state == localapi::UpdateState::kChecking) {
      seen_checking = true;
    } else if (seen_checking || st->last_check != before->last_check) {
      std::string text = std::string("check finished: ") + localapi::ToString(st->state);
      if (st->update_id) text += " (update " + OneLine(*st->update_id) + ")";
      p.Result(StatusJson(*st), text + "\n");
      return kExitOk;
    }
    if (SteadyClock::now() >= deadline) break;
    Sleep(o, deadline);
  }
  return p.Fail(Error(Errc::Conflict, "the check is still running; see upkeep-agent status"));
}

int RunPolicy(const ClientCommands& c, Printer& p) {
  const LocalApiClient client = MakeClient(*c.options);
  auto current = client.GetPolicy();
  if (!current) return p.Fail(current.error(), true);
  if (c.policy_set == nullptr || !c.policy_set->parsed()) {
    p.Result(PolicyJson(*current), PolicyText(*current));
    return kExitOk;
  }
  const bool on = c.policy_value == "on";
  localapi::PolicySettings wanted = *current;
  if (c.policy_key == "auto-install") {
    wanted.auto_install = on;
  } else if (c.policy_key == "notifications") {
    wanted.notifications = on;
  } else if (c.policy_key == "security-auto-install") {
    // Turning automatic security updates off is an explicit choice (docs/policy.md).
    if (!on && !c.confirm) {
      return p.Usage(
          "turning off automatic security updates leaves the device exposed until you install "
          "them yourself; repeat with --confirm");
    }
    wanted.security_auto_install = on;
    wanted.confirm_security_off = !on;
  } else {
    wanted.reboot_later = on;
  }
  auto now = client.SetPolicy(wanted);
  if (!now) return p.Fail(now.error());
  p.Result(PolicyJson(*now), PolicyText(*now));
  return kExitOk;
}

// "30m", "12h", "3d", "1w", "90s".
std::optional<std::chrono::seconds> ParseDuration(std::string_view text) {
  if (text.size() < 2) return std::nullopt;
  std::uint64_t n = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size() - 1, n);
  if (r.ec != std::errc() || r.ptr != text.data() + text.size() - 1 || n == 0) return std::nullopt;
  std::uint64_t unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    case 'w':
      unit = 7 * 86400;
      break;
    default:
      return std::nullopt;
  }
  constexpr std::uint64_t kMaxSeconds = 3660ULL * 86400;  // about ten years
  if (n > kMaxSeconds / unit) return std::nullopt;
  return std::chrono::seconds(static_cast<std::int64_t>(n * unit));
}

// The API's time form, or a date alone (midnight UTC).
std::optional<Clock::TimePoint> ParseUntil(const std::string& text) {
  if (text.size() == 10) return localapi::ParseTime(text + "T00:00:00Z");
  return localapi::ParseTime(text);
}

int RunPostpone(const ClientCommands& c, Printer& p) {
  if (c.until.empty() == c.duration.empty()) {
    return p.Usage("postpone: give exactly one of --until and --for");
  }
  localapi::PostponeRequest req;
  req.update_id = c.update_id;
  if (!c.until.empty()) {
    const auto t = ParseUntil(c.until);
    if (!t) return p.Usage("--until: expected YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD (UTC)");
    req.until = *t;
  } else {
    const auto d = ParseDuration(c.duration);
    if (!d) return p.Usage("--for: expected a number and a unit s, m, h, d or w (e.g. 3d)");
    req.until = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()) + *d;
  }
  const LocalApiClient client = MakeClient(*c.options);
  auto r = client.Postpone(req);
  if (!r) return p.Fail(r.error(), true);
  std::string text = "postponed " + OneLine(r->update_id) + " until " +
                     localapi::FormatTime(r->until);
  if (r->until < req.until) text += " (the latest a security update may wait)";
  p.Result(Json{{"update_id", r->update_id},
                {"until", localapi::FormatTime(r->until)},
                {"capped", r->until < req.until}},
           text + "\n");
  return kExitOk;
}

int RunNotices(const ClientCommands& c, Printer& p) {
  const LocalApiClient client = MakeClient(*c.options);
  auto r = client.Notices();
  if (!r) return p.Fail(r.error(), true);
  Json list = Json::array();
  std::string text;
  for (const auto& n : *r) {
    list.push_back(Json{{"id", n.id},
                        {"update_id", n.update_id},
                        {"kind", n.security ? "security" : "feature"},
                        {"title", n.title},
                        {"text", n.text},
                        {"install_by", OptionalTime(n.install_by)}});
    text += std::string(n.security ? "[security] " : "[feature] ") + OneLine(n.title) +
            " (update " + OneLine(n.update_id) + ", notice " + OneLine(n.id) + ")\n";
    if (n.install_by) text += "  installs by " + localapi::FormatTime(*n.install_by) + "\n";
    // The text keeps its line breaks, each line indented.
    std::string body = PrintableText(n.text);
    std::string indented = "  ";
    for (char ch : body) {
      indented += ch;
      if (ch == '\n') indented += "  ";
    }
    if (!body.empty()) text += indented + (body.back() == '\n' ? "" : "\n");
  }
  if (r->empty()) text = "no notices\n";
  p.Result(Json{{"notices", list}}, text);
  return kExitOk;
}

int RunEvents(const ClientCommands& c, Printer& p) {
  const ClientOptions& o = *c.options;
  const LocalApiClient client = MakeClient(o);
  std::uint64_t cursor = c.after;
  // The first request decides whether a daemon is there.
  auto first = client.Events(cursor);
  if (!first) return p.Fail(first.error(), true);
  for (const auto& e : *first) {
    cursor = e.sequence;
    p.Event(e, true);
  }
  if (!first->empty()) {
    if (auto r = DrainEvents(client, cursor, p, true, false); !r) return p.Fail(r.error());
  }
  if (!c.follow) return kExitOk;
  const auto deadline = Deadline(o.follow_timeout, c.timeout_seconds);
  for (int i = 0; i < 1'000'000 && SteadyClock::now() < deadline; ++i) {
    Sleep(o, deadline);
    if (auto r = DrainEvents(client, cursor, p, true, false); !r) return p.Fail(r.error());
  }
  return kExitOk;
}

}  // namespace

int ClientExitCode(const Error& e) {
  if (e.code().category() != localapi::ErrcCategory()) return kExitDevice;
  switch (static_cast<Errc>(e.code().value())) {
    case Errc::DaemonNotRunning:
      return kExitDaemonNotRunning;
    case Errc::InvalidArgument:
    case Errc::NotFound:
      return kExitUsage;
    case Errc::Rejected:
      return kExitRejected;
    case Errc::Forbidden:
    case Errc::Unauthenticated:
    case Errc::LockedOut:
      return kExitRefused;
    case Errc::Conflict:
    case Errc::Unavailable:
      return kExitState;
    default:
      return kExitDevice;
  }
}

bool ClientCommands::parsed() const {
  for (const CLI::App* sub : {status, check, policy, postpone, install, notices, events}) {
    if (sub != nullptr && sub->parsed()) return true;
  }
  return false;
}

void AddClientOptions(CLI::App& command, ClientOptions& o) {
  if (command.get_option_no_throw("--json") == nullptr) {
    command.add_flag("--json", o.json, "Machine-readable output: one JSON object per line");
  }
  if (command.get_option_no_throw("--socket") == nullptr) {
    command.add_option("--socket", o.socket,
                       "The daemon's socket (default /run/upkeep/agent.sock)");
  }
}

std::unique_ptr<ClientCommands> AddClientCommands(CLI::App& app, ClientOptions& o) {
  auto c = std::make_unique<ClientCommands>();
  c->options = &o;
  const auto has_sub = [&app](const std::string& name) {
    return !app.get_subcommands([&name](const CLI::App* s) { return s->check_name(name); })
                .empty();
  };
  AddClientOptions(app, o);
  const auto add = [&](const char* name, const char* help) -> CLI::App* {
    if (has_sub(name)) return nullptr;
    CLI::App* sub = app.add_subcommand(name, help);
    AddClientOptions(*sub, o);
    return sub;
  };
  const auto timeout = [&c](CLI::App* sub) {
    sub->add_option("--timeout", c->timeout_seconds, "Stop following after SECONDS")
        ->check(CLI::Range(1u, 7u * 86400u));
  };
  c->status = add("status", "The daemon's view: device, support period, update in progress");
  if ((c->check = add("check", "Ask the daemon to check for updates now")) != nullptr) {
    c->check->add_flag("--wait", c->wait, "Wait until the check has finished");
    timeout(c->check);
  }
  if ((c->policy = add("policy", "Show the update settings, or change one with `set`")) !=
      nullptr) {
    c->policy_set = c->policy->add_subcommand("set", "Change one setting");
    c->policy_set
        ->add_option("SETTING", c->policy_key,
                     "auto-install, notifications, security-auto-install or reboot-later")
        ->required()
        ->check(CLI::IsMember(
            {"auto-install", "notifications", "security-auto-install", "reboot-later"}));
    c->policy_set->add_option("VALUE", c->policy_value, "on or off")
        ->required()
        ->check(CLI::IsMember({"on", "off"}));
    c->policy_set->add_flag("--confirm", c->confirm,
                            "Confirm turning off automatic security updates");
    AddClientOptions(*c->policy_set, o);
    c->policy->require_subcommand(0, 1);
  }
  if ((c->postpone = add("postpone", "Postpone an update")) != nullptr) {
    c->postpone->add_option("UPDATE_ID", c->update_id, "The update (see notices)")->required();
    auto* until = c->postpone->add_option("--until", c->until,
                                          "Until YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD (UTC)");
    auto* dur = c->postpone->add_option("--for", c->duration, "For a duration: 3d, 12h, 1w");
    until->excludes(dur);
  }
  if ((c->install = add("install", "Hand an offline bundle to the daemon and follow it")) !=
      nullptr) {
    c->install->add_option("BUNDLE", c->bundle, "The bundle file")->required();
    timeout(c->install);
  }
  c->notices = add("notices", "Notices about pending updates");
  if ((c->events = add("events", "The daemon's event log")) != nullptr) {
    c->events->add_option("--after", c->after, "Only events with a sequence above N");
    c->events->add_flag("--follow", c->follow, "Keep printing new events");
    timeout(c->events);
  }
  return c;
}

int RunClientStatus(const ClientOptions& o, std::ostream& out, std::ostream& err) {
  Printer p(o, out, err);
  const LocalApiClient client = MakeClient(o);
  auto device = client.Device();
  if (!device) return p.Fail(device.error(), true);
  auto support = client.Support();
  if (!support) return p.Fail(support.error());
  auto status = client.GetStatus();
  if (!status) return p.Fail(status.error());
  Json comps = Json::array();
  std::string text =
      "model: " + OneLine(device->model) + "\nhardware: " + OneLine(device->hardware) + "\n";
  for (const auto& comp : device->components) {
    comps.push_back(Json{{"name", comp.name}, {"version", comp.version}});
    text += "component " + OneLine(comp.name) + ": " + OneLine(comp.version) + "\n";
  }
  text += "security updates until: " + TimeText(support->support_until, "not announced") +
          (support->ended ? " (ended)" : "") + "\n";
  text += StatusText(*status);
  const Json j = {
      {"device",
       {{"model", device->model}, {"hardware", device->hardware}, {"components", comps}}},
      {"support",
       {{"support_until", OptionalTime(support->support_until)}, {"ended", support->ended}}},
      {"status", StatusJson(*status)}};
  p.Result(j, text);
  return kExitOk;
}

int RunClientInstall(const ClientOptions& o, const std::string& bundle, std::ostream& out,
                     std::ostream& err, unsigned timeout_seconds) {
  Printer p(o, out, err);
  std::error_code ec;
  const std::filesystem::path path = std::filesystem::absolute(bundle, ec);
  if (ec || bundle.empty()) return p.Usage("install: cannot make the bundle path absolute");
  const LocalApiClient client = MakeClient(o);
  // The state and the events so far, so that following starts after them; the first request
  // also tells whether a daemon is there.
  auto before = client.GetStatus();
  if (!before) return p.Fail(before.error(), true);
  auto cursor = LastSequence(client);
  if (!cursor) return p.Fail(cursor.error());
  auto accepted = client.Install(path.lexically_normal().string());
  if (!accepted) return p.Fail(accepted.error());
  const auto deadline = Deadline(o.follow_timeout, timeout_seconds);
  bool seen_busy = false;
  int idle_polls = 0;
  for (int i = 0; i < 1'000'000; ++i) {
    auto ended = DrainEvents(client, *cursor, p, false, true);
    if (!ended) return p.Fail(ended.error());
    auto st = client.GetStatus();
    if (!st) return p.Fail(st.error());
    // Awaiting a reboot ends the install, unless the device was already waiting for one before
    // it (then only the install's own events or a change of state tell).
    const bool awaiting = st->state == localapi::UpdateState::kAwaitingReboot &&
                          (seen_busy || before->state != localapi::UpdateState::kAwaitingReboot);
    if (*ended && **ended == "rejected") {
      return p.Fail(Error(Errc::Rejected, "update rejected"));
    }
    if (*ended || awaiting) {
      const bool reboot = st->state == localapi::UpdateState::kAwaitingReboot;
      std::string text = "installed";
      text += reboot ? "; reboot to start the new system\n" : "\n";
      p.Result(Json{{"install_id", accepted->install_id},
                    {"state", localapi::ToString(st->state)},
                    {"reboot_required", reboot}},
               text);
      return kExitOk;
    }
    if (st->state != localapi::UpdateState::kIdle &&
        st->state != localapi::UpdateState::kAwaitingReboot) {
      seen_busy = true;
      idle_polls = 0;
      p.Progress(*st);
    } else if (st->state == localapi::UpdateState::kIdle && seen_busy &&
               ++idle_polls >= kIdlePollsBeforeGivingUp) {
      return p.Fail(Error(Errc::Internal,
                          "the install ended without a result; see upkeep-agent events"));
    }
    if (SteadyClock::now() >= deadline) break;
    Sleep(o, deadline);
  }
  return p.Fail(Error(Errc::Conflict,
                      "the install is still running; follow it with upkeep-agent events --follow"));
}

int RunClientCommand(ClientCommands& c, std::ostream& out, std::ostream& err) {
  const ClientOptions& o = *c.options;
  Printer p(o, out, err);
  try {
    const auto parsed = [](const CLI::App* sub) { return sub != nullptr && sub->parsed(); };
    if (parsed(c.status)) return RunClientStatus(o, out, err);
    if (parsed(c.check)) return RunCheck(c, p);
    if (parsed(c.policy)) return RunPolicy(c, p);
    if (parsed(c.postpone)) return RunPostpone(c, p);
    if (parsed(c.install)) return RunClientInstall(o, c.bundle, out, err, c.timeout_seconds);
    if (parsed(c.notices)) return RunNotices(c, p);
    if (parsed(c.events)) return RunEvents(c, p);
    return p.Usage("no command");
  } catch (const std::exception& e) {
    return p.Fail(Error(Errc::Internal, e.what()));
  }
}

}  // namespace upkeep::agent
