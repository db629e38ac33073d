// PostgreSQL backend through libpq: text-format results, bytea parameters in binary, SQLSTATE
// mapped to storage::Errc. A connection the server closed while idle is reconnected when the
// pool hands it out.

#include <libpq-fe.h>
#include <poll.h>

#include <charconv>
#include <cstring>
#include <memory>
#include <string>

#include "connection.hpp"
#include "upkeep/common/encoding.hpp"

namespace upkeep::storage::internal {
namespace {

using ResultPtr = std::unique_ptr<PGresult, decltype(&PQclear)>;
using Scrubber = std::function<std::string(std::string)>;

// PostgreSQL type OIDs (src/include/catalog/pg_type.dat), stable across versions.
constexpr Oid kBoolOid = 16;
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kInt2Oid = 21;
constexpr Oid kInt4Oid = 23;
constexpr Oid kOidOid = 26;
constexpr Oid kNumericOid = 1700;

Errc ErrcForSqlState(std::string_view state) {
  if (state.starts_with("23")) return Errc::Constraint;
  if (state == "40001" || state == "40P01") return Errc::Conflict;  // serialization, deadlock
  if (state.starts_with("08") || state.starts_with("53") || state.starts_with("57P") ||
      state == "57014" /* statement timeout */ || state == "55P03" /* lock not available */) {
    return Errc::Unavailable;
  }
  if (state.starts_with("22")) return Errc::InvalidValue;
  return Errc::InvalidQuery;
}

std::optional<std::int64_t> ParseInt(std::string_view s) {
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

class PgConnection final : public Connection {
 public:
  PgConnection(PGconn* conn, const Options& o, Scrubber scrub)
      : conn_(conn), statement_timeout_(o.statement_timeout), scrub_(std::move(scrub)) {}
  ~PgConnection() override { PQfinish(conn_); }
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Session settings, after every (re)connect.
  Result<void> Setup() {
    if (PQstatus(conn_) != CONNECTION_OK) {
      return Error(Errc::Unavailable, "cannot connect: " + ConnError());
    }
    // Notices ("relation already exists, skipping") are not errors: keep them off stderr.
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
    std::string sql = "SET client_min_messages = warning; SET bytea_output = 'hex';";
    if (statement_timeout_.count() > 0) {  // otherwise keep the server's or role's setting
      sql += " SET statement_timeout = " + std::to_string(statement_timeout_.count()) + ";";
    }
    return ExecScript(sql);
  }

  Result<std::int64_t> Exec(std::string_view sql, const Params& params) override {
    UPKEEP_ASSIGN_OR_RETURN(ResultPtr res, Run(sql, params));
    // The tag of a SELECT counts rows read, not changed (SQLite reports 0 for it too).
    if (std::strncmp(PQcmdStatus(res.get()), "SELECT", 6) == 0) return 0;
    return ParseInt(PQcmdTuples(res.get())).value_or(0);
  }

  Result<Rows> Query(std::string_view sql, const Params& params) override {
    UPKEEP_ASSIGN_OR_RETURN(ResultPtr res, Run(sql, params));
    PGresult* r = res.get();
    const int nrows = PQntuples(r);
    const int ncols = PQnfields(r);
    Rows rows;
    rows.reserve(static_cast<std::size_t>(nrows));
    for (int i = 0; i < nrows; ++i) {
      std::vector<Value> values;
      values.reserve(static_cast<std::size_t>(ncols));
      for (int j = 0; j < ncols; ++j) {
        UPKEEP_ASSIGN_OR_RETURN(Value v, Column(r, i, j));
        values.push_back(std::move(v));
      }
      rows.emplace_back(std::move(values));
    }
    return rows;
  }

  Result<void> ExecScript(std::string_view sql) override {
    if (sql.find('\0') != std::string_view::npos) {
      return Error(Errc::InvalidQuery, "SQL contains a NUL byte");
    }
    ResultPtr res(PQexec(conn_, std::string(sql).c_str()), &PQclear);
    return Check(res);
  }

  Result<void> Begin(TxIsolation isolation) override {
    return ExecScript(isolation == TxIsolation::kSerializable
                          ? "BEGIN ISOLATION LEVEL SERIALIZABLE"
                          : "BEGIN ISOLATION LEVEL READ COMMITTED");
  }

  Result<void> Commit() override {
    ResultPtr res(PQexec(conn_, "COMMIT"), &PQclear);
    UPKEEP_TRY(Check(res));
    // COMMIT of an aborted transaction "succeeds" with the tag ROLLBACK.
    if (std::strcmp(PQcmdStatus(res.get()), "COMMIT") != 0) {
      return Error(Errc::InvalidQuery, "transaction was aborted and rolled back");
    }
    return Ok();
  }

  void Rollback() override {
    if (PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) != PQTRANS_IDLE) {
      ResultPtr res(PQexec(conn_, "ROLLBACK"), &PQclear);
    }
  }

  // Detects a connection the server closed while it sat in the pool (restart, idle timeout,
  // pg_terminate_backend). An idle connection has nothing to read unless the server is going
  // away (its last words are a FATAL error, then EOF), so a readable socket means reconnect.
  Result<void> EnsureConnected() override {
    bool dead = PQstatus(conn_) != CONNECTION_OK;
    if (!dead) {
      pollfd pfd{PQsocket(conn_), POLLIN, 0};
      dead = pfd.fd < 0 || poll(&pfd, 1, 0) != 0;
    }
    if (!dead) return Ok();
    PQreset(conn_);
    return Setup();
  }

  bool Reusable() override {
    return PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) == PQTRANS_IDLE;
  }
  [[nodiscard]] bool LastErrorWasBusy() const override { return false; }

