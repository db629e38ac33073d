// The backend-independent part of upkeep::storage: URL dispatch, the connection pool, parameter
// checks, and the transaction/retry policy.

#include "upkeep/storage/database.hpp"

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <random>
#include <thread>

#include "connection.hpp"
#include "upkeep/common/encoding.hpp"

namespace upkeep::storage {

namespace {
const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::Unavailable:
      return "Unavailable";
    case Errc::Constraint:
      return "Constraint";
    case Errc::Conflict:
      return "Conflict";
    case Errc::InvalidQuery:
      return "InvalidQuery";
    case Errc::TypeMismatch:
      return "TypeMismatch";
    case Errc::MigrationFailed:
      return "MigrationFailed";
    case Errc::SchemaTooNew:
      return "SchemaTooNew";
    case Errc::InvalidUrl:
      return "InvalidUrl";
    case Errc::InvalidValue:
      return "InvalidValue";
    case Errc::Internal:
      return "Internal";
  }
  return "Unknown";
}
}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("storage", &ErrcName);
  return category;
}

Result<const Value*> Row::At(std::size_t column) const {
  if (column >= values_.size()) {
    return Error(Errc::InvalidQuery, "column " + std::to_string(column) +
                                         " out of range (row has " +
                                         std::to_string(values_.size()) + ")");
  }
  return &values_[column];
}

namespace internal {

Result<void> CheckPlaceholders(std::string_view sql, std::size_t count) {
  std::vector<bool> seen(count, false);
  const std::size_t n = sql.size();
  auto skip_to = [&](std::size_t from, std::string_view end) {
    const std::size_t p = sql.find(end, from);
    return p == std::string_view::npos ? n : p + end.size();
  };
  for (std::size_t i = 0; i < n;) {
    const char c = sql[i];
    if (c == '\'' || c == '"') {
      i = skip_to(i + 1, std::string_view(&c, 1));  // '' and "" escapes re-enter here: harmless
    } else if (sql.substr(i, 2) == "--") {
      i = skip_to(i + 2, "\n");
    } else if (sql.substr(i, 2) == "/*") {
      i = skip_to(i + 2, "*/");
    } else if (c == '$' && i + 1 < n && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
      std::size_t j = i + 1;
      std::size_t number = 0;
      while (j < n && sql[j] >= '0' && sql[j] <= '9') {
        number =
            std::min<std::size_t>(number * 10 + static_cast<std::size_t>(sql[j] - '0'), 1000000);
        ++j;
      }
      if (number == 0 || number > count) {
        return Error(Errc::InvalidQuery, "placeholder $" + std::to_string(number) + " but " +
                                             std::to_string(count) + " parameter(s) given");
      }
      seen[number - 1] = true;
      i = j;
    } else if (c == '$') {
      // PostgreSQL dollar quoting: $tag$ ... $tag$ (tag may be empty).
      std::size_t j = i + 1;
      while (j < n && (std::isalnum(static_cast<unsigned char>(sql[j])) || sql[j] == '_')) ++j;
      if (j < n && sql[j] == '$') {
        i = skip_to(j + 1, sql.substr(i, j + 1 - i));
      } else {
        i = j;
      }
    } else {
      ++i;
    }
  }
  for (std::size_t k = 0; k < count; ++k) {
    if (!seen[k]) {
      return Error(Errc::InvalidQuery,
                   "parameter $" + std::to_string(k + 1) + " given but not used in the statement");
    }
  }
  return Ok();
}

namespace {
// RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool IsUtf8WithoutNul(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c == 0) return false;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (end - p < len) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (int k = 2; k < len; ++k) {
      if (p[k] < 0x80 || p[k] > 0xBF) return false;
    }
    p += len;
  }
  return true;
}
}  // namespace

Result<void> CheckValues(const Params& params) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (const auto* s = std::get_if<std::string>(&params[i]); s && !IsUtf8WithoutNul(*s)) {
      return Error(Errc::InvalidValue, "parameter $" + std::to_string(i + 1) +
                                           " is not UTF-8 text without NUL bytes (use Blob)");
    }
  }
  return Ok();
}

}  // namespace internal

// ---- URLs ----

