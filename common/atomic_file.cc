#include "common/atomic_file.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <mutex>
#include <sstream>
#include <system_error>
#include <vector>

#include "common/error.h"

namespace kvsim {

namespace {

struct InputFiles {
  std::mutex mutex;
  bool protect = false;
  std::vector<std::filesystem::path> paths;
};

InputFiles& Inputs() {
  static InputFiles inputs;
  return inputs;
}

// Throws if `output` is one of this command's input files.
void CheckNotAnInput(const std::filesystem::path& output) {
  InputFiles& inputs = Inputs();
  std::lock_guard lock(inputs.mutex);
  if (!inputs.protect) return;
  for (const std::filesystem::path& input : inputs.paths) {
    std::error_code ec;
    if (std::filesystem::equivalent(output, input, ec) && !ec) {
      ThrowInputError(
          "{}: this output is also an input of the command ({}); writing it would destroy the "
          "input: choose another output path",
          output.string(), input.string());
    }
  }
}

// Temporary outputs alive now, for RemoveTemporaryFiles in a signal handler: fixed slots and
// atomics only (async-signal-safe), no allocation. A slot is 0 free, 1 being written, 2 live.
constexpr int kTempSlots = 64;
constexpr size_t kTempPathBytes = 4096;
std::atomic<int> g_temp_state[kTempSlots];
char g_temp_path[kTempSlots][kTempPathBytes];

int TrackTemporaryFile(const std::filesystem::path& path) {
  const std::string& text = path.native();
  if (text.size() >= kTempPathBytes) return -1;
  for (int slot = 0; slot < kTempSlots; ++slot) {
    int expected = 0;
    if (!g_temp_state[slot].compare_exchange_strong(expected, 1)) continue;
    std::memcpy(g_temp_path[slot], text.c_str(), text.size() + 1);
    g_temp_state[slot].store(2);
    return slot;
  }
  return -1;  // more than 64 outputs open at once: the others are not removed on a signal
}

void UntrackTemporaryFile(int slot) {
  if (slot >= 0) g_temp_state[slot].store(0);
}

extern "C" void RemoveTemporaryFilesAndDie(int signal);

}  // namespace

void RemoveTemporaryFiles() {
  for (int slot = 0; slot < kTempSlots; ++slot) {
    if (g_temp_state[slot].load() == 2) ::unlink(g_temp_path[slot]);
  }
}

namespace {
extern "C" void RemoveTemporaryFilesAndDie(int signal) {
  RemoveTemporaryFiles();
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}
}  // namespace

void RemoveTemporaryFilesOnSignals() {
  std::signal(SIGINT, RemoveTemporaryFilesAndDie);
  std::signal(SIGTERM, RemoveTemporaryFilesAndDie);
  std::signal(SIGHUP, RemoveTemporaryFilesAndDie);
}

void ProtectInputFiles(bool on) {
  std::lock_guard lock(Inputs().mutex);
  Inputs().protect = on;
}

void RegisterInputFile(const std::filesystem::path& path) {
  std::lock_guard lock(Inputs().mutex);
  if (Inputs().protect) Inputs().paths.push_back(path);
}

AtomicPath::AtomicPath(std::filesystem::path final_path) : final_path_(std::move(final_path)) {
  if (final_path_.empty()) ThrowInputError("output path is empty: expected a file name");
  CheckNotAnInput(final_path_);
  const auto parent =
      final_path_.has_parent_path() ? final_path_.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  if (!std::filesystem::is_directory(parent, ec)) {
    ThrowInputError("{}: output directory '{}' does not exist", final_path_.string(),
                    parent.string());
  }
  temp_path_ = final_path_;
  temp_path_ += fmt::format(".tmp.{}", static_cast<long>(::getpid()));
  temp_slot_ = TrackTemporaryFile(temp_path_);
}

AtomicPath::~AtomicPath() {
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(temp_path_, ec);  // best effort: never throw from a destructor
  }
  UntrackTemporaryFile(temp_slot_);
}

void AtomicPath::Commit() {
  std::error_code ec;
  std::filesystem::rename(temp_path_, final_path_, ec);
  if (ec) {
    ThrowInputError("{}: cannot move finished output into place: {}", final_path_.string(),
                    ec.message());
  }
  committed_ = true;
}

AtomicTextFile::AtomicTextFile(std::filesystem::path final_path) : path_(std::move(final_path)) {
  out_.open(path_.temp_path(), std::ios::binary | std::ios::trunc);
  if (!out_) ThrowInputError("{}: cannot open for writing", path_.final_path().string());
}

void AtomicTextFile::Commit() {
  out_.flush();
  if (!out_) ThrowInputError("{}: write failed", path_.final_path().string());
  out_.close();
  path_.Commit();
}

void WriteFileAtomically(const std::filesystem::path& path, const std::string& contents) {
  AtomicTextFile file(path);
  file.out() << contents;
  file.Commit();
}

std::string ReadFileToString(const std::filesystem::path& path) {
  RegisterInputFile(path);
  return ReadStateFile(path);
}

std::string ReadStateFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ThrowInputError("{}: cannot open for reading", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace kvsim
