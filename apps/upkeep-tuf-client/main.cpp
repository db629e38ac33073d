#include <iostream>

#include "cli.hpp"

int main(int argc, char** argv) { return upkeep::tufclient::Main(argc, argv, std::cout, std::cerr); }
