// upkeep-test-server: serves a directory over HTTP on 127.0.0.1 (port chosen by the kernel) for
// the demo and the benchmarks.
//   upkeep-test-server --root DIR [--port-file FILE]
// Prints "listening on http://127.0.0.1:PORT" on stdout, writes PORT (and a newline) to FILE if
// given (atomically: written to FILE.tmp, then renamed), and runs until SIGINT or SIGTERM.
// Exit status: 0 after a signal, 1 when it cannot serve, 2 for a usage error.

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "http_test_server.hpp"

namespace {

constexpr const char* kUsage = "usage: upkeep-test-server --root DIR [--port-file FILE]\n";

int Usage(const char* problem) {
  std::fprintf(stderr, "upkeep-test-server: %s\n%s", problem, kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string root;
  std::string port_file;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg != "--root" && arg != "--port-file") return Usage(("unknown argument " + arg).c_str());
    if (i + 1 >= argc) return Usage((arg + " needs a value").c_str());
    (arg == "--root" ? root : port_file) = argv[++i];
  }
  if (root.empty()) return Usage("--root is required");
  std::error_code ec;
  if (!std::filesystem::is_directory(root, ec)) return Usage(("not a directory: " + root).c_str());

  // Blocked before the server starts its threads, which inherit the mask; sigwait takes them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::optional<upkeep::testing::HttpTestServer> server;
  try {
    server.emplace(root);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "upkeep-test-server: %s\n", e.what());
    return 1;
  }
  std::printf("listening on %s\n", server->base_url().c_str());
  std::fflush(stdout);
  if (!port_file.empty()) {
    const std::string tmp = port_file + ".tmp";
    {
      std::ofstream out(tmp);
      out << server->port() << "\n";
      if (!out.flush()) {
        std::fprintf(stderr, "upkeep-test-server: cannot write %s\n", tmp.c_str());
        return 1;
      }
    }
    if (std::rename(tmp.c_str(), port_file.c_str()) != 0) {
      std::fprintf(stderr, "upkeep-test-server: cannot write %s\n", port_file.c_str());
      return 1;
    }
  }
  int sig = 0;
  sigwait(&signals, &sig);
  return 0;
}
