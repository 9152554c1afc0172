#pragma once
// Reading a TOML file (sweep plans, serving scenarios) with the project's error shape.
#include <toml++/toml.h>

#include <filesystem>

namespace kvsim::analysis {

// The parsed file. Throws InputError naming the file, line and column if it cannot be read or is
// not valid TOML.
toml::table ParseTomlFile(const std::filesystem::path& path);

}  // namespace kvsim::analysis
