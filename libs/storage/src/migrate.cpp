// Numbered schema migrations recorded in schema_migrations.

#include <exception>
#include <limits>
#include <set>
#include <string>

#include "upkeep/storage/database.hpp"

namespace upkeep::storage {
namespace {

// pg_advisory_xact_lock key shared by every upkeep process migrating the same database.
constexpr std::int64_t kMigrationLockKey = 0x75706b6565700001;  // "upkeep" + 1

constexpr std::string_view kCreateTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)";

Result<void> ValidateList(std::span<const Migration> migrations) {
  int previous = 0;
  for (const Migration& m : migrations) {
    if (m.number <= previous) {
      return Error(Errc::MigrationFailed,
                   "migration numbers must start at 1 or above and "
                   "increase strictly (" +
                       std::to_string(m.number) + " after " + std::to_string(previous) + ")");
    }
    previous = m.number;
  }
  return Ok();
}

Result<std::set<std::int64_t>> AppliedVersions(Tx& tx) {
  UPKEEP_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT version FROM schema_migrations"));
  std::set<std::int64_t> out;
  for (const Row& row : rows) {
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t v, row.Get<std::int64_t>(0));
    out.insert(v);
  }
  return out;
}

}  // namespace

Result<void> Migrate(Database& db, std::span<const Migration> migrations) {
  try {
    UPKEEP_TRY(ValidateList(migrations));
    const int newest = migrations.empty() ? 0 : migrations.back().number;
    // One transaction per migration (lock, check the record, apply the first missing one, record
    // it); the loop ends when a transaction finds nothing left to apply.
    for (std::size_t round = 0; round <= migrations.size(); ++round) {
      bool applied_one = false;
      Result<void> r = db.RunTransaction(
          [&](Tx& tx) -> Result<void> {
            applied_one = false;
            if (db.backend() == Backend::kPostgresql) {
              // Serializes concurrent migrators; released at commit or rollback. The transaction
              // is READ COMMITTED, so the statements below see what the previous holder committed.
              UPKEEP_TRY(tx.Query("SELECT pg_advisory_xact_lock($1)", {kMigrationLockKey}));
            }
            UPKEEP_TRY(tx.Exec(kCreateTable));
            UPKEEP_ASSIGN_OR_RETURN(std::set<std::int64_t> applied, AppliedVersions(tx));
            if (!applied.empty() && *applied.rbegin() > newest) {
              return Error(Errc::SchemaTooNew,
                           "database schema version " + std::to_string(*applied.rbegin()) +
                               " is newer than this program knows (" + std::to_string(newest) +
                               "); upgrade the program");
            }
            for (std::int64_t v : applied) {
              bool known = false;
              for (const Migration& m : migrations) known = known || m.number == v;
              if (!known) {
                return Error(Errc::MigrationFailed, "database records migration " +
                                                        std::to_string(v) +
                                                        " which this program does not have");
              }
            }
            for (const Migration& m : migrations) {
              if (applied.contains(m.number)) continue;
              const std::string what =
                  "migration " + std::to_string(m.number) + " (" + std::string(m.name) + ")";
              if (auto s = tx.ExecScript(m.sql); !s) {
                const auto& code = s.error().code();
                if (code == Errc::Conflict || code == Errc::Unavailable) {
                  return std::move(s).error().WithContext(what);
                }
                return Error(Errc::MigrationFailed, what + ": " + s.error().ToString());
              }
              UPKEEP_TRY(
                  tx.Exec("INSERT INTO schema_migrations (version, name, applied_at) "
                          "VALUES ($1, $2, CAST(CURRENT_TIMESTAMP AS TEXT))",
                          {std::int64_t{m.number}, std::string(m.name)}));
              applied_one = true;
              return Ok();
            }
            return Ok();
          },
          Database::Isolation::kReadCommitted);
      if (!r) return r;
      if (!applied_one) return Ok();
    }
    return Ok();
  } catch (const std::exception& e) {
    return Error(Errc::Internal, std::string("migrate: unexpected exception: ") + e.what());
  }
}

Result<int> SchemaVersion(Database& db) {
  const std::string_view exists =
      db.backend() == Backend::kSqlite
          ? "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = "
            "'schema_migrations'"
          : "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_name = 'schema_migrations'";
  UPKEEP_ASSIGN_OR_RETURN(Rows found, db.Query(exists));
  if (found.empty() || found[0].Get<std::int64_t>(0).value_or(0) == 0) return 0;
  UPKEEP_ASSIGN_OR_RETURN(Rows rows, db.Query("SELECT MAX(version) FROM schema_migrations"));
  if (rows.empty()) return 0;
  UPKEEP_ASSIGN_OR_RETURN(std::optional<std::int64_t> v,
                          rows[0].Get<std::optional<std::int64_t>>(0));
  if (v.value_or(0) < 0 || v.value_or(0) > std::numeric_limits<int>::max()) {
    return Error(Errc::MigrationFailed, "schema_migrations holds an invalid version");
  }
  return static_cast<int>(v.value_or(0));
}

}  // namespace upkeep::storage
