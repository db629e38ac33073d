#pragma once

// The outer edge of every upkeep program. Libraries return errors as values and never let an
// exception escape, but a program must not abort even if one does (out of memory, a bug): the
// person or script that ran it gets a message and an exit code, never a core dump.

#include <functional>
#include <ostream>
#include <string_view>

namespace upkeep {

// Runs `body` and returns its exit code. An exception escaping it is reported on `err` as
// "<program>: internal error: <what>" and `internal_exit` is returned instead.
[[nodiscard]] int GuardMain(std::string_view program, std::ostream& err, int internal_exit,
                            const std::function<int()>& body) noexcept;

}  // namespace upkeep
