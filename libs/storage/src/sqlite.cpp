// SQLite backend: one sqlite3 handle per pooled connection, WAL journal, synchronous=FULL.

#include <sqlite3.h>

#include <climits>
#include <unordered_map>
#include <memory>
#include <string>

#include "connection.hpp"

namespace upkeep::storage::internal {
namespace {

using StmtPtr = std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)>;

bool IsBlank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

class SqliteConnection final : public Connection {
 public:
  explicit SqliteConnection(sqlite3* db) : db_(db) {}
  ~SqliteConnection() override {
    cache_.clear();  // finalized before the connection closes
    sqlite3_close_v2(db_);
  }
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;

  static Result<std::unique_ptr<Connection>> Open(const std::string& path, const Options& o) {
    sqlite3* raw = nullptr;
    const int rc =
        sqlite3_open_v2(path.c_str(), &raw,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    auto conn = std::make_unique<SqliteConnection>(raw);  // owns raw even on failure
    if (rc != SQLITE_OK) {
      return Error(Errc::Unavailable,
                   std::string("cannot open: ") + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
    }
    sqlite3_extended_result_codes(raw, 1);
    sqlite3_busy_timeout(raw,
                         static_cast<int>(std::min<std::int64_t>(o.busy_timeout.count(), INT_MAX)));
    // WAL: readers do not block the writer. synchronous=FULL: a committed transaction is on disk
    // (WAL fsynced) before COMMIT returns, so an acknowledged report survives a power cut.
    UPKEEP_ASSIGN_OR_RETURN(Rows mode, conn->Query("PRAGMA journal_mode=WAL", {}));
    if (mode.size() != 1 || mode[0].Get<std::string>(0).value_or("") != "wal") {
      return Error(Errc::Unavailable, "cannot switch the database to WAL mode");
    }
    UPKEEP_TRY(conn->ExecScript("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
    return std::unique_ptr<Connection>(std::move(conn));
  }

  Result<std::int64_t> Exec(std::string_view sql, const Params& params) override {
    const sqlite3_int64 before = sqlite3_total_changes64(db_);
    UPKEEP_TRY(Run(sql, params, nullptr));
    return static_cast<std::int64_t>(sqlite3_total_changes64(db_) - before);
  }

  Result<Rows> Query(std::string_view sql, const Params& params) override {
    Rows rows;
    UPKEEP_TRY(Run(sql, params, &rows));
    return rows;
  }

  Result<void> ExecScript(std::string_view sql) override {
    busy_ = false;
    while (!IsBlank(sql)) {
      UPKEEP_ASSIGN_OR_RETURN(auto prepared, Prepare(sql));
      if (!prepared.first) break;  // only comments left
      UPKEEP_TRY(Step(prepared.first.get(), nullptr));
      sql = prepared.second;
    }
    return Ok();
  }

  // BEGIN IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so two writers
  // never deadlock upgrading read locks; SQLite transactions are serializable.
  Result<void> Begin(TxIsolation /*isolation*/) override { return ExecScript("BEGIN IMMEDIATE"); }
  Result<void> Commit() override { return ExecScript("COMMIT"); }
  void Rollback() override {
    if (sqlite3_get_autocommit(db_) == 0)
      (void)sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Result<void> EnsureConnected() override { return Ok(); }
  bool Reusable() override { return sqlite3_get_autocommit(db_) != 0; }
  [[nodiscard]] bool LastErrorWasBusy() const override { return busy_; }

 private:
  Error LastError(int rc) {
    const int primary = rc & 0xff;
    busy_ = primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
    std::string message = sqlite3_errmsg(db_);
    message += " (SQLite " + std::string(sqlite3_errstr(rc)) + ")";
    switch (primary) {
      case SQLITE_CONSTRAINT:
        return Error(Errc::Constraint, message);
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
        return Error(Errc::Unavailable, "database is locked by another connection: " + message);
      case SQLITE_ERROR:
      case SQLITE_RANGE:
      case SQLITE_AUTH:
        return Error(Errc::InvalidQuery, message);
      case SQLITE_TOOBIG:
      case SQLITE_MISMATCH:
        return Error(Errc::InvalidValue, message);
      case SQLITE_NOMEM:
      case SQLITE_INTERNAL:
      case SQLITE_MISUSE:
        return Error(Errc::Internal, message);
      default:
        return Error(Errc::Unavailable, message);  // I/O, full, read-only, corrupt...
    }
  }

  // Prepares the first statement of sql; returns it (null for only comments) and the rest.
  Result<std::pair<StmtPtr, std::string_view>> Prepare(std::string_view sql) {
    if (sql.size() > INT_MAX) return Error(Errc::InvalidQuery, "statement too long");
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    const int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &raw, &tail);
    StmtPtr stmt(raw, &sqlite3_finalize);
    if (rc != SQLITE_OK) return LastError(rc);
    return std::make_pair(std::move(stmt), sql.substr(static_cast<std::size_t>(tail - sql.data())));
  }

  // The prepared statement for `sql` (exactly one statement), from this connection's cache.
  Result<sqlite3_stmt*> Cached(std::string_view sql) {
    if (auto it = cache_.find(sql); it != cache_.end()) return it->second.get();
    UPKEEP_ASSIGN_OR_RETURN(auto prepared, Prepare(sql));
    StmtPtr stmt = std::move(prepared.first);
    if (!stmt) return Error(Errc::InvalidQuery, "empty statement");
    if (!IsBlank(prepared.second)) {
      UPKEEP_ASSIGN_OR_RETURN(auto next, Prepare(prepared.second));
      if (next.first) {
        return Error(Errc::InvalidQuery, "more than one statement (use ExecScript)");
      }
    }
    if (cache_.size() >= kMaxCachedStatements) cache_.clear();
    sqlite3_stmt* raw = stmt.get();
    cache_.emplace(std::string(sql), std::move(stmt));
    return raw;
  }

  Result<void> Run(std::string_view sql, const Params& params, Rows* rows) {
    busy_ = false;
    UPKEEP_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Cached(sql));
    // Reset after every use, whatever happened: a statement left mid-way would keep its read
    // transaction open; bindings are cleared so no value of one call leaks into the next.
    struct ResetOnExit {
      sqlite3_stmt* s;
      ~ResetOnExit() {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
      }
    } reset{stmt};
    UPKEEP_TRY(Bind(stmt, params));
    return Step(stmt, rows);
  }

  Result<void> Bind(sqlite3_stmt* stmt, const Params& params) {
    if (static_cast<std::size_t>(sqlite3_bind_parameter_count(stmt)) != params.size()) {
      return Error(Errc::InvalidQuery, "parameters must be written $1, $2, ... (" +
                                           std::to_string(params.size()) + " given)");
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      const std::string name = "$" + std::to_string(i + 1);
      const int idx = sqlite3_bind_parameter_index(stmt, name.c_str());
      if (idx == 0) return Error(Errc::InvalidQuery, "statement does not use " + name);
      int rc = SQLITE_OK;
      const Value& v = params[i];
      if (std::holds_alternative<std::nullptr_t>(v)) {
        rc = sqlite3_bind_null(stmt, idx);
      } else if (const auto* n = std::get_if<std::int64_t>(&v)) {
        rc = sqlite3_bind_int64(stmt, idx, *n);
      } else if (const auto* s = std::get_if<std::string>(&v)) {
        rc = sqlite3_bind_text64(stmt, idx, s->data(), s->size(), SQLITE_TRANSIENT, SQLITE_UTF8);
      } else if (const auto* b = std::get_if<Blob>(&v)) {
        // An empty blob must stay a blob (a null pointer would bind NULL).
        rc = b->bytes.empty() ? sqlite3_bind_zeroblob(stmt, idx, 0)
                              : sqlite3_bind_blob64(stmt, idx, b->bytes.data(), b->bytes.size(),
                                                    SQLITE_TRANSIENT);
      }
      if (rc != SQLITE_OK) return LastError(rc);
    }
    return Ok();
  }

  Result<void> Step(sqlite3_stmt* stmt, Rows* rows) {
    for (;;) {
      const int rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) return Ok();
      if (rc != SQLITE_ROW) return LastError(rc);
      if (rows == nullptr) continue;
      const int n = sqlite3_column_count(stmt);
      std::vector<Value> values;
      values.reserve(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) values.push_back(Column(stmt, i));
      rows->emplace_back(std::move(values));
    }
  }

  static Value Column(sqlite3_stmt* stmt, int i) {
    switch (sqlite3_column_type(stmt, i)) {
      case SQLITE_NULL:
        return nullptr;
      case SQLITE_INTEGER:
        return static_cast<std::int64_t>(sqlite3_column_int64(stmt, i));
      case SQLITE_BLOB: {
        const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt, i));
        const auto size = static_cast<std::size_t>(sqlite3_column_bytes(stmt, i));
        return Blob{p == nullptr ? std::string() : std::string(p, size)};
      }
      default: {  // TEXT, and REAL as its text form (REAL is outside the portable subset)
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
        const auto size = static_cast<std::size_t>(sqlite3_column_bytes(stmt, i));
        return p == nullptr ? std::string() : std::string(p, size);
      }
    }
  }

  // Prepared statements by SQL text; statements are prepared once per connection.
  static constexpr std::size_t kMaxCachedStatements = 256;
  struct TextHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, StmtPtr, TextHash, std::equal_to<>> cache_;
  sqlite3* db_;
  bool busy_ = false;
};

}  // namespace

Result<ConnectionFactory> SqliteFactory(const std::string& path, const Options& options) {
  return ConnectionFactory([path, options]() { return SqliteConnection::Open(path, options); });
}

}  // namespace upkeep::storage::internal
