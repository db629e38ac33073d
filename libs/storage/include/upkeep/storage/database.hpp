#pragma once

// upkeep::storage: the server's database behind one small interface, with two backends.
//
//   sqlite:PATH or a plain PATH     SQLite 3 in WAL mode (the default: one file, no setup)
//   postgresql://... / postgres://  PostgreSQL through libpq (several server processes, one DB)
//
// SQL is written once for both backends (see docs/adr/0006-storage.md for the portable subset).
// Parameters are always `$1, $2, ...`. Values are NULL, a 64-bit integer, UTF-8 text or bytes.
//
// Thread safety: a Database is safe to share between threads. Each Exec/Query/InTransaction call
// borrows one connection from a bounded pool for its duration (Options::pool_size) and waits at
// most Options::pool_wait for a free one. A Tx belongs to the thread running the transaction
// body and is valid only inside it; inside a body use the Tx, never the Database (that call is
// refused with InvalidQuery instead of deadlocking on a second connection).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep::storage {

// Errors of the storage layer. Values are stable.
enum class Errc {
  Unavailable = 1,      // cannot reach the database now: unreachable, connection lost, locked
                        // beyond the busy timeout, statement timeout, pool exhausted, disk I/O
  Constraint = 2,       // unique, primary key, foreign key, NOT NULL or CHECK violation
                        // (idempotent inserts look for this code)
  Conflict = 3,         // serialization failure or deadlock still there after every retry
  InvalidQuery = 4,     // SQL error, parameter count mismatch, misuse of the API
  TypeMismatch = 5,     // a column read as the wrong type, or NULL read as a value
  MigrationFailed = 6,  // a migration's SQL failed, or the migration list or record is invalid
  SchemaTooNew = 7,     // the database records a migration newer than this program knows
  InvalidUrl = 8,       // the database URL is malformed or names an unknown backend
  InvalidValue = 9,     // a value the column or the backend cannot hold (text not UTF-8, ...)
  Internal = 10,        // out of memory, an exception from a transaction body, a bug
};

}  // namespace upkeep::storage

UPKEEP_DECLARE_ERRC(upkeep::storage);

namespace upkeep::storage {

// Arbitrary bytes (BYTEA on PostgreSQL, BLOB on SQLite). Text columns take std::string, which
// must be valid UTF-8 without NUL bytes on both backends (InvalidValue otherwise).
struct Blob {
  std::string bytes;
  friend bool operator==(const Blob&, const Blob&) = default;
};

// One parameter or column value.
using Value = std::variant<std::nullptr_t, std::int64_t, std::string, Blob>;
// Parameters for $1, $2, ... in order. Every $N in the SQL must have a value and every value a
// $N, otherwise InvalidQuery.
using Params = std::vector<Value>;

// One result row. Get<T>(column) with T one of std::int64_t, std::string, Blob, or
// std::optional of those (NULL -> nullopt). A NULL read as a non-optional type, a value of another
// type, or a column index out of range is an error, never an exception.
// PostgreSQL's smallint/integer/bigint/boolean (and integral numeric) read as std::int64_t;
// other non-bytea types read as their text form.
class Row {
 public:
  explicit Row(std::vector<Value> values) : values_(std::move(values)) {}
  [[nodiscard]] std::size_t size() const { return values_.size(); }
  [[nodiscard]] const std::vector<Value>& values() const { return values_; }

  template <typename T>
  [[nodiscard]] Result<T> Get(std::size_t column) const;

 private:
  [[nodiscard]] Result<const Value*> At(std::size_t column) const;
  std::vector<Value> values_;
};
using Rows = std::vector<Row>;

// Statements against one connection: the Database (each call is its own autocommit
// transaction) or a Tx (inside InTransaction).
class Session {
 public:
  virtual ~Session() = default;

  // Runs one statement; returns the number of rows it inserted, updated or deleted.
  [[nodiscard]] Result<std::int64_t> Exec(std::string_view sql, const Params& params = {}) {
    return DoExec(sql, params);
  }
  // Runs one statement and returns all its rows.
  [[nodiscard]] Result<Rows> Query(std::string_view sql, const Params& params = {}) {
    return DoQuery(sql, params);
  }
  // Runs several ';'-separated statements without parameters (schema scripts, migrations).
  [[nodiscard]] Result<void> ExecScript(std::string_view sql) { return DoExecScript(sql); }

