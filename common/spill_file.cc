#include "common/spill_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/error.h"

namespace kvsim {

SpillFile::SpillFile() {
  const char* tmpdir = std::getenv("TMPDIR");
  dir_ = tmpdir != nullptr && tmpdir[0] != '\0' ? tmpdir : "/tmp";
  std::string name = dir_ + "/kvsim-spill-XXXXXX";
  fd_ = mkstemp(name.data());
  if (fd_ < 0) {
    ThrowInputError("cannot create a temporary spill file in '{}' ($TMPDIR): {}", dir_,
                    std::strerror(errno));
  }
  unlink(name.c_str());  // anonymous from now on: the space returns when the file is closed
}

SpillFile::~SpillFile() {
  if (fd_ >= 0) close(fd_);
}

SpillFile::Extent SpillFile::WriteBytes(const void* data, int64_t bytes) {
  const Extent extent{end_.fetch_add(bytes), bytes};
  const auto* p = static_cast<const char*>(data);
  int64_t done = 0;
  while (done < bytes) {
    const ssize_t n = pwrite(fd_, p + done, static_cast<size_t>(bytes - done),
                             static_cast<off_t>(extent.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ThrowInputError("cannot write {} bytes to the temporary spill file in '{}' ($TMPDIR): {}",
                      bytes, dir_, n < 0 ? std::strerror(errno) : "no space written");
    }
    done += n;
  }
  return extent;
}

void SpillFile::ReadBytes(Extent extent, void* out) const {
  auto* p = static_cast<char*>(out);
  int64_t done = 0;
  while (done < extent.bytes) {
    const ssize_t n = pread(fd_, p + done, static_cast<size_t>(extent.bytes - done),
                            static_cast<off_t>(extent.offset + done));
    if (n < 0 && errno == EINTR) continue;
    KVSIM_ASSERT(n > 0, "reading back {} bytes at {} of the spill file in '{}': {}", extent.bytes,
                 extent.offset, dir_, n < 0 ? std::strerror(errno) : "end of file");
    done += n;
  }
}

}  // namespace kvsim