 private:
  std::string ConnError() const {
    std::string m = PQerrorMessage(conn_);
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    return scrub_(std::move(m));
  }

  Result<void> Check(const ResultPtr& res) const {
    if (!res || PQstatus(conn_) != CONNECTION_OK) {
      return Error(Errc::Unavailable, "connection lost: " + ConnError());
    }
    const ExecStatusType st = PQresultStatus(res.get());
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) return Ok();
    const char* state = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
    const char* primary = PQresultErrorField(res.get(), PG_DIAG_MESSAGE_PRIMARY);
    std::string message = primary ? primary : ConnError();
    if (state) message += std::string(" (SQLSTATE ") + state + ")";
    return Error(state ? ErrcForSqlState(state) : Errc::Unavailable, scrub_(std::move(message)));
  }

  Result<ResultPtr> Run(std::string_view sql, const Params& params) {
    if (sql.find('\0') != std::string_view::npos) {
      return Error(Errc::InvalidQuery, "SQL contains a NUL byte");
    }
    if (params.size() > 65535) return Error(Errc::InvalidQuery, "too many parameters");
    const std::size_t n = params.size();
    std::vector<std::string> ints(n);
    std::vector<Oid> types(n, 0);  // 0: the server infers the type from the statement
    std::vector<const char*> values(n, nullptr);
    std::vector<int> lengths(n, 0);
    std::vector<int> formats(n, 0);
    for (std::size_t i = 0; i < n; ++i) {
      const Value& v = params[i];
      if (const auto* x = std::get_if<std::int64_t>(&v)) {
        // Untyped like text: the server infers the type from the context (a bigint column, an
        // int function argument). A bare `SELECT $1` therefore reads back as text on
        // PostgreSQL; portable SQL writes CAST($1 AS BIGINT) there.
        ints[i] = std::to_string(*x);
        values[i] = ints[i].c_str();
      } else if (const auto* s = std::get_if<std::string>(&v)) {
        values[i] = s->c_str();  // UTF-8 without NUL (checked by the caller)
      } else if (const auto* b = std::get_if<Blob>(&v)) {
        if (b->bytes.size() > static_cast<std::size_t>(INT32_MAX)) {
          return Error(Errc::InvalidValue, "blob too large");
        }
        types[i] = kByteaOid;
        values[i] = b->bytes.data();
        lengths[i] = static_cast<int>(b->bytes.size());
        formats[i] = 1;  // binary: raw bytes
      }
    }
    ResultPtr res(PQexecParams(conn_, std::string(sql).c_str(), static_cast<int>(n), types.data(),
                               values.data(), lengths.data(), formats.data(), 0),
                  &PQclear);
    UPKEEP_TRY(Check(res));
    return res;
  }

