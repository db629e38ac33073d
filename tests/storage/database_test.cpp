// libs/storage: one typed suite runs against SQLite (a file in a temporary directory) and
// PostgreSQL (the cluster pg_virtualenv starts for the storage_test_postgresql ctest entry; the
// PostgreSQL cases skip when no server is configured). Backend-specific behaviour follows.

#include "upkeep/storage/database.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "postgresql_env.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/common/encoding.hpp"

namespace upkeep::storage {
namespace {

using namespace std::chrono_literals;

using testing::PostgresqlBaseUrl;

// EXPECT_ERRC for places where ASSERT cannot return (transaction bodies).
template <typename R>
::testing::AssertionResult HasErrc(const R& r, Errc errc) {
  if (r) return ::testing::AssertionFailure() << "succeeded, expected an error";
  if (r.error().code() != errc) return ::testing::AssertionFailure() << r.error().ToString();
  return ::testing::AssertionSuccess();
}

constexpr const char* kNoPostgresql =
    "no PostgreSQL server: run under pg_virtualenv (ctest -R storage_test_postgresql) or set "
    "UPKEEP_TEST_POSTGRESQL_URL";

// A fresh SQLite database file per test.
struct SqliteBackend {
  static constexpr const char* kName = "Sqlite";
  static std::optional<std::string> SkipReason() { return std::nullopt; }
  SqliteBackend() : url("sqlite:" + (dir / "upkeep.db").string()) {}
  testing::TempDir dir;
  std::string url;
};

// A fresh schema per test in the test server's database (search_path set through the URL).
struct PostgresqlBackend {
  static constexpr const char* kName = "Postgresql";
  static std::optional<std::string> SkipReason() {
    if (!PostgresqlBaseUrl()) return kNoPostgresql;
    return std::nullopt;
  }
  PostgresqlBackend() {
    static std::atomic<int> counter{0};
    schema = "upkeep_test_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
    const std::string base = *PostgresqlBaseUrl();
    auto admin = OpenDatabase(base);
    if (!admin) ADD_FAILURE() << admin.error().ToString();
    if (admin) {
      EXPECT_TRUE((*admin)->Exec("CREATE SCHEMA " + schema));
    }
    url = base + (base.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" +
          schema;
  }
  ~PostgresqlBackend() {
    if (auto admin = OpenDatabase(*PostgresqlBaseUrl())) {
      (void)(*admin)->Exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE");
    }
  }
  std::string schema;
  std::string url;
};

template <typename B>
class DatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = B::SkipReason()) GTEST_SKIP() << *why;
    backend_.emplace();
    db_ = Open();
    ASSERT_NE(db_, nullptr);
  }

  std::unique_ptr<Database> Open(Options options = {}) {
    auto db = OpenDatabase(backend_->url, std::move(options));
    EXPECT_TRUE(db) << db.error().ToString();
    return db ? std::move(db).value() : nullptr;
  }

  void Create(std::string_view sql) { ASSERT_TRUE(db_->Exec(sql)) << sql; }

  std::optional<B> backend_;
  std::unique_ptr<Database> db_;
};

struct BackendNames {
  template <typename T>
  static std::string GetName(int) {
    return T::kName;
  }
};
using Backends = ::testing::Types<SqliteBackend, PostgresqlBackend>;
TYPED_TEST_SUITE(DatabaseTest, Backends, BackendNames);

constexpr std::string_view kItems =
    "CREATE TABLE items (id BIGINT PRIMARY KEY, n BIGINT, s TEXT, b BYTEA)";

