#include <iostream>

#include "sim.hpp"
#include "upkeep/common/main_guard.hpp"

int main(int argc, char** argv) {
  return upkeep::GuardMain("upkeep-device-sim", std::cerr, upkeep::devicesim::kExitFailure,
                           [&] { return upkeep::devicesim::Main(argc, argv, std::cout, std::cerr); });
}
