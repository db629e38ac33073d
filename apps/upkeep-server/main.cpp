#include <iostream>

#include "cli.hpp"
#include "upkeep/common/main_guard.hpp"

int main(int argc, char** argv) {
  return upkeep::GuardMain("upkeep-server", std::cerr, upkeep::server::kExitFailure,
                           [&] { return upkeep::server::Main(argc, argv, std::cout, std::cerr); });
}