TYPED_TEST(DatabaseTest, RoundTripsEachValueTypeAndNull) {
  this->Create(kItems);
  Database& db = *this->db_;
  ASSERT_TRUE(db.Exec("INSERT INTO items (id, n, s, b) VALUES ($1, $2, $3, $4)",
                      {std::int64_t{1}, std::int64_t{-9007199254740993}, std::string("héllo"),
                       Blob{std::string("\x00\x01\xff", 3)}}));
  ASSERT_TRUE(db.Exec("INSERT INTO items (id, n, s, b) VALUES ($1, $2, $3, $4)",
                      {std::int64_t{2}, nullptr, nullptr, nullptr}));
  ASSERT_TRUE(db.Exec("INSERT INTO items (id, n, s, b) VALUES ($1, $2, $3, $4)",
                      {std::int64_t{3}, std::int64_t{0}, std::string(), Blob{}}));
  auto rows = db.Query("SELECT id, n, s, b FROM items ORDER BY id");
  ASSERT_TRUE(rows) << rows.error().ToString();
  ASSERT_EQ(rows->size(), 3u);
  const Row& r1 = (*rows)[0];
  EXPECT_EQ(r1.Get<std::int64_t>(0).value(), 1);
  EXPECT_EQ(r1.Get<std::int64_t>(1).value(), -9007199254740993);
  EXPECT_EQ(r1.Get<std::string>(2).value(), "héllo");
  EXPECT_EQ(r1.Get<Blob>(3).value().bytes, std::string("\x00\x01\xff", 3));
  const Row& r2 = (*rows)[1];
  EXPECT_EQ(r2.Get<std::optional<std::int64_t>>(1).value(), std::nullopt);
  EXPECT_EQ(r2.Get<std::optional<std::string>>(2).value(), std::nullopt);
  EXPECT_EQ(r2.Get<std::optional<Blob>>(3).value(), std::nullopt);
  EXPECT_ERRC(r2.Get<std::int64_t>(1), Errc::TypeMismatch);
  EXPECT_ERRC(r2.Get<std::string>(2), Errc::TypeMismatch);
  const Row& r3 = (*rows)[2];  // empty text and empty bytes are not NULL
  EXPECT_EQ(r3.Get<std::optional<std::string>>(2).value(), std::string());
  EXPECT_EQ(r3.Get<std::optional<Blob>>(3).value(), Blob{});
  EXPECT_EQ(r3.Get<std::optional<std::int64_t>>(1).value(), 0);
  // Wrong type and out-of-range column are errors, not exceptions.
  EXPECT_ERRC(r1.Get<std::string>(0), Errc::TypeMismatch);
  EXPECT_ERRC(r1.Get<Blob>(2), Errc::TypeMismatch);
  EXPECT_ERRC(r1.Get<std::int64_t>(4), Errc::InvalidQuery);
}

TYPED_TEST(DatabaseTest, UpdatesAndDeletesReportAffectedRows) {
  this->Create(kItems);
  Database& db = *this->db_;
  for (std::int64_t i = 1; i <= 3; ++i) {
    ASSERT_EQ(db.Exec("INSERT INTO items (id, n) VALUES ($1, $2)", {i, i * 10}).value(), 1);
  }
  EXPECT_EQ(db.Exec("UPDATE items SET s = $1 WHERE n >= $2", {std::string("x"), std::int64_t{20}})
                .value(),
            2);
  EXPECT_EQ(db.Exec("DELETE FROM items WHERE id = $1", {std::int64_t{1}}).value(), 1);
  EXPECT_EQ(db.Exec("SELECT id FROM items").value(), 0);  // reads change nothing
  auto count = db.Query("SELECT COUNT(*), SUM(n) FROM items WHERE s = $1", {std::string("x")});
  ASSERT_TRUE(count) << count.error().ToString();
  EXPECT_EQ((*count)[0].Get<std::int64_t>(0).value(), 2);  // aggregates read as integers
  EXPECT_EQ((*count)[0].Get<std::int64_t>(1).value(), 50);
  // A placeholder inside a string literal is text, not a parameter.
  auto lit = db.Query("SELECT '$1', CAST($1 AS BIGINT)", {std::int64_t{7}});
  ASSERT_TRUE(lit) << lit.error().ToString();
  EXPECT_EQ((*lit)[0].Get<std::string>(0).value(), "$1");
  EXPECT_EQ((*lit)[0].Get<std::int64_t>(1).value(), 7);
}

