// upkeep-test-server: serves a directory over HTTP on 127.0.0.1 (port chosen by the kernel) for
// the demo and the benchmarks.
//   upkeep-test-server --root DIR [--port-file FILE]
// Prints "listening on http://127.0.0.1:PORT" and runs until SIGINT or SIGTERM.

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "http_test_server.hpp"

int main(int argc, char** argv) {
  std::string root, port_file;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--root") == 0) root = argv[i + 1];
    else if (std::strcmp(argv[i], "--port-file") == 0) port_file = argv[i + 1];
  }
  if (root.empty()) {
    std::fprintf(stderr, "usage: upkeep-test-server --root DIR [--port-file FILE]\n");
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // the server thread inherits the mask

  upkeep::testing::HttpTestServer server(root);
  std::printf("listening on %s\n", server.base_url().c_str());
  std::fflush(stdout);
  if (!port_file.empty()) {
    const std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << server.port() << "\n";
    std::rename(tmp.c_str(), port_file.c_str());
  }
  int sig = 0;
  sigwait(&signals, &sig);
  return 0;
}
