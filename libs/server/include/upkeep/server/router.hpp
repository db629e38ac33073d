#pragma once

// The fleet server's one HTTPS listener, split by path: GET /metrics to the metrics endpoint,
// /repository/... to the image repository's static files, everything else to the device API
// (Fleet). A part that is not configured leaves its paths to the device API, which answers 404.

#include "upkeep/server/https_server.hpp"

namespace upkeep::server {

struct Routes {
  Handler metrics;     // "/metrics" (MetricsEndpoint); empty: not served
  Handler repository;  // paths under kRepositoryPrefix (StaticFiles); empty: not served
  Handler fallback;    // everything else (Fleet::AsHandler)
};

[[nodiscard]] Handler Route(Routes routes);

}  // namespace upkeep::server
