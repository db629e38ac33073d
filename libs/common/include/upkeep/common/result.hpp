#pragma once

// upkeep::Result<T>: the value or an upkeep::Error. Member names follow std::expected
// (has_value, value, error, value_or, and_then, transform) so that a later switch to
// std::expected is an alias change. See docs/adr/0001-result-type.md.

#include <cstdlib>
#include <type_traits>
#include <utility>
#include <variant>

#include "upkeep/common/error.hpp"

namespace upkeep {

// Wraps an Error for returning from a function whose return type is Result<T>.
class Unexpected {
 public:
  explicit Unexpected(Error e) : error_(std::move(e)) {}
  template <typename E>
    requires std::is_error_code_enum_v<E>
  Unexpected(E code, std::string message) : error_(code, std::move(message)) {}
  [[nodiscard]] Error& error() & { return error_; }
  [[nodiscard]] Error&& error() && { return std::move(error_); }

 private:
  Error error_;
};

namespace detail {
[[noreturn]] void ResultAccessFailed(const Error& e) noexcept;
}  // namespace detail

template <typename T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  Result() requires std::is_default_constructible_v<T> : storage_(std::in_place_index<0>) {}
  Result(const T& v) : storage_(std::in_place_index<0>, v) {}             // NOLINT
  Result(T&& v) : storage_(std::in_place_index<0>, std::move(v)) {}       // NOLINT
  template <typename U>
    requires(std::is_constructible_v<T, U &&> && !std::is_same_v<std::decay_t<U>, T> &&
             !std::is_same_v<std::decay_t<U>, Unexpected> &&
             !std::is_same_v<std::decay_t<U>, Error> && !std::is_same_v<std::decay_t<U>, Result>)
  Result(U&& v) : storage_(std::in_place_index<0>, T(std::forward<U>(v))) {}  // NOLINT
  Result(Unexpected u) : storage_(std::in_place_index<1>, std::move(u).error()) {}  // NOLINT
  Result(Error e) : storage_(std::in_place_index<1>, std::move(e)) {}               // NOLINT

  [[nodiscard]] bool has_value() const { return storage_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  [[nodiscard]] T& value() & { Check(); return std::get<0>(storage_); }
  [[nodiscard]] const T& value() const& { Check(); return std::get<0>(storage_); }
  [[nodiscard]] T&& value() && { Check(); return std::get<0>(std::move(storage_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  [[nodiscard]] const Error& error() const& { return std::get<1>(storage_); }
  [[nodiscard]] Error&& error() && { return std::get<1>(std::move(storage_)); }

  template <typename U>
  [[nodiscard]] T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(storage_) : static_cast<T>(std::forward<U>(fallback));
  }

  // f: T -> Result<U>
  template <typename F>
  auto and_then(F&& f) const& -> std::invoke_result_t<F, const T&> {
    if (!has_value()) return error();
    return std::forward<F>(f)(std::get<0>(storage_));
  }
  template <typename F>
  auto and_then(F&& f) && -> std::invoke_result_t<F, T&&> {
    if (!has_value()) return std::move(*this).error();
    return std::forward<F>(f)(std::get<0>(std::move(storage_)));
  }
  // f: T -> U
  template <typename F>
  auto transform(F&& f) const& -> Result<std::invoke_result_t<F, const T&>> {
    if (!has_value()) return error();
    return std::forward<F>(f)(std::get<0>(storage_));
  }

 private:
  void Check() const {
    if (!has_value()) detail::ResultAccessFailed(std::get<1>(storage_));
  }
  std::variant<T, Error> storage_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;
  Result() = default;
  Result(Unexpected u) : error_(std::move(u).error()), ok_(false) {}  // NOLINT
  Result(Error e) : error_(std::move(e)), ok_(false) {}               // NOLINT

  [[nodiscard]] bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  void value() const {
    if (!ok_) detail::ResultAccessFailed(error_);
  }
  [[nodiscard]] const Error& error() const& { return error_; }
  [[nodiscard]] Error&& error() && { return std::move(error_); }

  template <typename F>
  auto and_then(F&& f) const -> std::invoke_result_t<F> {
    if (!ok_) return error_;
    return std::forward<F>(f)();
  }

 private:
  Error error_;
  bool ok_ = true;
};

// Success value for Result<void>.
inline Result<void> Ok() { return {}; }

}  // namespace upkeep

// Evaluates a Result-returning expression and returns its error from the enclosing function.
#define UPKEEP_TRY(expr)                                   \
  do {                                                     \
    if (auto upkeep_try_r_ = (expr); !upkeep_try_r_) {     \
      return ::upkeep::Unexpected(std::move(upkeep_try_r_).error()); \
    }                                                      \
  } while (false)

#define UPKEEP_CONCAT_INNER_(a, b) a##b
#define UPKEEP_CONCAT_(a, b) UPKEEP_CONCAT_INNER_(a, b)
// UPKEEP_ASSIGN_OR_RETURN(auto x, Expr()); declares x from the value or returns the error.
#define UPKEEP_ASSIGN_OR_RETURN(decl, expr) \
  UPKEEP_ASSIGN_OR_RETURN_IMPL_(UPKEEP_CONCAT_(upkeep_r_, __LINE__), decl, expr)
#define UPKEEP_ASSIGN_OR_RETURN_IMPL_(tmp, decl, expr)                  \
  auto tmp = (expr);                                                    \
  if (!tmp) return ::upkeep::Unexpected(std::move(tmp).error());        \
  decl = std::move(tmp).value()