namespace {

struct UrlSecrets {
  std::string redacted;
  std::vector<std::string> secrets;  // strings that must not appear in messages
};

void AddSecret(std::vector<std::string>& out, std::string_view raw) {
  if (raw.empty()) return;
  out.emplace_back(raw);
  if (auto decoded = PercentDecode(raw); decoded && *decoded != raw) out.push_back(*decoded);
  // libpq ends the user info at the first '@'; the rest may show up as a host name.
  for (std::size_t at = raw.find('@'); at != std::string_view::npos; at = raw.find('@', at + 1)) {
    if (at + 1 < raw.size()) out.emplace_back(raw.substr(at + 1));
    if (at > 0) out.emplace_back(raw.substr(0, at));
  }
}

UrlSecrets AnalyzeUrl(std::string_view url) {
  UrlSecrets out;
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    out.redacted = std::string(url);
    return out;
  }
  const std::size_t auth_begin = scheme_end + 3;
  const std::size_t auth_end = std::min(url.find_first_of("/?#", auth_begin), url.size());
  std::string_view authority = url.substr(auth_begin, auth_end - auth_begin);
  out.redacted = std::string(url.substr(0, auth_begin));
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    if (const std::size_t colon = userinfo.find(':'); colon != std::string_view::npos) {
      AddSecret(out.secrets, userinfo.substr(colon + 1));
      out.redacted += std::string(userinfo.substr(0, colon)) + ":***";
    } else {
      out.redacted += std::string(userinfo);
    }
    out.redacted += std::string(authority.substr(at));
  } else {
    out.redacted += std::string(authority);
  }
  // Query parameters: password=... (any case) is a secret too.
  const std::size_t query = url.find('?', auth_end);
  out.redacted += std::string(url.substr(
      auth_end, query == std::string_view::npos ? std::string_view::npos : query - auth_end));
  if (query == std::string_view::npos) return out;
  out.redacted += '?';
  std::string_view rest = url.substr(query + 1);
  while (true) {
    const std::size_t amp = rest.find('&');
    std::string_view part = rest.substr(0, amp);
    const std::size_t eq = part.find('=');
    std::string key(part.substr(0, eq));
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (key == "password" && eq != std::string_view::npos) {
      AddSecret(out.secrets, part.substr(eq + 1));
      out.redacted += std::string(part.substr(0, eq + 1)) + "***";
    } else {
      out.redacted += std::string(part);
    }
    if (amp == std::string_view::npos) break;
    out.redacted += '&';
    rest.remove_prefix(amp + 1);
  }
  return out;
}

std::string Scrub(std::string message, const std::vector<std::string>& secrets) {
  for (const std::string& s : secrets) {
    for (std::size_t p = message.find(s); p != std::string::npos; p = message.find(s, p + 3)) {
      message.replace(p, s.size(), "***");
    }
  }
  return message;
}

}  // namespace

std::string RedactUrl(std::string_view url) {
  try {
    return AnalyzeUrl(url).redacted;
  } catch (const std::exception&) {
    return "<url>";
  }
}

// ---- the pool and the transaction policy ----

namespace {

using internal::Connection;

// The Database a thread is running a transaction body for (misuse detection).
thread_local const Database* t_in_transaction = nullptr;

Error FromException(const char* what) {
  return Error(Errc::Internal, std::string("unexpected exception: ") + what);
}

// Checks shared by Database and Tx before a statement reaches a backend.
Result<void> CheckStatement(std::string_view sql, const Params& params) {
  UPKEEP_TRY(internal::CheckPlaceholders(sql, params.size()));
  return internal::CheckValues(params);
}

// The Tx handed to a body. After any error the transaction is failed: later statements are
// refused and the transaction rolls back, the same on both backends (PostgreSQL aborts a
// transaction at its first error; SQLite would carry on).
class TxImpl final : public Tx {
 public:
  explicit TxImpl(Connection& c) : c_(c) {}
  [[nodiscard]] const std::optional<Error>& failure() const { return failure_; }

 protected:
  Result<std::int64_t> DoExec(std::string_view sql, const Params& params) override {
    return Run([&]() -> Result<std::int64_t> {
      UPKEEP_TRY(CheckStatement(sql, params));
      return c_.Exec(sql, params);
    });
  }
  Result<Rows> DoQuery(std::string_view sql, const Params& params) override {
    return Run([&]() -> Result<Rows> {
      UPKEEP_TRY(CheckStatement(sql, params));
      return c_.Query(sql, params);
    });
  }
  Result<void> DoExecScript(std::string_view sql) override {
    return Run([&]() -> Result<void> { return c_.ExecScript(sql); });
  }

 private:
  template <typename F>
  auto Run(F&& f) -> decltype(f()) {
    if (failure_) {
      return Error(failure_->code(), "transaction already failed: " + failure_->message());
    }
    auto r = f();
    if (!r) failure_ = r.error();
    return r;
  }

  Connection& c_;
  std::optional<Error> failure_;
};

class PooledDatabase final : public Database {
 public:
  PooledDatabase(Backend backend, Options options, internal::ConnectionFactory factory)
      : backend_(backend), options_(std::move(options)), factory_(std::move(factory)) {}

  [[nodiscard]] Backend backend() const override { return backend_; }

  // Opens the first connection so that OpenDatabase reports an unreachable database.
  Result<void> Connect() {
    UPKEEP_ASSIGN_OR_RETURN(Lease lease, Acquire());
    return Ok();
  }

