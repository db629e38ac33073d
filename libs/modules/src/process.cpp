// RunProcess: posix_spawn without a shell, its own process group, bounded output capture,
// timeout with SIGTERM then SIGKILL to the whole group, and reaping.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "upkeep/common/unique_fd.hpp"
#include "upkeep/modules/module.hpp"

namespace upkeep::modules {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How often a running child is checked for exit while its output pipe is quiet.
constexpr milliseconds kPollInterval{20};
// How long output is still read after the child exited and its group was killed.
constexpr milliseconds kDrainLimit{1000};

// Keeps the last `limit` bytes of a stream.
class OutputTail {
 public:
  explicit OutputTail(std::size_t limit) : limit_(limit) {}
  void Append(const char* data, std::size_t n) {
    buffer_.append(data, n);
    if (buffer_.size() > 2 * limit_ + 4096) Trim();
  }
  std::string Take(bool* truncated) {
    Trim();
    *truncated = truncated_;
    return std::move(buffer_);
  }

 private:
  // Keeps the last limit_ bytes, then drops up to 3 more leading bytes that continue a UTF-8
  // sequence whose lead byte was cut off: the tail starts at a character boundary.
  void Trim() {
    if (buffer_.size() <= limit_) return;
    std::size_t cut = buffer_.size() - limit_;
    for (int i = 0;
         i < 3 && cut < buffer_.size() && (static_cast<unsigned char>(buffer_[cut]) & 0xC0) == 0x80;
         ++i) {
      ++cut;
    }
    buffer_.erase(0, cut);
    truncated_ = true;
  }
  std::size_t limit_;
  std::string buffer_;
  bool truncated_ = false;
};

class SpawnFileActions {
 public:
  SpawnFileActions() { ok_ = ::posix_spawn_file_actions_init(&actions_) == 0; }
  ~SpawnFileActions() {
    if (ok_) ::posix_spawn_file_actions_destroy(&actions_);
  }
  SpawnFileActions(const SpawnFileActions&) = delete;
  SpawnFileActions& operator=(const SpawnFileActions&) = delete;
  [[nodiscard]] bool ok() const { return ok_; }
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_{};
  bool ok_ = false;
};

class SpawnAttr {
 public:
  SpawnAttr() { ok_ = ::posix_spawnattr_init(&attr_) == 0; }
  ~SpawnAttr() {
    if (ok_) ::posix_spawnattr_destroy(&attr_);
  }
  SpawnAttr(const SpawnAttr&) = delete;
  SpawnAttr& operator=(const SpawnAttr&) = delete;
  [[nodiscard]] bool ok() const { return ok_; }
  posix_spawnattr_t* get() { return &attr_; }

 private:
  posix_spawnattr_t attr_{};
  bool ok_ = false;
};

Error SpawnError(const std::string& what, int err) {
  return Error(Errc::SpawnFailed, what + ": " + std::strerror(err));
}

milliseconds Since(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
}

// Reads what is available on `fd` into `tail`; false at end of file or on a read error.
bool ReadAvailable(int fd, OutputTail& tail) {
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      tail.Append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

// Waits up to `wait` for output on `fd` (or just sleeps when fd < 0). Returns false when the
// pipe reached end of file.
bool PumpOutput(int fd, milliseconds wait, OutputTail& tail) {
  struct pollfd pfd {};
  pfd.fd = fd;
  pfd.events = POLLIN;
  int rc = ::poll(fd >= 0 ? &pfd : nullptr, fd >= 0 ? 1 : 0, static_cast<int>(wait.count()));
  if (rc > 0 && fd >= 0) return ReadAvailable(fd, tail);
  return true;
}

// True once the child has exited; the child stays a zombie (WNOWAIT), so its pid and
// process group id cannot be reused while the group is being killed.
bool HasExited(pid_t pid) {
  siginfo_t info{};
  for (;;) {
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0) {
      return info.si_pid == pid;
    }
    if (errno != EINTR) return true;  // ECHILD: nothing left to wait for
  }
}

}  // namespace

