#include <iostream>

#include "cli.hpp"
#include "upkeep/common/main_guard.hpp"

int main(int argc, char** argv) {
  return upkeep::GuardMain("upkeep-tuf-client", std::cerr, 1, [&] {
    return upkeep::tufclient::Main(argc, argv, std::cout, std::cerr);
  });
}