// A statement runs again (prepared once per connection) with fresh parameters every time: no
// value of one call leaks into the next, a failed run leaves nothing behind, and a statement
// still works after the table under it was dropped and made again.
TYPED_TEST(DatabaseTest, RepeatedStatementsTakeFreshParametersAndSurviveSchemaChanges) {
  this->Create(kItems);
  Database& db = *this->db_;
  const std::string insert = "INSERT INTO items (id, n, s) VALUES ($1, $2, $3)";
  ASSERT_TRUE(db.Exec(insert, {std::int64_t{1}, std::int64_t{10}, std::string("a")}));
  ASSERT_TRUE(db.Exec(insert, {std::int64_t{2}, nullptr, nullptr}));
  EXPECT_ERRC(db.Exec(insert, {std::int64_t{1}, std::int64_t{0}, std::string("dup")}),
              Errc::Constraint);
  ASSERT_TRUE(db.Exec(insert, {std::int64_t{3}, std::int64_t{30}, std::string("c")}));
  const std::string select = "SELECT n, s FROM items WHERE id = $1";
  auto second = db.Query(select, {std::int64_t{2}});
  ASSERT_TRUE(second);
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ((*second)[0].Get<std::optional<std::int64_t>>(0).value(), std::nullopt);
  EXPECT_EQ((*second)[0].Get<std::optional<std::string>>(1).value(), std::nullopt);
  EXPECT_EQ(db.Query(select, {std::int64_t{3}}).value()[0].Get<std::int64_t>(0).value(), 30);
  ASSERT_TRUE(db.ExecScript("DROP TABLE items"));
  this->Create(kItems);
  ASSERT_TRUE(db.Exec(insert, {std::int64_t{9}, std::int64_t{90}, std::string("z")}));
  EXPECT_EQ(db.Query(select, {std::int64_t{9}}).value()[0].Get<std::int64_t>(0).value(), 90);
  EXPECT_TRUE(db.Query(select, {std::int64_t{1}}).value().empty());
}

// Parameters and placeholders must match one to one, on both backends.
TYPED_TEST(DatabaseTest, RejectsParameterCountMismatch) {
  this->Create(kItems);
  Database& db = *this->db_;
  EXPECT_ERRC(db.Exec("INSERT INTO items (id, n) VALUES ($1, $2)", {std::int64_t{1}}),
              Errc::InvalidQuery);
  EXPECT_ERRC(db.Exec("INSERT INTO items (id) VALUES ($1)", {std::int64_t{1}, std::int64_t{2}}),
              Errc::InvalidQuery);
  EXPECT_ERRC(db.Query("SELECT id FROM items WHERE id = ?", {std::int64_t{1}}), Errc::InvalidQuery);
  EXPECT_ERRC(db.Query("SELECT id FROM items WHERE id = $0"), Errc::InvalidQuery);
  EXPECT_ERRC(db.Query("SELEC nonsense"), Errc::InvalidQuery);
  EXPECT_EQ(db.Query("SELECT COUNT(*) FROM items").value()[0].Get<std::int64_t>(0).value(), 0);
}

// Exec and Query run exactly one statement, so an injected "; DROP TABLE" cannot run.
TYPED_TEST(DatabaseTest, RejectsSecondStatementInExec) {
  this->Create(kItems);
  Database& db = *this->db_;
  EXPECT_ERRC(db.Exec("INSERT INTO items (id) VALUES (1); DROP TABLE items"), Errc::InvalidQuery);
  EXPECT_TRUE(db.Query("SELECT COUNT(*) FROM items"));
  EXPECT_TRUE(db.Exec("INSERT INTO items (id) VALUES (1); -- trailing comment"));
}

