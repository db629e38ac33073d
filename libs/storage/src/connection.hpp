#pragma once

// Internal: one backend connection, used by one thread at a time (the pool in database.cpp
// hands it out). Each backend implements this; everything else (pooling, parameter checks,
// transactions and retries) is shared.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/storage/database.hpp"

namespace upkeep::storage::internal {

enum class TxIsolation { kSerializable, kReadCommitted };

class Connection {
 public:
  virtual ~Connection() = default;
  // Statements (parameters already checked against the SQL by the caller).
  virtual Result<std::int64_t> Exec(std::string_view sql, const Params& params) = 0;
  virtual Result<Rows> Query(std::string_view sql, const Params& params) = 0;
  virtual Result<void> ExecScript(std::string_view sql) = 0;
  virtual Result<void> Begin(TxIsolation isolation) = 0;
  virtual Result<void> Commit() = 0;
  // Best effort; a connection left inside a transaction is not Reusable and gets closed.
  virtual void Rollback() = 0;
  // Called when borrowed from the pool: reconnects a connection the server has closed.
  virtual Result<void> EnsureConnected() = 0;
  // Whether the connection may go back to the pool (open and outside any transaction).
  virtual bool Reusable() = 0;
  // Whether the last failure was a lock held by another connection (SQLITE_BUSY/LOCKED):
  // running the transaction again may succeed.
  [[nodiscard]] virtual bool LastErrorWasBusy() const = 0;
};

using ConnectionFactory = std::function<Result<std::unique_ptr<Connection>>()>;

Result<ConnectionFactory> SqliteFactory(const std::string& path, const Options& options);
// scrub removes secrets (the URL's password) from a message.
Result<ConnectionFactory> PostgresqlFactory(const std::string& url, const Options& options,
                                            std::function<std::string(std::string)> scrub);

// Each $N in sql (outside quotes and comments) must be 1..count and each of 1..count must occur.
Result<void> CheckPlaceholders(std::string_view sql, std::size_t count);
// Text values must be UTF-8 without NUL bytes (the same rule on both backends).
Result<void> CheckValues(const Params& params);

}  // namespace upkeep::storage::internal
