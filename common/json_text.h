#pragma once
// JSON text that does not throw on strings that are not UTF-8 (a trace attribute, a file name
// from the command line): invalid bytes become U+FFFD, so an output is written whole rather than
// failing after its companion files were written.
#include <nlohmann/json.hpp>
#include <string>

namespace kvsim {

inline std::string JsonText(const nlohmann::json& value, int indent = -1) {
  return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace kvsim