// Duplicate and dangling keys are Constraint, the code idempotent inserts rely on.
TYPED_TEST(DatabaseTest, UniqueAndForeignKeyViolationsAreConstraint) {
  this->Create(kItems);
  this->Create(
      "CREATE TABLE refs (id BIGINT PRIMARY KEY, item BIGINT NOT NULL REFERENCES items(id))");
  Database& db = *this->db_;
  ASSERT_TRUE(db.Exec("INSERT INTO items (id) VALUES ($1)", {std::int64_t{1}}));
  EXPECT_ERRC(db.Exec("INSERT INTO items (id) VALUES ($1)", {std::int64_t{1}}), Errc::Constraint);
  EXPECT_ERRC(db.Exec("INSERT INTO refs (id, item) VALUES (1, $1)", {std::int64_t{99}}),
              Errc::Constraint);
  EXPECT_ERRC(db.Exec("INSERT INTO refs (id, item) VALUES (1, $1)", {nullptr}), Errc::Constraint);
  EXPECT_EQ(db.Exec("INSERT INTO items (id) VALUES ($1) ON CONFLICT DO NOTHING", {std::int64_t{1}})
                .value(),
            0);
}

TYPED_TEST(DatabaseTest, CommitsAndReturnsTheBodysValue) {
  this->Create(kItems);
  Database& db = *this->db_;
  Result<std::int64_t> r = db.InTransaction([](Tx& tx) -> Result<std::int64_t> {
    UPKEEP_TRY(tx.Exec("INSERT INTO items (id, n) VALUES (1, 41)"));
    UPKEEP_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT n + 1 FROM items WHERE id = 1"));
    return rows.at(0).Get<std::int64_t>(0);
  });
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(*r, 42);
  EXPECT_EQ(db.Query("SELECT id FROM items").value().size(), 1u);
}

// A body that fails leaves nothing behind, and its error comes back unchanged.
TYPED_TEST(DatabaseTest, RollsBackWhenBodyFails) {
  this->Create(kItems);
  Database& db = *this->db_;
  Result<void> r = db.InTransaction([](Tx& tx) -> Result<void> {
    UPKEEP_TRY(tx.Exec("INSERT INTO items (id) VALUES (1)"));
    return Error(Errc::InvalidValue, "caller's own error");
  });
  EXPECT_ERRC(r, Errc::InvalidValue);
  EXPECT_TRUE(db.Query("SELECT id FROM items").value().empty());
}

// A body that ignores a failed statement and returns success still rolls back (PostgreSQL
// would; SQLite is made to behave the same).
TYPED_TEST(DatabaseTest, RollsBackWhenBodySwallowsAStatementError) {
  this->Create(kItems);
  Database& db = *this->db_;
  Result<void> r = db.InTransaction([](Tx& tx) -> Result<void> {
    UPKEEP_TRY(tx.Exec("INSERT INTO items (id) VALUES (1)"));
    (void)tx.Exec("INSERT INTO items (id) VALUES (1)");  // Constraint, ignored
    EXPECT_TRUE(HasErrc(tx.Exec("INSERT INTO items (id) VALUES (2)"), Errc::Constraint));
    return Ok();
  });
  EXPECT_ERRC(r, Errc::Constraint);
  EXPECT_TRUE(db.Query("SELECT id FROM items").value().empty());
}

// Using the Database inside its own transaction body would need a second connection and
// could deadlock on the write lock; it is refused instead.
TYPED_TEST(DatabaseTest, RefusesDatabaseUseInsideTransactionBody) {
  this->Create(kItems);
  Database& db = *this->db_;
  Result<void> r = db.InTransaction([&db](Tx&) -> Result<void> {
    EXPECT_TRUE(HasErrc(db.Exec("INSERT INTO items (id) VALUES (1)"), Errc::InvalidQuery));
    EXPECT_TRUE(
        HasErrc(db.InTransaction([](Tx&) -> Result<void> { return Ok(); }), Errc::InvalidQuery));
    return Ok();
  });
  EXPECT_TRUE(r) << r.error().ToString();
  EXPECT_TRUE(db.Exec("INSERT INTO items (id) VALUES (1)"));  // fine again afterwards
}