 protected:
  Result<std::int64_t> DoExec(std::string_view sql, const Params& params) override {
    return WithConnection<std::int64_t>(sql, params,
                                        [&](Connection& c) { return c.Exec(sql, params); });
  }
  Result<Rows> DoQuery(std::string_view sql, const Params& params) override {
    return WithConnection<Rows>(sql, params, [&](Connection& c) { return c.Query(sql, params); });
  }
  Result<void> DoExecScript(std::string_view sql) override {
    try {
      UPKEEP_TRY(CheckNotInTransaction());
      UPKEEP_ASSIGN_OR_RETURN(Lease lease, Acquire());
      return lease.conn->ExecScript(sql);
    } catch (const std::exception& e) {
      return FromException(e.what());
    }
  }

  Result<void> RunTransaction(const std::function<Result<void>(Tx&)>& body,
                              Isolation isolation) override;

 private:
  // A borrowed connection; goes back to the pool (or is closed) when destroyed.
  struct Lease {
    PooledDatabase* db = nullptr;
    std::unique_ptr<Connection> conn;
    Lease(PooledDatabase* d, std::unique_ptr<Connection> c) : db(d), conn(std::move(c)) {}
    Lease(Lease&& o) noexcept : db(std::exchange(o.db, nullptr)), conn(std::move(o.conn)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (db != nullptr) db->Release(std::move(conn));
    }
  };

  Result<void> CheckNotInTransaction() const {
    if (t_in_transaction == this) {
      return Error(Errc::InvalidQuery,
                   "called on the Database inside its own InTransaction body; use the Tx");
    }
    return Ok();
  }

  template <typename T, typename F>
  Result<T> WithConnection(std::string_view sql, const Params& params, F&& run) {
    try {
      UPKEEP_TRY(CheckNotInTransaction());
      UPKEEP_TRY(CheckStatement(sql, params));
      UPKEEP_ASSIGN_OR_RETURN(Lease lease, Acquire());
      return run(*lease.conn);
    } catch (const std::exception& e) {
      return FromException(e.what());
    }
  }

  Result<Lease> Acquire() {
    std::unique_ptr<Connection> conn;
    {
      std::unique_lock lock(mu_);
      const bool ready = cv_.wait_for(lock, options_.pool_wait,
                                      [&] { return !idle_.empty() || open_ < options_.pool_size; });
      if (!ready) {
        return Error(Errc::Unavailable, "all " + std::to_string(options_.pool_size) +
                                            " database connections stayed busy");
      }
      if (!idle_.empty()) {
        conn = std::move(idle_.back());
        idle_.pop_back();
      } else {
        ++open_;  // reserve the slot, connect outside the lock
      }
    }
    Lease lease(this, nullptr);
    if (conn) {
      lease.conn = std::move(conn);
      if (auto r = lease.conn->EnsureConnected(); !r) {
        lease.conn.reset();  // Release frees the slot
        return std::move(r).error();
      }
      return lease;
    }
    auto made = factory_();
    if (!made) return std::move(made).error();  // lease (empty) frees the slot
    // nothrow: the error case returned just above
    lease.conn = std::move(made).value();
    return lease;
  }

  void Release(std::unique_ptr<Connection> conn) {
    // Try to leave no transaction behind before deciding whether the connection can be reused.
    if (conn && !conn->Reusable()) conn->Rollback();
    std::lock_guard lock(mu_);
    if (conn && conn->Reusable()) {
      idle_.push_back(std::move(conn));
    } else {
      --open_;
      conn.reset();
    }
    cv_.notify_one();
  }

  std::chrono::milliseconds Backoff(int retry) const {
    thread_local std::minstd_rand rng(static_cast<std::uint32_t>(
        std::hash<std::thread::id>{}(std::this_thread::get_id()) ^
        static_cast<std::size_t>(std::chrono::steady_clock::now().time_since_epoch().count())));
    const auto base = std::max<std::int64_t>(options_.retry_base_delay.count(), 0);
    const auto cap = std::max<std::int64_t>(options_.retry_max_delay.count(), 0);
    const std::int64_t ceiling = std::min<std::int64_t>(cap, base << std::min(retry - 1, 20));
    std::uniform_int_distribution<std::int64_t> dist(0, std::max<std::int64_t>(ceiling, 0));
    return std::chrono::milliseconds(dist(rng));
  }

