#pragma once
// Error conventions (see README "Errors"):
//  - InputError: the user's fault (bad file, bad argument). The message names the file or
//    argument, the field, the value found and what was expected. `main` prints it and exits 2.
//  - KVSIM_ASSERT: a kvsim bug (an invariant broke). Throws InternalError so tests can catch it;
//    `main` prints it and exits 3. Never used to check user input.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace kvsim {

class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// Throws InputError with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void ThrowInputError(fmt::format_string<Args...> format, Args&&... args) {
  throw InputError(fmt::format(format, std::forward<Args>(args)...));
}

[[noreturn]] void FailAssert(const char* expr, const char* file, int line, const std::string& msg);

}  // namespace kvsim

#define KVSIM_ASSERT(cond, ...)                                                              \
  do {                                                                                       \
    if (!(cond)) ::kvsim::FailAssert(#cond, __FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)