// Two threads doing read-modify-write increments lose no update: contention is either waited
// out (SQLite) or detected and retried (PostgreSQL SERIALIZABLE).
TYPED_TEST(DatabaseTest, ConcurrentIncrementsAreExact) {
  this->Create("CREATE TABLE counter (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)");
  ASSERT_TRUE(this->db_->Exec("INSERT INTO counter (id, n) VALUES (1, 0)"));
  Options options;
  options.max_attempts = 200;
  options.retry_base_delay = 1ms;
  options.retry_max_delay = 20ms;
  std::unique_ptr<Database> db = this->Open(options);
  ASSERT_NE(db, nullptr);
  constexpr int kPerThread = 25;
  std::atomic<int> failures{0};
  auto work = [&] {
    for (int i = 0; i < kPerThread; ++i) {
      Result<void> r = db->InTransaction([](Tx& tx) -> Result<void> {
        UPKEEP_ASSIGN_OR_RETURN(Rows rows, tx.Query("SELECT n FROM counter WHERE id = 1"));
        UPKEEP_ASSIGN_OR_RETURN(std::int64_t n, rows.at(0).Get<std::int64_t>(0));
        UPKEEP_TRY(tx.Exec("UPDATE counter SET n = $1 WHERE id = 1", {n + 1}));
        return Ok();
      });
      if (!r) {
        ADD_FAILURE() << r.error().ToString();
        ++failures;
      }
    }
  };
  std::thread a(work);
  std::thread b(work);
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  auto rows = db->Query("SELECT n FROM counter WHERE id = 1");
  ASSERT_TRUE(rows);
  EXPECT_EQ((*rows)[0].Get<std::int64_t>(0).value(), 2 * kPerThread);
}

// Retries stop after max_attempts, with backoff through the injected sleeper, never forever.
TYPED_TEST(DatabaseTest, RetriesConflictsBoundedTimes) {
  std::vector<std::chrono::milliseconds> sleeps;
  Options options;
  options.max_attempts = 4;
  options.retry_base_delay = 10ms;
  options.retry_max_delay = 15ms;
  options.sleeper = [&sleeps](std::chrono::milliseconds d) { sleeps.push_back(d); };
  std::unique_ptr<Database> db = this->Open(options);
  ASSERT_NE(db, nullptr);
  int calls = 0;
  Result<void> r = db->InTransaction([&calls](Tx&) -> Result<void> {
    ++calls;
    return Error(Errc::Conflict, "could not serialize (simulated)");
  });
  EXPECT_ERRC(r, Errc::Conflict);
  EXPECT_EQ(calls, 4);
  ASSERT_EQ(sleeps.size(), 3u);
  for (auto d : sleeps) EXPECT_LE(d, options.retry_max_delay);  // the cap, never more
  // Errors that another attempt cannot fix are not retried.
  calls = 0;
  EXPECT_ERRC(db->InTransaction([&calls](Tx&) -> Result<void> {
    ++calls;
    return Error(Errc::Constraint, "duplicate");
  }),
              Errc::Constraint);
  EXPECT_EQ(calls, 1);
}

// Text must be UTF-8 without NUL on both backends; any bytes round-trip as a Blob; large
// values round-trip intact.
TYPED_TEST(DatabaseTest, RoundTripsHugeTextAndArbitraryBytes) {
  this->Create(kItems);
  Database& db = *this->db_;
  std::string huge(4 << 20, 'a');
  for (std::size_t i = 0; i < huge.size(); i += 4097) huge[i] = static_cast<char>('b' + i % 20);
  std::string bytes;
  for (int rep = 0; rep < 4096; ++rep) {
    for (int c = 0; c < 256; ++c) bytes.push_back(static_cast<char>(c));
  }
  bytes += "\xc3\x28\xed\xa0\x80\xf8";  // invalid UTF-8 sequences
  ASSERT_TRUE(db.Exec("INSERT INTO items (id, s, b) VALUES (1, $1, $2)", {huge, Blob{bytes}}));
  auto rows = db.Query("SELECT s, b FROM items WHERE id = 1");
  ASSERT_TRUE(rows) << rows.error().ToString();
  EXPECT_TRUE((*rows)[0].Get<std::string>(0).value() == huge);
  EXPECT_TRUE((*rows)[0].Get<Blob>(1).value().bytes == bytes);

  EXPECT_ERRC(db.Exec("INSERT INTO items (id, s) VALUES (2, $1)", {std::string("\xc3\x28")}),
              Errc::InvalidValue);
  EXPECT_ERRC(db.Exec("INSERT INTO items (id, s) VALUES (2, $1)", {std::string("a\0b", 3)}),
              Errc::InvalidValue);
  EXPECT_ERRC(db.Exec("INSERT INTO items (id, s) VALUES (2, $1)", {std::string("\xed\xa0\x80")}),
              Errc::InvalidValue);  // a UTF-16 surrogate encoded as UTF-8
}

