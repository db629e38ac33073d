#include <iostream>

#include "cli.hpp"
#include "upkeep/common/main_guard.hpp"

int main(int argc, char** argv) {
  return upkeep::GuardMain("upkeep-agent", std::cerr, upkeep::agent::kExitDevice,
                           [&] { return upkeep::agent::Main(argc, argv, std::cout, std::cerr); });
}
