#include <iostream>

#include "cli.hpp"

int main(int argc, char** argv) { return upkeep::agent::Main(argc, argv, std::cout, std::cerr); }