constexpr Migration kMigrations[] = {
    {1, "devices", "CREATE TABLE devices (id TEXT PRIMARY KEY, created BIGINT NOT NULL);"},
    {2, "releases",
     "CREATE TABLE releases (id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE);\n"
     "CREATE INDEX releases_by_name ON releases (name);"},
    {3, "device tags", "ALTER TABLE devices ADD COLUMN tag TEXT;"},
};

TYPED_TEST(DatabaseTest, MigratesOnceAndRerunIsNoOp) {
  Database& db = *this->db_;
  EXPECT_EQ(SchemaVersion(db).value(), 0);
  ASSERT_TRUE(Migrate(db, std::span(kMigrations).first(2)));
  EXPECT_EQ(SchemaVersion(db).value(), 2);
  ASSERT_TRUE(db.Exec("INSERT INTO devices (id, created) VALUES ($1, 5)", {std::string("d1")}));
  auto again = Migrate(db, std::span(kMigrations).first(2));
  ASSERT_TRUE(again) << again.error().ToString();
  ASSERT_TRUE(Migrate(db, kMigrations));
  EXPECT_EQ(SchemaVersion(db).value(), 3);
  ASSERT_TRUE(Migrate(db, kMigrations));
  auto rows = db.Query("SELECT id, tag FROM devices");
  ASSERT_TRUE(rows) << rows.error().ToString();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].Get<std::optional<std::string>>(1).value(), std::nullopt);
  auto recorded = db.Query("SELECT version, name FROM schema_migrations ORDER BY version");
  ASSERT_TRUE(recorded);
  ASSERT_EQ(recorded->size(), 3u);
  EXPECT_EQ((*recorded)[2].Get<std::string>(1).value(), "device tags");
}

// A program older than the database must not run against it (it would misread the schema).
TYPED_TEST(DatabaseTest, RefusesSchemaNewerThanProgram) {
  Database& db = *this->db_;
  ASSERT_TRUE(Migrate(db, kMigrations));
  EXPECT_ERRC(Migrate(db, std::span(kMigrations).first(2)), Errc::SchemaTooNew);
  EXPECT_ERRC(Migrate(db, std::span<const Migration>()), Errc::SchemaTooNew);
  // A recorded number the list lacks is refused too.
  const Migration gap[] = {kMigrations[0], kMigrations[2]};
  EXPECT_ERRC(Migrate(db, gap), Errc::MigrationFailed);
  const Migration unordered[] = {kMigrations[1], kMigrations[0]};
  EXPECT_ERRC(Migrate(db, unordered), Errc::MigrationFailed);
}

// A failing migration leaves neither its partial schema nor its record behind.
TYPED_TEST(DatabaseTest, FailedMigrationRollsBack) {
  Database& db = *this->db_;
  const Migration broken[] = {
      kMigrations[0],
      {2, "broken", "CREATE TABLE half (x BIGINT); CREATE TABLE oops (;"},
  };
  EXPECT_ERRC(Migrate(db, broken), Errc::MigrationFailed);
  EXPECT_EQ(SchemaVersion(db).value(), 1);
  EXPECT_ERRC(db.Query("SELECT x FROM half"), Errc::InvalidQuery);
  EXPECT_TRUE(db.Query("SELECT id FROM devices"));
}

