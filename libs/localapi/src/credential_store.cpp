#include "upkeep/localapi/credential_store.hpp"

#include <argon2.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "upkeep/localapi/server.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::localapi {

namespace {

using metadata::Json;
using metadata::JsonReader;

constexpr std::size_t kSaltBytes = 16;
constexpr std::size_t kHashBytes = 32;
constexpr std::size_t kMaxEncodedBytes = 512;
constexpr char kAlphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";  // Crockford base32

Result<void> RandomBytes(void* out, std::size_t n) {
  auto* p = static_cast<unsigned char*>(out);
  std::size_t got = 0;
  for (int tries = 0; got < n && tries < 100; ++tries) {
    const ssize_t r = ::getrandom(p + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Error(Errc::InvalidCredentialStore, std::string("getrandom: ") + std::strerror(errno));
    }
    got += static_cast<std::size_t>(r);
  }
  if (got < n) return Error(Errc::InvalidCredentialStore, "getrandom: short read");
  return Ok();
}

Error StoreError(const std::string& what) { return Error(Errc::InvalidCredentialStore, what); }

}  // namespace

Result<CredentialStore> CredentialStore::Open(std::filesystem::path file, const Clock& clock,
                                              CredentialOptions options) {
  CredentialStore store(std::move(file), clock, options);
  const int fd = ::open(store.file_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return store;
    return StoreError(store.file_.string() + ": " + std::strerror(errno));
  }
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    return StoreError(store.file_.string() + ": not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) > kMaxCredentialFileBytes)
    return StoreError(store.file_.string() + ": too large");
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t r = ::read(fd, text.data() + got, text.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return StoreError(store.file_.string() + ": short read");
    got += static_cast<std::size_t>(r);
  }
  auto doc = metadata::ParseJson(text);
  if (!doc) return StoreError(store.file_.string() + ": " + doc.error().message());
  auto parse = [&]() -> Result<void> {
    UPKEEP_ASSIGN_OR_RETURN(JsonReader r,
                            JsonReader::Of(*doc, metadata::Errc::InvalidMetadata, ""));
    UPKEEP_ASSIGN_OR_RETURN(std::uint64_t version, r.Uint("version", {.min = 1, .max = 1}));
    (void)version;
    UPKEEP_ASSIGN_OR_RETURN(store.hash_, r.String("argon2id", {.max_length = kMaxEncodedBytes}));
    UPKEEP_ASSIGN_OR_RETURN(std::uint64_t failures, r.Uint("failures", {.max = 1u << 20}));
    store.failures_ = static_cast<std::uint32_t>(failures);
    UPKEEP_ASSIGN_OR_RETURN(std::optional<std::string> until,
                            r.OptionalString("locked_until", {.max_length = 32}));
    UPKEEP_TRY(r.NoUnknownKeys());
    if (store.hash_.rfind("$argon2id$", 0) != 0)
      return StoreError("argon2id: not an Argon2id hash");
    if (until) {
      store.locked_until_ = ParseTime(*until);
      if (!store.locked_until_) return StoreError("locked_until: not YYYY-MM-DDTHH:MM:SSZ");
    }
    return Ok();
  };
  if (auto r = parse(); !r) {
    return StoreError(store.file_.string() + ": " + r.error().message());
  }
  return store;
}

std::optional<Clock::TimePoint> CredentialStore::locked_until() const {
  if (locked_until_ && *locked_until_ > clock_->Now()) return locked_until_;
  return std::nullopt;
}

std::chrono::seconds CredentialStore::retry_after() const {
  const auto until = locked_until();
  return until ? std::chrono::duration_cast<std::chrono::seconds>(*until - clock_->Now())
               : std::chrono::seconds(0);
}

Result<std::string> CredentialStore::Hash(std::string_view credential) const {
  unsigned char salt[kSaltBytes];
  UPKEEP_TRY(RandomBytes(salt, sizeof salt));
  const std::size_t len =
      argon2_encodedlen(options_.t_cost, options_.m_cost_kib, options_.parallelism, kSaltBytes,
                        kHashBytes, Argon2_id);
  std::string encoded(len, '\0');
  const int rc = argon2id_hash_encoded(options_.t_cost, options_.m_cost_kib, options_.parallelism,
                                       credential.data(), credential.size(), salt, sizeof salt,
                                       kHashBytes, encoded.data(), encoded.size());
  if (rc != ARGON2_OK) return StoreError(std::string("argon2id: ") + argon2_error_message(rc));
  encoded.resize(std::strlen(encoded.c_str()));
  return encoded;
}

Result<std::string> CredentialStore::GenerateOnce() {
  if (has_credential()) return Error(Errc::AlreadySet, "a credential is set already");
  unsigned char raw[20];
  UPKEEP_TRY(RandomBytes(raw, sizeof raw));
  std::string credential;
  for (std::size_t i = 0; i < sizeof raw; ++i) {
    if (i > 0 && i % 5 == 0) credential += '-';
    // 256 is a multiple of 32: no bias.
    credential += kAlphabet[raw[i] % 32u];
  }
  UPKEEP_TRY(Set(credential));
  return credential;
}

Result<void> CredentialStore::Set(std::string_view credential) {
  if (credential.size() < kMinCredentialBytes || credential.size() > kMaxCredentialBytes ||
      !metadata::IsValidUtf8(credential)) {
    return Error(Errc::InvalidArgument, "a credential has 12 to 1024 bytes of UTF-8");
  }
  UPKEEP_ASSIGN_OR_RETURN(std::string hash, Hash(credential));
  const std::string old_hash = hash_;
  const std::uint32_t old_failures = failures_;
  const auto old_until = locked_until_;
  hash_ = std::move(hash);
  failures_ = 0;
  locked_until_.reset();
  if (auto r = Save(); !r) {
    hash_ = old_hash;
    failures_ = old_failures;
    locked_until_ = old_until;
    return r;
  }
  return Ok();
}

Result<void> CredentialStore::Verify(std::string_view attempt) {
  const auto now = clock_->Now();
  if (locked_until_ && *locked_until_ > now) {
    return Error(Errc::LockedOut, "locked until " + FormatTime(*locked_until_));
  }
  bool ok = false;
  if (has_credential() && attempt.size() <= kMaxCredentialBytes) {
    ok = argon2id_verify(hash_.c_str(), attempt.data(), attempt.size()) == ARGON2_OK;
  }
  if (ok) {
    if (failures_ != 0 || locked_until_) {
      failures_ = 0;
      locked_until_.reset();
      UPKEEP_TRY(Save());
    }
    return Ok();
  }
  if (failures_ < (1u << 20)) ++failures_;
  if (failures_ >= options_.free_attempts) {
    const std::uint32_t over = failures_ - options_.free_attempts;
    std::chrono::seconds lock = options_.max_lockout;
    if (over < 31) {
      const auto scaled = options_.base_lockout * (std::int64_t{1} << over);
      if (scaled < options_.max_lockout) lock = scaled;
    }
    locked_until_ = now + lock;
  }
  UPKEEP_TRY(Save());
  return Error(Errc::Unauthenticated, "wrong credential");
}

Result<void> CredentialStore::Save() const {
  Json j = Json::object();
  j["version"] = 1;
  j["argon2id"] = hash_;
  j["failures"] = failures_;
  if (locked_until_) j["locked_until"] = FormatTime(*locked_until_);
  const std::string text = metadata::DumpJson(j) + "\n";
  const std::string tmp = file_.string() + ".tmp";
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return StoreError(tmp + ": " + std::strerror(errno));
  UniqueFd owned(fd);
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t w = ::write(fd, text.data() + done, text.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      ::unlink(tmp.c_str());
      return StoreError(tmp + ": write failed");
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0 || ::rename(tmp.c_str(), file_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return StoreError(file_.string() + ": " + why);
  }
  return Ok();
}

}  // namespace upkeep::localapi
