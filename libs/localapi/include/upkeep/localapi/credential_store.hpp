#pragma once

// The per-device credential of the local API's LAN listener (EN 303 645 5.1-1, 5.1-5):
// - there is no default: GenerateOnce() makes a random credential on first start and returns it
//   once, to be shown or printed; Set() stores one the user chose;
// - only an Argon2id hash (random salt, parameters in the encoded string) is stored, in a 0600
//   file written atomically; the plaintext is never written;
// - Verify() compares in constant time (libargon2) and counts failures: after
//   `free_attempts` consecutive failures every further failure locks the store for
//   base_lockout * 2^(failures - free_attempts), at most max_lockout, on the given Clock. While
//   locked, Verify answers Errc::LockedOut without looking at the attempt. The count and the
//   lockout are persisted, so a restart does not reset them. A success resets them.
//
// Not thread-safe: the owner serialises calls.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/localapi/backend.hpp"

namespace upkeep::localapi {

struct CredentialOptions {
  // Argon2id cost: iterations, memory in KiB, lanes (RFC 9106's second recommended setting is
  // t=3, m=64 MiB, p=4).
  std::uint32_t t_cost = 3;
  std::uint32_t m_cost_kib = 64 * 1024;
  std::uint32_t parallelism = 1;
  std::uint32_t free_attempts = 5;
  std::chrono::seconds base_lockout{30};
  std::chrono::seconds max_lockout{std::chrono::hours(1)};
};

inline constexpr std::size_t kMinCredentialBytes = 12;
inline constexpr std::size_t kMaxCredentialBytes = 1024;
inline constexpr std::uint64_t kMaxCredentialFileBytes = 64 * 1024;

class CredentialStore {
 public:
  // Reads `file` if it exists (Errc::InvalidCredentialStore when malformed or unreadable).
  [[nodiscard]] static Result<CredentialStore> Open(std::filesystem::path file, const Clock& clock,
                                                    CredentialOptions options = {});

  [[nodiscard]] bool has_credential() const { return !hash_.empty(); }
  [[nodiscard]] std::uint32_t failures() const { return failures_; }
  [[nodiscard]] std::optional<Clock::TimePoint> locked_until() const;
  // Seconds until the lockout ends (0 when not locked).
  [[nodiscard]] std::chrono::seconds retry_after() const;

  // A new random credential (20 characters of Crockford base32, 100 bits, grouped by 5),
  // stored hashed and returned this once. Errc::AlreadySet when one exists.
  [[nodiscard]] Result<std::string> GenerateOnce();
  // Replaces the credential (the caller authorised the change by other means) and clears the
  // failure count. Errc::InvalidArgument for fewer than 12 or more than 1024 bytes or invalid
  // UTF-8.
  [[nodiscard]] Result<void> Set(std::string_view credential);
  // Ok, or Errc::Unauthenticated (wrong, or none set), or Errc::LockedOut.
  [[nodiscard]] Result<void> Verify(std::string_view attempt);

 private:
  CredentialStore(std::filesystem::path file, const Clock& clock, CredentialOptions options)
      : file_(std::move(file)), clock_(&clock), options_(options) {}
  [[nodiscard]] Result<void> Save() const;
  [[nodiscard]] Result<std::string> Hash(std::string_view credential) const;

  std::filesystem::path file_;
  const Clock* clock_;
  CredentialOptions options_;
  std::string hash_;  // argon2id encoded form; empty when none
  std::uint32_t failures_ = 0;
  std::optional<Clock::TimePoint> locked_until_;
};

}  // namespace upkeep::localapi
