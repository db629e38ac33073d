#include <iostream>

#include "cli.hpp"

int main(int argc, char** argv) {
  return upkeep::module_tool::Main(argc, argv, std::cout, std::cerr);
}
