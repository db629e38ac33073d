#include "upkeep/agent/notice.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "upkeep/agent/config.hpp"
#include "upkeep/metadata/json_text.hpp"

extern char** environ;

namespace upkeep::agent {

namespace {

using metadata::Json;

std::string Downtime(std::uint64_t seconds) {
  if (seconds < 120) return std::to_string(seconds) + " seconds";
  if (seconds < 2 * 3600) return std::to_string((seconds + 59) / 60) + " minutes";
  return std::to_string((seconds + 3599) / 3600) + " hours";
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += i + 1 == items.size() ? " and " : ", ";
    out += items[i];
  }
  return out;
}

}  // namespace

std::string NoticeText(const Notice& n) {
  const metadata::UpdateMetadata& u = n.update;
  std::string text;
  if (u.is_security && u.security) {
    text = "A security update (version " + u.version + ") is required. " +
           u.security->risks_mitigated;
    if (!text.ends_with('.')) text += '.';
    text += " Severity: " + std::string(metadata::ToString(u.security->severity));
    if (!u.security->cves.empty()) text += " (" + Join(u.security->cves) + ")";
    text += ".";
  } else {
    text = "An update to version " + u.version + " is available.";
  }
  if (u.disruption.reboot) {
    text += " The device restarts and is unavailable for about " +
            Downtime(u.disruption.downtime_seconds) + ".";
  } else if (u.disruption.downtime_seconds > 0) {
    text += " The device is unavailable for about " + Downtime(u.disruption.downtime_seconds) +
            "; it does not restart.";
  } else {
    text += " The device keeps working during the update.";
  }
  if (!u.disruption.available_during_update.empty() &&
      (u.disruption.reboot || u.disruption.downtime_seconds > 0)) {
    std::string working = Join(u.disruption.available_during_update);
    if (working[0] >= 'a' && working[0] <= 'z') working[0] = static_cast<char>(working[0] - 32);
    text += " " + working + " keep working during the update.";
  }
  switch (u.settings_impact.effect) {
    case metadata::SettingsEffect::None:
      text += " Your settings do not change.";
      break;
    case metadata::SettingsEffect::Migrated:
      text += " Your settings are carried over: " + u.settings_impact.note;
      break;
    case metadata::SettingsEffect::Reset:
      text += " Your settings are reset: " + u.settings_impact.note;
      break;
  }
  return text;
}

Json NoticeJson(const Notice& n) {
  const metadata::UpdateMetadata& u = n.update;
  Json kind = Json::array();
  if (u.is_security) kind.push_back("security");
  if (u.is_feature) kind.push_back("feature");
  Json out{{"notice", 1},
           {"update_id", n.update_id},
           {"target", n.target},
           {"component", metadata::ToString(u.component)},
           {"version", u.version},
           {"kind", std::move(kind)},
           {"security_update_required", u.is_security},
           {"disruption",
            {{"reboot", u.disruption.reboot},
             {"downtime_seconds", u.disruption.downtime_seconds},
             {"available_during_update", u.disruption.available_during_update}}},
           {"settings",
            {{"effect", metadata::ToString(u.settings_impact.effect)},
             {"note", u.settings_impact.note}}},
           {"text", NoticeText(n)}};
  if (u.security) {
    out["security"] = Json{{"severity", metadata::ToString(u.security->severity)},
                           {"cves", u.security->cves},
                           {"risks_mitigated", u.security->risks_mitigated}};
  }
  return out;
}

Result<void> RunNotifier(const NotifierOptions& options, const Notice& notice) {
  if (options.command.empty()) return Ok();
  const std::string input = metadata::DumpJson(NoticeJson(notice)) + "\n";
  // A socket pair rather than a pipe: sending with MSG_NOSIGNAL cannot raise SIGPIPE in the agent
  // when a notifier exits without reading.
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return Error(Errc::NotifierFailed, std::string("notifier: socketpair: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[0], STDIN_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  std::vector<char*> argv;
  for (const std::string& a : options.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int spawned = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[0]);
  if (spawned != 0) {
    ::close(fds[1]);
    return Error(Errc::NotifierFailed,
                 "notifier " + options.command[0] + ": cannot start: " + std::strerror(spawned));
  }
  // The notice is far smaller than the socket's buffer: sending does not wait for the reader.
  std::size_t written = 0;
  while (written < input.size()) {
    const ssize_t n =
        ::send(fds[1], input.data() + written, input.size() - written, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the notifier is gone or not reading: its exit status tells
    written += static_cast<std::size_t>(n);
  }
  ::close(fds[1]);
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) {
      return Error(Errc::NotifierFailed, std::string("notifier: wait: ") + std::strerror(errno));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return Error(Errc::NotifierFailed,
                   "notifier " + options.command[0] + ": killed after " +
                       std::to_string(options.timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Error(Errc::NotifierFailed,
                 "notifier " + options.command[0] + ": " +
                     (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                        : std::string("killed by a signal")));
  }
  return Ok();
}

}  // namespace upkeep::agent