// Two server processes starting at once apply each migration exactly once.
TYPED_TEST(DatabaseTest, ConcurrentMigratorsApplyEachMigrationOnce) {
  std::vector<Migration> many(kMigrations, kMigrations + 3);
  std::vector<std::string> sqls;
  for (int i = 4; i <= 12; ++i)
    sqls.push_back("CREATE TABLE t" + std::to_string(i) + " (x BIGINT);");
  for (int i = 4; i <= 12; ++i) many.push_back({i, "table", sqls[static_cast<std::size_t>(i - 4)]});
  std::vector<std::unique_ptr<Database>> dbs;
  for (int i = 0; i < 2; ++i) dbs.push_back(this->Open());
  ASSERT_NE(dbs[0], nullptr);
  ASSERT_NE(dbs[1], nullptr);
  std::vector<Result<void>> results(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    const auto k = static_cast<std::size_t>(i);
    threads.emplace_back([&, k] { results[k] = Migrate(*dbs[k], many); });
  }
  for (auto& t : threads) t.join();
  for (auto& r : results) EXPECT_TRUE(r) << r.error().ToString();
  Result<Rows> count = this->db_->Query("SELECT COUNT(*), MAX(version) FROM schema_migrations");
  ASSERT_TRUE(count);
  EXPECT_EQ((*count)[0].Get<std::int64_t>(0).value(), 12);
  EXPECT_EQ((*count)[0].Get<std::int64_t>(1).value(), 12);
}

// ---- URLs and connection failures (no server needed) ----

TEST(OpenDatabaseTest, RejectsInvalidUrls) {
  for (const char* url : {"", "mysql://db/x", "sqlite:", "sqlite://relative.db",
                          ":memory:", "sqlite::memory:", "file:x.db?mode=memory",
                          "postgresql://host:notaport/db", "postgresql://h/db?nosuchoption=1"}) {
    EXPECT_ERRC(OpenDatabase(url), Errc::InvalidUrl);
  }
}

// No message carries the password, even when the URL around it is malformed.
TEST(OpenDatabaseTest, ErrorsNeverContainThePassword) {
  auto r = OpenDatabase("postgresql://user:%zzhunter2@localhost/db");
  EXPECT_ERRC(r, Errc::InvalidUrl);
  EXPECT_EQ(r.error().message().find("hunter2"), std::string::npos) << r.error().message();
  auto q = OpenDatabase("postgresql://user@h/db?password=hunter2&port=x");
  EXPECT_ERRC(q, Errc::InvalidUrl);
  EXPECT_EQ(q.error().message().find("hunter2"), std::string::npos) << q.error().message();
  EXPECT_EQ(RedactUrl("postgresql://u:hunter2@db.example:5432/upkeep?sslmode=require"),
            "postgresql://u:***@db.example:5432/upkeep?sslmode=require");
  EXPECT_EQ(RedactUrl("postgres://u@h/d?password=hunter2"), "postgres://u@h/d?password=***");
}

// A closed port is Unavailable (refused), reported by OpenDatabase, without the password.
TEST(OpenDatabaseTest, UnreachablePostgresqlIsUnavailable) {
  // A bound socket that never listens: connecting to it is refused.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string url =
      "postgresql://upkeep:hunter2@127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) +
      "/upkeep?connect_timeout=5";
  Options options;
  options.connect_timeout = 2s;
  auto r = OpenDatabase(url, options);
  ::close(fd);
  EXPECT_ERRC(r, Errc::Unavailable);
  EXPECT_EQ(r.error().message().find("hunter2"), std::string::npos) << r.error().message();
}

// ---- SQLite specifics ----

TEST(SqliteTest, UsesWalFullSyncAndForeignKeys) {
  testing::TempDir dir;
  auto db = OpenDatabase((dir / "a.db").string());  // a plain path means SQLite
  ASSERT_TRUE(db) << db.error().ToString();
  EXPECT_EQ((*db)->backend(), Backend::kSqlite);
  EXPECT_EQ((*db)->Query("PRAGMA journal_mode").value()[0].Get<std::string>(0).value(), "wal");
  EXPECT_EQ((*db)->Query("PRAGMA synchronous").value()[0].Get<std::int64_t>(0).value(), 2);
  EXPECT_EQ((*db)->Query("PRAGMA foreign_keys").value()[0].Get<std::int64_t>(0).value(), 1);
}

