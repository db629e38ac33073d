#pragma once

// upkeep::Error: an error code from one library's `Errc` enum plus a human-readable message.
// Each library declares `enum class Errc` and registers it with UPKEEP_DECLARE_ERRC so that
// `error.code() == metadata::Errc::Expired` compares exactly in tests and callers.

#include <string>
#include <system_error>
#include <utility>

namespace upkeep {

class Error {
 public:
  Error() = default;
  Error(std::error_code code, std::string message) : code_(code), message_(std::move(message)) {}

  template <typename E>
    requires std::is_error_code_enum_v<E>
  Error(E code, std::string message)  // NOLINT(google-explicit-constructor)
      : code_(make_error_code(code)), message_(std::move(message)) {}

  [[nodiscard]] const std::error_code& code() const { return code_; }
  [[nodiscard]] const std::string& message() const { return message_; }

  // Prefixes the message with what was being done: "refresh: timestamp: expired ...".
  [[nodiscard]] Error WithContext(const std::string& context) const& {
    return Error(code_, context + ": " + message_);
  }
  [[nodiscard]] Error WithContext(const std::string& context) && {
    message_ = context + ": " + message_;
    return std::move(*this);
  }

  // "<category>.<code name>: message", the form printed by the command-line tools.
  [[nodiscard]] std::string ToString() const;

 private:
  std::error_code code_;
  std::string message_;
};

// Helper for libraries: a std::error_category whose names come from a function.
class NamedErrorCategory : public std::error_category {
 public:
  using NameFn = const char* (*)(int);
  NamedErrorCategory(const char* name, NameFn fn) : name_(name), fn_(fn) {}
  [[nodiscard]] const char* name() const noexcept override { return name_; }
  [[nodiscard]] std::string message(int value) const override { return fn_(value); }

 private:
  const char* name_;
  NameFn fn_;
};

}  // namespace upkeep

// Declares `make_error_code(ns::Errc)` and the std::is_error_code_enum specialisation.
// Use at global scope in the library's public header; define ns::ErrcCategory() in its .cpp.
#define UPKEEP_DECLARE_ERRC(ns)                                                  \
  namespace ns {                                                                 \
  const std::error_category& ErrcCategory() noexcept;                            \
  inline std::error_code make_error_code(Errc e) noexcept {                      \
    return {static_cast<int>(e), ErrcCategory()};                                \
  }                                                                              \
  }                                                                              \
  template <>                                                                    \
  struct std::is_error_code_enum<ns::Errc> : std::true_type {}
