#pragma once
// Output files are written to `<path>.tmp.<pid>` and renamed over `path` only on Commit()
// (leveldb's temp-then-rename), so a failure never leaves a half-written output behind.
#include <filesystem>
#include <fstream>
#include <string>

namespace kvsim {

// Picks a temporary sibling of `final_path` and, unless committed, deletes it on destruction.
class AtomicPath {
 public:
  explicit AtomicPath(std::filesystem::path final_path);
  AtomicPath(const AtomicPath&) = delete;
  AtomicPath& operator=(const AtomicPath&) = delete;
  ~AtomicPath();

  // Where to write. Its directory is the final path's, so the rename stays on one file system.
  const std::filesystem::path& temp_path() const { return temp_path_; }
  const std::filesystem::path& final_path() const { return final_path_; }
  // Renames the temporary file over the final path. Throws InputError if that fails.
  void Commit();
  bool committed() const { return committed_; }

 private:
  std::filesystem::path final_path_;
  std::filesystem::path temp_path_;
  bool committed_ = false;
  int temp_slot_ = -1;  // in the table RemoveTemporaryFiles reads
};

// Removes every temporary output still open (async-signal-safe), for a process ended by a
// signal, where no destructor runs. RemoveTemporaryFilesOnSignals installs a SIGINT / SIGTERM /
// SIGHUP handler that calls it and then dies of the signal as before (the CLI installs it).
void RemoveTemporaryFiles();
void RemoveTemporaryFilesOnSignals();

// A text output file written atomically: stream into `out()`, then Commit().
class AtomicTextFile {
 public:
  explicit AtomicTextFile(std::filesystem::path final_path);
  std::ofstream& out() { return out_; }
  // Flushes, checks the stream and renames. Throws InputError naming the path on failure.
  void Commit();

 private:
  AtomicPath path_;
  std::ofstream out_;
};

// Writes `contents` to `path` atomically.
void WriteFileAtomically(const std::filesystem::path& path, const std::string& contents);

// Reads a whole input file (RegisterInputFile); throws InputError naming the path if it cannot
// be read.
std::string ReadFileToString(const std::filesystem::path& path);
// Reads a file this process also writes (a journal, a log): not registered as an input.
std::string ReadStateFile(const std::filesystem::path& path);

// Output == input protection. The CLI (one command per process) turns it on; readers of user
// inputs (traces, models, request files, CSVs, configs) register their paths; an AtomicPath whose
// final path is the same file as a registered input (same device and inode, whatever the
// spelling) throws InputError instead of replacing the input. Off by default, so library users
// and tests that rewrite a file they read are not affected. Thread-safe.
void ProtectInputFiles(bool on);
void RegisterInputFile(const std::filesystem::path& path);

}  // namespace kvsim