  const Backend backend_;
  const Options options_;
  const internal::ConnectionFactory factory_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
  // SQLite has one writer at a time: this process's transactions queue here, in order, instead
  // of polling SQLite's lock in its busy handler (which sleeps and is unfair under load). Other
  // processes still meet the busy handler.
  std::mutex sqlite_writer_;
  int open_ = 0;                                   // guarded by mu_: idle + borrowed
};

Result<void> PooledDatabase::RunTransaction(const std::function<Result<void>(Tx&)>& body,
                                            Isolation isolation) {
  if (t_in_transaction == this) {
    return Error(Errc::InvalidQuery, "InTransaction called inside a transaction body");
  }
  const auto level = isolation == Isolation::kSerializable ? internal::TxIsolation::kSerializable
                                                           : internal::TxIsolation::kReadCommitted;
  Error last(Errc::Internal, "no attempt made");
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    if (attempt > 1) {
      const auto delay = Backoff(attempt - 1);
      if (options_.sleeper) {
        options_.sleeper(delay);
      } else {
        std::this_thread::sleep_for(delay);
      }
    }
    std::unique_lock<std::mutex> writer;
    if (backend_ == Backend::kSqlite) writer = std::unique_lock<std::mutex>(sqlite_writer_);
    UPKEEP_ASSIGN_OR_RETURN(Lease lease, Acquire());
    Connection& c = *lease.conn;
    if (auto r = c.Begin(level); !r) {
      // Nothing ran yet: a busy lock or a connection the server has just closed is retried.
      if (r.error().code() == Errc::Conflict || c.LastErrorWasBusy() ||
          (r.error().code() == Errc::Unavailable && !c.Reusable())) {
        last = std::move(r).error();
        continue;
      }
      return r;
    }
    TxImpl tx(c);
    Result<void> r;
    {
      // Marks this thread as inside a body of this Database until the body returns or throws.
      struct InBody {
        const Database* outer;
        explicit InBody(const Database* db) : outer(std::exchange(t_in_transaction, db)) {}
        InBody(const InBody&) = delete;
        InBody& operator=(const InBody&) = delete;
        ~InBody() { t_in_transaction = outer; }
      } in_body(this);
      try {
        r = body(tx);
      } catch (const std::exception& e) {
        r = FromException(e.what());
      } catch (...) {
        r = FromException("non-standard exception");
      }
    }
    // A body that swallowed a failed statement still must not commit a partial transaction.
    if (r && tx.failure()) r = *tx.failure();
    if (r) r = c.Commit();
    if (r) return Ok();
    c.Rollback();
    const bool retry = r.error().code() == Errc::Conflict ||
                       (r.error().code() == Errc::Unavailable && c.LastErrorWasBusy());
    if (!retry) return r;
    last = std::move(r).error();
  }
  return std::move(last).WithContext("gave up after " + std::to_string(options_.max_attempts) +
                                     " attempts");
}

}  // namespace

Result<std::unique_ptr<Database>> OpenDatabase(const std::string& url, Options options) {
  try {
    if (options.pool_size < 1 || options.max_attempts < 1) {
      return Error(Errc::InvalidQuery, "options: pool_size and max_attempts must be at least 1");
    }
    if (url.find('\0') != std::string::npos) {
      return Error(Errc::InvalidUrl, "database URL contains a NUL byte");
    }
    if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
      UrlSecrets info = AnalyzeUrl(url);
      auto scrub = [secrets = info.secrets](std::string m) { return Scrub(std::move(m), secrets); };
      auto factory = internal::PostgresqlFactory(url, options, scrub);
      if (!factory) return std::move(factory).error();
      auto db = std::make_unique<PooledDatabase>(Backend::kPostgresql, std::move(options),
                                                 // nothrow: the error case returned just above
                                                 std::move(factory).value());
      if (auto r = db->Connect(); !r) return std::move(r).error().WithContext(info.redacted);
      return std::unique_ptr<Database>(std::move(db));
    }
    std::string path = url;
    if (url.starts_with("sqlite:")) {
      path = url.substr(7);
      if (path.starts_with("//")) {
        return Error(Errc::InvalidUrl, "write sqlite:PATH (sqlite:/var/lib/x.db), not sqlite://");
      }
    } else if (url.find("://") != std::string::npos) {
      return Error(Errc::InvalidUrl, "unknown database scheme in " + RedactUrl(url) +
                                         " (use sqlite:PATH, a file path, or postgresql://)");
    }
    if (path.empty()) return Error(Errc::InvalidUrl, "empty database path");
    if (path == ":memory:" || path.starts_with("file:")) {
      return Error(Errc::InvalidUrl,
                   "SQLite needs a plain file path (pooled connections share one file)");
    }
    auto factory = internal::SqliteFactory(path, options);
    if (!factory) return std::move(factory).error();
    auto db = std::make_unique<PooledDatabase>(Backend::kSqlite, std::move(options),
                                               // nothrow: the error case returned just above
                                               std::move(factory).value());
    if (auto r = db->Connect(); !r) return std::move(r).error().WithContext(path);
    return std::unique_ptr<Database>(std::move(db));
  } catch (const std::exception& e) {
    return FromException(e.what());
  }
}

}  // namespace upkeep::storage
