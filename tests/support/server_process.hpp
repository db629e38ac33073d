#pragma once

// `upkeep-server serve` as a child process for integration tests: started with a configuration
// whose port is 0, it is ready once its log names the port it bound. Stopped with SIGTERM (then
// SIGKILL after a bounded wait) when the object goes away.

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <charconv>
#include <string>
#include <vector>

namespace upkeep::testing {

class ServerProcess {
 public:
  // Runs `binary -c config --log-level info serve` and waits (at most `timeout`) until it logs
  // "serving the device API on ADDRESS:PORT". ok() tells whether it did.
  ServerProcess(const std::string& binary, const std::string& config,
                std::chrono::seconds timeout = std::chrono::seconds(30)) {
    int fds[2];
    if (::pipe(fds) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], STDERR_FILENO);
      ::close(fds[0]);
      ::execl(binary.c_str(), "upkeep-server", "-c", config.c_str(), "--log-level", "info",
              "serve", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    fd_ = fds[0];
    if (pid_ < 0) return;
    const std::string marker = "serving the device API on ";
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      Drain(100);
      const auto at = log_.find(marker);
      if (at == std::string::npos) continue;
      const auto colon = log_.find(':', at + marker.size());
      const auto end = log_.find(' ', colon);
      if (colon == std::string::npos || end == std::string::npos) continue;
      unsigned value = 0;
      std::from_chars(log_.data() + colon + 1, log_.data() + end, value);
      port_ = static_cast<std::uint16_t>(value);
      break;
    }
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() { Stop(); }

  [[nodiscard]] bool ok() const { return port_ != 0; }
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  // What it logged so far.
  [[nodiscard]] const std::string& log() {
    Drain(0);
    return log_;
  }

  // Waits (at most `timeout`) until the log holds `text`.
  bool WaitFor(const std::string& text, std::chrono::seconds timeout = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (log_.find(text) == std::string::npos && fd_ >= 0 &&
           std::chrono::steady_clock::now() < deadline) {
      Drain(100);
    }
    return log_.find(text) != std::string::npos;
  }

  // SIGTERM, then its exit status (-1 when it had to be killed).
  int Stop() {
    if (pid_ <= 0) return exit_status_;
    ::kill(pid_, SIGTERM);
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    pid_t done = 0;
    while ((done = ::waitpid(pid_, &status, WNOHANG)) == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      Drain(50);
    }
    if (done == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      exit_status_ = -1;
    } else {
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    Drain(0);
    pid_ = -1;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return exit_status_;
  }

 private:
  void Drain(int wait_ms) {
    if (fd_ < 0) return;
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, wait_ms) <= 0) return;
      char buf[4096];
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return;
      log_.append(buf, static_cast<std::size_t>(n));
      wait_ms = 0;
    }
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  int exit_status_ = -1;
  std::string log_;
};

}  // namespace upkeep::testing