Result<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                 const ProcessOptions& options) {
  if (argv.empty() || argv[0].empty()) {
    return Error(Errc::InvalidSpec, "empty command");
  }
  if (options.max_output_bytes == 0) {
    return Error(Errc::InvalidSpec, "max_output_bytes must be positive");
  }
  // Resolved against the caller's directory, not options.cwd (the child changes directory
  // before exec).
  std::error_code ec;
  const std::string exec_path = std::filesystem::absolute(argv[0], ec).string();
  if (ec) return Error(Errc::ModuleNotFound, argv[0] + ": " + ec.message());
  if (::access(exec_path.c_str(), X_OK) != 0) {
    return Error(Errc::ModuleNotFound, argv[0] + ": " + std::strerror(errno));
  }

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return SpawnError("pipe", errno);
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  if (::fcntl(read_end.get(), F_SETFL, O_NONBLOCK) != 0) return SpawnError("fcntl", errno);

  SpawnFileActions actions;
  SpawnAttr attr;
  if (!actions.ok() || !attr.ok()) return SpawnError("posix_spawn setup", ENOMEM);
  int rc = ::posix_spawn_file_actions_addopen(actions.get(), 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0) rc = ::posix_spawn_file_actions_adddup2(actions.get(), write_end.get(), 1);
  if (rc == 0) {
    rc = options.capture_stderr
             ? ::posix_spawn_file_actions_adddup2(actions.get(), write_end.get(), 2)
             : ::posix_spawn_file_actions_addopen(actions.get(), 2, "/dev/null", O_WRONLY, 0);
  }
  if (rc == 0 && !options.cwd.empty()) {
    rc = ::posix_spawn_file_actions_addchdir_np(actions.get(), options.cwd.c_str());
  }
  if (rc == 0) rc = ::posix_spawn_file_actions_addclosefrom_np(actions.get(), 3);
  if (rc != 0) return SpawnError("posix_spawn file actions", rc);

  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (options.new_process_group) flags = static_cast<short>(flags | POSIX_SPAWN_SETPGROUP);
  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM}) {
    sigaddset(&defaults, sig);
  }
  rc = ::posix_spawnattr_setflags(attr.get(), flags);
  if (rc == 0) rc = ::posix_spawnattr_setsigmask(attr.get(), &empty_mask);
  if (rc == 0) rc = ::posix_spawnattr_setsigdefault(attr.get(), &defaults);
  if (rc == 0 && options.new_process_group) rc = ::posix_spawnattr_setpgroup(attr.get(), 0);
  if (rc != 0) return SpawnError("posix_spawn attributes", rc);

  std::vector<char*> c_argv;
  c_argv.reserve(argv.size() + 1);
  for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  std::vector<char*> c_env;
  c_env.reserve(options.env.size() + 1);
  for (const auto& e : options.env) c_env.push_back(const_cast<char*>(e.c_str()));
  c_env.push_back(nullptr);

  const auto start = Clock::now();
  pid_t pid = -1;
  rc = ::posix_spawn(&pid, exec_path.c_str(), actions.get(), attr.get(), c_argv.data(),
                     c_env.data());
  write_end.reset();
  if (rc != 0) {
    if (rc == ENOENT || rc == EACCES || rc == ENOEXEC) {
      return Error(Errc::ModuleNotFound, argv[0] + ": " + std::strerror(rc));
    }
    return SpawnError("posix_spawn " + argv[0], rc);
  }

  // Signals go to the whole group when the child leads one.
  const pid_t target = options.new_process_group ? -pid : pid;
  const bool has_timeout = options.timeout.count() > 0;
  const auto deadline = start + options.timeout;
  OutputTail tail(options.max_output_bytes);
  bool pipe_open = true;
  bool timed_out = false;
  bool killed = false;
  Clock::time_point kill_at{};

  while (!HasExited(pid)) {
    auto now = Clock::now();
    if (has_timeout && !timed_out && now >= deadline) {
      timed_out = true;
      ::kill(target, SIGTERM);
      kill_at = now + options.kill_grace;
    }
    if (timed_out && !killed && now >= kill_at) {
      killed = true;
      ::kill(target, SIGKILL);
    }
    milliseconds wait = kPollInterval;
    if (has_timeout && !timed_out) {
      wait = std::clamp(std::chrono::duration_cast<milliseconds>(deadline - now), milliseconds(1),
                        kPollInterval);
    } else if (timed_out && !killed) {
      wait = std::clamp(std::chrono::duration_cast<milliseconds>(kill_at - now), milliseconds(1),
                        kPollInterval);
    }
    if (pipe_open) {
      pipe_open = PumpOutput(read_end.get(), wait, tail);
    } else {
      PumpOutput(-1, wait, tail);
    }
  }

  // The child is a zombie now: end whatever it left in its group, then collect the output.
  if (options.new_process_group) ::kill(-pid, SIGKILL);
  const auto drain_until = Clock::now() + kDrainLimit;
  while (pipe_open && Clock::now() < drain_until) {
    pipe_open = PumpOutput(read_end.get(), kPollInterval, tail);
  }

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return SpawnError("waitpid", errno);
  }

  ProcessResult result;
  result.duration = Since(start);
  result.timed_out = timed_out;
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.term_signal = WTERMSIG(status);
  result.output = tail.Take(&result.output_truncated);
  return result;
}

}  // namespace upkeep::modules
