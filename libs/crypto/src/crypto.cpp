#include "upkeep/crypto/crypto.hpp"
