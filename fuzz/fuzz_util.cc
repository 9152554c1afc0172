#include "fuzz/fuzz_util.h"

#include <unistd.h>

#include <filesystem>
#include <map>

namespace kvsim::fuzz {

namespace {

// One file per suffix; /dev/shm keeps the millions of rewrites off the disk.
std::map<std::string, std::string>& Paths() {
  static std::map<std::string, std::string> paths;
  return paths;
}

void RemoveFiles() {
  std::error_code ec;
  for (const auto& [suffix, path] : Paths()) std::filesystem::remove(path, ec);
}

}  // namespace

const std::string& WriteInput(const uint8_t* data, size_t size, const char* suffix) {
  auto [it, inserted] = Paths().try_emplace(suffix);
  if (inserted) {
    std::error_code ec;
    const std::filesystem::path dir = std::filesystem::is_directory("/dev/shm", ec)
                                          ? "/dev/shm"
                                          : std::filesystem::temp_directory_path();
    it->second = (dir / ("kvsim-fuzz-" + std::to_string(getpid()) + suffix)).string();
    if (Paths().size() == 1) std::atexit(RemoveFiles);
  }
  std::FILE* f = std::fopen(it->second.c_str(), "wb");
  if (f == nullptr) {
    std::perror(it->second.c_str());
    std::abort();
  }
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return it->second;
}

}  // namespace kvsim::fuzz
