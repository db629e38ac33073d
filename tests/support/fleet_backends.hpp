#pragma once

// The two databases the fleet server's tests run against, as GoogleTest typed-test parameters:
// a SQLite file in a fresh temporary directory, and a fresh schema in the PostgreSQL server that
// pg_virtualenv starts (skipped with a message when there is none).

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <string>

#include "postgresql_env.hpp"
#include "temp_dir.hpp"
#include "upkeep/storage/database.hpp"

namespace upkeep::testing {

struct SqliteBackend {
  static constexpr const char* kName = "Sqlite";
  static std::optional<std::string> SkipReason() { return std::nullopt; }
  SqliteBackend() : url("sqlite:" + (dir.path() / "fleet.db").string()) {}
  testing::TempDir dir;
  std::string url;
};

// A fresh schema per test in the pg_virtualenv server's database.
struct PostgresqlBackend {
  static constexpr const char* kName = "Postgresql";
  static std::optional<std::string> SkipReason() {
    if (!PostgresqlBaseUrl()) {
      return "no PostgreSQL server: run under pg_virtualenv (ctest -R FleetTest_Postgresql) or "
             "set UPKEEP_TEST_POSTGRESQL_URL";
    }
    return std::nullopt;
  }
  PostgresqlBackend() {
    static std::atomic<int> counter{0};
    schema = "fleet_test_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
    const std::string base = *PostgresqlBaseUrl();
    auto admin = storage::OpenDatabase(base);
    if (!admin) ADD_FAILURE() << admin.error().ToString();
    if (admin) {
      EXPECT_TRUE((*admin)->Exec("CREATE SCHEMA " + schema));
    }
    url = base + (base.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" +
          schema;
  }
  ~PostgresqlBackend() {
    if (auto admin = storage::OpenDatabase(*PostgresqlBaseUrl())) {
      (void)(*admin)->Exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE");
    }
  }
  std::string schema;
  std::string url;
};

struct BackendNames {
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};
using Backends = ::testing::Types<SqliteBackend, PostgresqlBackend>;

}  // namespace upkeep::testing