 protected:
  virtual Result<std::int64_t> DoExec(std::string_view sql, const Params& params) = 0;
  virtual Result<Rows> DoQuery(std::string_view sql, const Params& params) = 0;
  virtual Result<void> DoExecScript(std::string_view sql) = 0;
};

// A transaction in progress; only handed to an InTransaction body.
class Tx : public Session {};

enum class Backend { kSqlite, kPostgresql };

struct Options {
  // Connections per Database (SQLite: concurrent readers; PostgreSQL: server connections).
  int pool_size = 4;
  // How long a call waits for a free pooled connection before Unavailable.
  std::chrono::milliseconds pool_wait{10000};
  // SQLite: how long a writer waits for another connection's write lock before Unavailable.
  std::chrono::milliseconds busy_timeout{5000};
  // PostgreSQL: TCP connect timeout (a connect_timeout in the URL takes precedence).
  std::chrono::seconds connect_timeout{5};
  // PostgreSQL: server-side limit per statement (Unavailable when hit); 0 = no limit.
  std::chrono::milliseconds statement_timeout{0};
  // InTransaction runs a body at most this often when the database reports a serialization
  // failure, a deadlock or (SQLite) a busy lock; then it returns Conflict or Unavailable.
  int max_attempts = 10;
  // Backoff before retry n (n >= 1): a uniformly random delay in [0, min(cap, base * 2^(n-1))].
  std::chrono::milliseconds retry_base_delay{2};
  std::chrono::milliseconds retry_max_delay{100};
  // Sleeps between attempts, called from the thread running the transaction (so it must be
  // thread-safe when several threads use the Database); tests inject a recorder.
  // Empty = std::this_thread::sleep_for.
  std::function<void(std::chrono::milliseconds)> sleeper;
};

struct Migration;

class Database : public Session {
 public:
  [[nodiscard]] virtual Backend backend() const = 0;

  // Runs body(tx) in a transaction and commits when it returns a value; rolls back when it
  // returns an error (that error is returned). SQLite: BEGIN IMMEDIATE (writers queue up front);
  // PostgreSQL: ISOLATION LEVEL SERIALIZABLE. On a serialization failure, deadlock or busy lock
  // the whole body runs again, at most Options::max_attempts times with jittered backoff, so a
  // body must have no effects outside the transaction. F: Result<T>(Tx&).
  template <typename F>
  [[nodiscard]] std::invoke_result_t<F&, Tx&> InTransaction(F&& body);

 protected:
  enum class Isolation { kSerializable, kReadCommitted };
  // Runs body with the begin/commit/rollback/retry policy above.
  virtual Result<void> RunTransaction(const std::function<Result<void>(Tx&)>& body,
                                      Isolation isolation) = 0;

 private:
  // Migrations take an advisory lock first, which needs per-statement snapshots on PostgreSQL.
  friend Result<void> Migrate(Database& db, std::span<const Migration> migrations);
};

// Opens (and for SQLite creates) a database. Connects once before returning, so an unreachable
// server is reported here as Unavailable. Messages never contain the URL's password.
[[nodiscard]] Result<std::unique_ptr<Database>> OpenDatabase(const std::string& url,
                                                             Options options = {});

// The URL with any password replaced by "***", for logs.
[[nodiscard]] std::string RedactUrl(std::string_view url);

// ---- numbered schema migrations ----

struct Migration {
  int number;             // >= 1, strictly increasing in the list, never reused
  std::string_view name;  // for the record and messages
  std::string_view sql;   // portable SQL, may hold several statements
};

// Applies the migrations the database has not recorded, each in its own transaction together
// with its row in schema_migrations, in order. Idempotent. Refuses (SchemaTooNew) a database that
// records a number above the last one given, and (MigrationFailed) one that records a number the
// list lacks. Safe when several processes migrate at once: PostgreSQL serializes them with
// pg_advisory_xact_lock, SQLite with BEGIN IMMEDIATE.
[[nodiscard]] Result<void> Migrate(Database& db, std::span<const Migration> migrations);

// The highest recorded migration number; 0 for a database never migrated.
[[nodiscard]] Result<int> SchemaVersion(Database& db);

// ---- implementation of the templates ----

template <typename F>
std::invoke_result_t<F&, Tx&> Database::InTransaction(F&& body) {
  using R = std::invoke_result_t<F&, Tx&>;
  using T = typename R::value_type;
  if constexpr (std::is_void_v<T>) {
    return RunTransaction([&body](Tx& tx) -> Result<void> { return body(tx); },
                          Isolation::kSerializable);
  } else {
    std::optional<T> out;
    Result<void> r = RunTransaction(
        [&body, &out](Tx& tx) -> Result<void> {
          R v = body(tx);
          if (!v) return std::move(v).error();
          // nothrow: the error case returned just above
          out.emplace(std::move(v).value());
          return Ok();
        },
        Isolation::kSerializable);
    if (!r) return std::move(r).error();
    return std::move(*out);
  }
}

template <typename T>
Result<T> Row::Get(std::size_t column) const {
  UPKEEP_ASSIGN_OR_RETURN(const Value* v, At(column));
  if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::string> ||
                std::is_same_v<T, Blob>) {
    if (const T* p = std::get_if<T>(v)) return *p;
    return Error(
        Errc::TypeMismatch,
        "column " + std::to_string(column) +
            (std::holds_alternative<std::nullptr_t>(*v) ? " is NULL" : " holds another type"));
  } else {
    using U = typename T::value_type;
    static_assert(std::is_same_v<T, std::optional<U>>, "Get<T>: unsupported type");
    if (std::holds_alternative<std::nullptr_t>(*v)) return T{};
    UPKEEP_ASSIGN_OR_RETURN(U value, Get<U>(column));
    return T{std::move(value)};
  }
}

}  // namespace upkeep::storage