  static Result<Value> Column(PGresult* r, int row, int col) {
    if (PQgetisnull(r, row, col)) return Value(nullptr);
    const std::string_view text(PQgetvalue(r, row, col),
                                static_cast<std::size_t>(PQgetlength(r, row, col)));
    switch (PQftype(r, col)) {
      case kInt8Oid:
      case kInt4Oid:
      case kInt2Oid:
      case kOidOid:
        if (auto v = ParseInt(text)) return Value(*v);
        return Error(Errc::TypeMismatch, "unparsable integer from the server");
      case kBoolOid:
        return Value(std::int64_t{text == "t" ? 1 : 0});
      case kNumericOid:
        if (auto v = ParseInt(text)) return Value(*v);
        return Value(std::string(text));
      case kByteaOid: {
        if (!text.starts_with("\\x")) return Error(Errc::TypeMismatch, "bytea not in hex form");
        auto bytes = HexDecode(text.substr(2));
        if (!bytes) return Error(Errc::TypeMismatch, "bytea not in hex form");
        return Value(Blob{std::string(bytes->begin(), bytes->end())});
      }
      default:
        return Value(std::string(text));
    }
  }

  PGconn* conn_;
  std::chrono::milliseconds statement_timeout_;
  Scrubber scrub_;
};

}  // namespace

Result<ConnectionFactory> PostgresqlFactory(const std::string& url, const Options& options,
                                            Scrubber scrub) {
  // Validate the URL without connecting: a malformed URL is InvalidUrl, not Unavailable.
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(url.c_str(), &err);
  if (parsed == nullptr) {
    std::string message = err ? err : "out of memory";
    PQfreemem(err);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    return Error(Errc::InvalidUrl, "invalid PostgreSQL URL: " + scrub(std::move(message)));
  }
  // libpq checks the port only when connecting; a malformed one is a URL error, not an outage.
  for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
    if (std::strcmp(o->keyword, "port") != 0 || o->val == nullptr) continue;
    std::string_view ports = o->val;
    while (!ports.empty()) {
      const std::string_view port = ports.substr(0, ports.find(','));
      ports.remove_prefix(std::min(ports.size(), port.size() + 1));
      const auto n = ParseInt(port);
      if (!port.empty() && (!n || *n < 1 || *n > 65535)) {
        PQconninfoFree(parsed);
        return Error(Errc::InvalidUrl, "invalid port in PostgreSQL URL");
      }
    }
  }
  PQconninfoFree(parsed);
  const std::string connect_timeout =
      std::to_string(std::max<std::int64_t>(options.connect_timeout.count(), 1));
  return ConnectionFactory(
      [url, options, scrub, connect_timeout]() -> Result<std::unique_ptr<Connection>> {
        // Later keywords override earlier ones: the URL may set connect_timeout; the client
        // encoding is always UTF-8.
        const char* keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                              "client_encoding", nullptr};
        const char* values[] = {connect_timeout.c_str(), "upkeep", url.c_str(), "UTF8", nullptr};
        PGconn* raw = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
        if (raw == nullptr) return Error(Errc::Internal, "out of memory");
        auto conn = std::make_unique<PgConnection>(raw, options, scrub);
        UPKEEP_TRY(conn->Setup());
        return std::unique_ptr<Connection>(std::move(conn));
      });
}

}  // namespace upkeep::storage::internal
