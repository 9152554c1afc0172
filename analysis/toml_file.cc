#include "analysis/toml_file.h"

#include "common/atomic_file.h"
#include "common/error.h"

namespace kvsim::analysis {

toml::table ParseTomlFile(const std::filesystem::path& path) {
  try {
    return toml::parse(ReadFileToString(path), path.string());
  } catch (const toml::parse_error& e) {
    ThrowInputError("{}:{}:{}: not valid TOML: {}", path.string(), e.source().begin.line,
                    e.source().begin.column, e.description());
  }
}

}  // namespace kvsim::analysis
