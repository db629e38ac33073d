#include "upkeep/server/router.hpp"

#include "upkeep/server/static_files.hpp"

namespace upkeep::server {

Handler Route(Routes routes) {
  return [routes = std::move(routes)](const Request& request) -> Response {
    if (request.path == "/metrics" && routes.metrics) return routes.metrics(request);
    if (request.path.starts_with(kRepositoryPrefix) && routes.repository) {
      return routes.repository(request);
    }
    return routes.fallback(request);
  };
}

}  // namespace upkeep::server
