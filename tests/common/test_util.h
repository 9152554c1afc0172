#pragma once
// Helpers shared by every test binary.
#include <filesystem>
#include <string>
#include <vector>

namespace kvsim::testing {

// A fresh directory under the system temp dir, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  // Names of the entries currently in the directory (to assert nothing was left behind).
  std::vector<std::string> Entries() const;

 private:
  std::filesystem::path path_;
};

struct CommandResult {
  int exit_code = 0;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs a shell command line and captures its exit code, stdout and stderr.
CommandResult RunCommand(const std::string& command_line);

// Runs the kvsim binary under test with `args` (already shell-quoted where needed).
CommandResult RunKvsim(const std::string& args);

// Quotes one argument for /bin/sh.
std::string ShellQuote(const std::string& arg);

}  // namespace kvsim::testing