// Another process holding the write lock beyond busy_timeout gives Unavailable, after bounded
// retries, never a hang.
TEST(SqliteTest, LockHeldBeyondBusyTimeoutIsUnavailable) {
  testing::TempDir dir;
  const std::string path = (dir / "a.db").string();
  std::vector<std::chrono::milliseconds> sleeps;
  Options options;
  options.busy_timeout = 50ms;
  options.max_attempts = 3;
  options.sleeper = [&sleeps](std::chrono::milliseconds d) { sleeps.push_back(d); };
  auto db = OpenDatabase("sqlite:" + path, options);
  ASSERT_TRUE(db) << db.error().ToString();
  ASSERT_TRUE((*db)->Exec("CREATE TABLE t (x BIGINT)"));

  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  EXPECT_ERRC((*db)->Exec("INSERT INTO t (x) VALUES (1)"), Errc::Unavailable);
  int calls = 0;
  EXPECT_ERRC((*db)->InTransaction([&calls](Tx& tx) -> Result<void> {
    ++calls;
    return tx.Exec("INSERT INTO t (x) VALUES (1)").and_then([](std::int64_t) { return Ok(); });
  }),
              Errc::Unavailable);
  EXPECT_EQ(calls, 0);  // BEGIN IMMEDIATE never got the lock
  EXPECT_EQ(sleeps.size(), 2u);
  // Readers are not blocked by the writer (WAL).
  EXPECT_TRUE((*db)->Query("SELECT COUNT(*) FROM t"));
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  EXPECT_TRUE((*db)->Exec("INSERT INTO t (x) VALUES (1)"));
}

// ---- PostgreSQL specifics ----

std::unique_ptr<Database> OpenPostgresqlOrSkip(Options options = {}) {
  auto base = PostgresqlBaseUrl();
  if (!base) return nullptr;
  auto db = OpenDatabase(*base, std::move(options));
  EXPECT_TRUE(db) << db.error().ToString();
  return db ? std::move(db).value() : nullptr;
}

// A connection the server closed while idle in the pool is replaced on next use.
TEST(PostgresqlTest, ReconnectsAfterServerClosesConnection) {
  if (!PostgresqlBaseUrl()) GTEST_SKIP() << kNoPostgresql;
  Options one;
  one.pool_size = 1;
  auto db = OpenPostgresqlOrSkip(one);
  auto admin = OpenPostgresqlOrSkip();
  ASSERT_TRUE(db && admin);
  EXPECT_EQ(db->backend(), Backend::kPostgresql);
  const std::int64_t pid =
      db->Query("SELECT pg_backend_pid()").value()[0].Get<std::int64_t>(0).value();
  ASSERT_TRUE(admin->Query("SELECT pg_terminate_backend($1)", {pid}));
  // Wait (with a deadline) until the server process is gone.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  for (;;) {
    auto n = admin->Query("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1", {pid});
    ASSERT_TRUE(n);
    if ((*n)[0].Get<std::int64_t>(0).value() == 0) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    std::this_thread::sleep_for(10ms);
  }
  // The server drops a backend from pg_stat_activity just before the process closes its
  // socket and exits; give it that moment.
  std::this_thread::sleep_for(100ms);
  auto again = db->Query("SELECT pg_backend_pid()");
  ASSERT_TRUE(again) << again.error().ToString();
  EXPECT_NE((*again)[0].Get<std::int64_t>(0).value(), pid);
}

// statement_timeout bounds a runaway statement: Unavailable, and the connection stays usable.
TEST(PostgresqlTest, StatementTimeoutIsUnavailable) {
  if (!PostgresqlBaseUrl()) GTEST_SKIP() << kNoPostgresql;
  Options options;
  options.statement_timeout = 100ms;
  options.pool_size = 1;
  auto db = OpenPostgresqlOrSkip(options);
  ASSERT_NE(db, nullptr);
  EXPECT_ERRC(db->Query("SELECT pg_sleep(10)"), Errc::Unavailable);
  EXPECT_TRUE(db->Query("SELECT 1"));
}

}  // namespace
}  // namespace upkeep::storage
