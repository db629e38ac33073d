#include "upkeep/transport/http_fetcher.hpp"
