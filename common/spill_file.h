#pragma once
// An anonymous temporary file that holds arrays a long computation must keep but does not need
// in memory until later (a sweep's finished layers' metric samples: issue 11's memory bound).
// The file is unlinked as soon as it is created, so nothing is left behind however the process
// ends, and it lives in $TMPDIR (else /tmp). Values round-trip byte for byte.
//
// Thread-safety: Write and Read may run concurrently from several threads (pwrite/pread at
// offsets reserved under an atomic counter).
#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace kvsim {

class SpillFile {
 public:
  // Where one written array lives in the file.
  struct Extent {
    int64_t offset = 0;
    int64_t bytes = 0;
  };

  // Throws InputError naming the folder if the file cannot be created.
  SpillFile();
  ~SpillFile();
  SpillFile(const SpillFile&) = delete;
  SpillFile& operator=(const SpillFile&) = delete;

  template <class T>
  Extent Write(std::span<const T> values) {
    static_assert(std::is_trivially_copyable_v<T>);
    return WriteBytes(values.data(), static_cast<int64_t>(values.size_bytes()));
  }
  template <class T>
  std::vector<T> Read(Extent extent) const {
    static_assert(std::is_trivially_copyable_v<T>);
    std::vector<T> values(static_cast<size_t>(extent.bytes) / sizeof(T));
    ReadBytes(extent, values.data());
    return values;
  }

  int64_t bytes_written() const { return end_.load(); }

 private:
  // Throw InputError naming the folder (a full disk, an I/O error).
  Extent WriteBytes(const void* data, int64_t bytes);
  void ReadBytes(Extent extent, void* out) const;

  int fd_ = -1;
  std::string dir_;
  std::atomic<int64_t> end_{0};
};

}  // namespace kvsim
