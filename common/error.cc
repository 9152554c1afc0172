#include "common/error.h"

namespace kvsim {

void FailAssert(const char* expr, const char* file, int line, const std::string& msg) {
  throw InternalError(fmt::format("kvsim internal error at {}:{}: ({}) {}", file, line, expr, msg));
}

}  // namespace kvsim
