#include "analysis/plot_gnuplot.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <vector>

#include "common/atomic_file.h"
#include "common/error.h"

namespace kvsim::analysis {
namespace {

constexpr std::string_view kInstallHint =
    "install it with `sudo apt-get install gnuplot-nox` (or run scripts/install_deps.sh)";

// The first executable `gnuplot` on PATH, or an empty path.
std::filesystem::path FindGnuplot() {
  const char* path_env = std::getenv("PATH");
  std::string_view dirs = path_env != nullptr ? path_env : "";
  while (!dirs.empty()) {
    const std::size_t colon = dirs.find(':');
    const std::string_view dir = dirs.substr(0, colon);
    dirs = colon == std::string_view::npos ? std::string_view() : dirs.substr(colon + 1);
    if (dir.empty()) continue;
    const std::filesystem::path candidate = std::filesystem::path(dir) / "gnuplot";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

// A private directory inside the output directory (so the final renames stay on one file
// system), removed with everything left in it on destruction.
class StagingDir {
 public:
  StagingDir(const std::filesystem::path& out_dir, std::string_view name)
      : path_(out_dir / fmt::format(".{}.tmp.{}", name, static_cast<long>(::getpid()))) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    if (!std::filesystem::create_directory(path_, ec) || ec) {
      ThrowInputError("{}: cannot create a staging directory in the output directory: {}",
                      path_.string(), ec.message());
    }
  }
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;
  ~StagingDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);  // best effort: never throw from a destructor
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs `gnuplot script` with the staging directory as working directory and stdout/stderr
// captured in `log`. Returns the exit status (127: could not exec).
int RunGnuplot(const std::filesystem::path& gnuplot,
               const std::filesystem::path& work_dir,
               const std::string& script,
               const std::filesystem::path& log) {
  const pid_t pid = ::fork();
  if (pid < 0) ThrowInputError("cannot start gnuplot: fork failed");
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (log_fd < 0 || null_fd < 0 || ::chdir(work_dir.c_str()) != 0) ::_exit(127);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    std::array<char*, 3> argv = {const_cast<char*>("gnuplot"), const_cast<char*>(script.c_str()),
                                 nullptr};
    ::execv(gnuplot.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) ThrowInputError("cannot wait for gnuplot");
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

std::string Terminal(std::string_view terminal, const GnuplotFigure& figure) {
  // Fixed size and font: the same input must give the same bytes.
  return fmt::format(
      "set terminal {} size {},{} noenhanced font \"Sans,11\" background "
      "\"#ffffff\"\n",
      terminal, figure.width_px, figure.height_px);
}

}  // namespace

std::string GnuplotString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20) continue;
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out + "\"";
}

void RenderFigure(const GnuplotFigure& figure, const std::filesystem::path& out_dir) {
  const std::filesystem::path gnuplot = FindGnuplot();
  if (gnuplot.empty()) {
    ThrowInputError("gnuplot not found on PATH (kvsim draws its figures with it): {}",
                    kInstallHint);
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(out_dir, ec)) {
    ThrowInputError("{}: output directory does not exist", out_dir.string());
  }
  StagingDir staging(out_dir, figure.name);
  const std::string dat = figure.name + ".dat";
  const std::string png = figure.name + ".png";
  const std::string svg = figure.name + ".svg";
  WriteFileAtomically(staging.path() / dat, figure.data);

  // The body runs once per terminal (multiplot cannot be replotted); `reset` keeps the two runs
  // identical.
  std::string script = fmt::format("DATA = '{}'\n", dat);
  script += Terminal("pngcairo", figure) + fmt::format("set output '{}'\n", png);
  script += "reset\n" + figure.script + "\nunset output\n";
  script += Terminal("svg", figure) + fmt::format("set output '{}'\n", svg);
  script += "reset\n" + figure.script + "\nunset output\n";
  const std::string script_name = figure.name + ".gp";
  WriteFileAtomically(staging.path() / script_name, script);

  const std::filesystem::path log = staging.path() / "gnuplot.log";
  const int status = RunGnuplot(gnuplot, staging.path(), script_name, log);
  if (status != 0) {
    std::string log_text;
    if (std::filesystem::exists(log, ec)) log_text = ReadStateFile(log);
    if (log_text.size() > 2000) log_text = "..." + log_text.substr(log_text.size() - 2000);
    ThrowInputError(
        "gnuplot ({}) failed drawing figure '{}' (exit status {}); no image written. "
        "gnuplot said:\n{}",
        gnuplot.string(), figure.name, status, log_text);
  }
  for (const std::string& image : {png, svg}) {
    if (std::filesystem::file_size(staging.path() / image, ec) == 0 || ec) {
      ThrowInputError("gnuplot ({}) wrote an empty {} for figure '{}'; no image written",
                      gnuplot.string(), image, figure.name);
    }
  }
  std::vector<std::filesystem::path> moved;
  for (const std::string& file : {dat, svg, png}) {
    std::filesystem::rename(staging.path() / file, out_dir / file, ec);
    if (ec) {
      const std::string reason = ec.message();
      for (const auto& done : moved) std::filesystem::remove(done, ec);
      ThrowInputError("{}: cannot move the rendered figure into place: {}",
                      (out_dir / file).string(), reason);
    }
    moved.push_back(out_dir / file);
  }
}

}  // namespace kvsim::analysis
