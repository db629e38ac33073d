#pragma once

// The PostgreSQL server the tests may use: UPKEEP_TEST_POSTGRESQL_URL, or the PG* variables that
// pg_virtualenv exports (the ctest entries labelled `postgresql` run under it). nullopt when
// neither is set, and the PostgreSQL cases then skip.

#include <cstdlib>
#include <optional>
#include <string>

#include "upkeep/common/encoding.hpp"

namespace upkeep::testing {

inline std::string EnvOr(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

inline std::optional<std::string> PostgresqlBaseUrl() {
  if (std::string url = EnvOr("UPKEEP_TEST_POSTGRESQL_URL"); !url.empty()) return url;
  if (EnvOr("PGHOST").empty()) return std::nullopt;
  std::string url = "postgresql://" + PercentEncode(EnvOr("PGUSER", "postgres"));
  if (std::string pw = EnvOr("PGPASSWORD"); !pw.empty()) url += ":" + PercentEncode(pw);
  const std::string host = EnvOr("PGHOST");
  if (host.starts_with("/")) {  // a Unix socket directory goes in the query
    return url + "@/" + PercentEncode(EnvOr("PGDATABASE", "postgres")) +
           "?host=" + PercentEncode(host) + "&port=" + EnvOr("PGPORT", "5432");
  }
  return url + "@" + host + ":" + EnvOr("PGPORT", "5432") + "/" +
         PercentEncode(EnvOr("PGDATABASE", "postgres"));
}

}  // namespace upkeep::testing
