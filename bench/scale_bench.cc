// Replay at the seeds' scale (issue 11): runs the `kvsim` binary on Llama-3-8B-shaped synthetic
// traces and prints, per case, wall and CPU time, peak RSS, FLOPs of the full-attention pass and
// of the prompt statistics, the effective GFLOP/s and its ratio to an Eigen float GEMM measured in
// this same run (1 thread and all threads), and the sweep-to-one-replay ratio. It drives the CLI
// (fork + exec, rusage of the child) so the same bench measures any build, e.g. an older one:
//   kvsim_scale_bench --kvsim build/kvsim --cases i,ii --workdir /tmp/kvsim-scale
// Cases (traces are generated once into --workdir and reused):
//   i    2 layers, 2048 prompt + 128 decode: full, h2o@512, a 12-cell sweep and every policy x 8
//        budgets
//   ii   1 layer, 32768 + 4096: streaming@1024; and 32768 + 8192 to show RSS does not grow
//   iii  4 layers, 8192 + 8192 (a reasoning-length decode): full and h2o@1024
//   iv   32 layers, 32768 + 2048: every policy x 8 budgets (after `kvsim stats`); hours here
//   iv1  case iv on one layer, with the 32-layer estimate (layers run one after another)
//   layers  peak RSS of every policy x 8 budgets over 1 and 4 layers (it must not grow)
//   policies  each policy's 8 budgets alone on case iv's layer shape with a 64-step decode: what
//        each policy adds to the peak RSS of one full replay, and its time (where case iv's
//        memory and hours go)
// Speed figures are ratios to the same-run GEMM because the machines are shared; the load
// average is printed beside them. Prints figures; never asserts on time.
#include <fmt/core.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>
#include <unistd.h>

#include <Eigen/Dense>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct RunStats {
  double wall = 0.0;
  double cpu = 0.0;
  double peak_rss_gb = 0.0;
  int status = 0;
};

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

// Runs argv to completion with stdout sent to /dev/null; wall time, user+sys CPU and max RSS.
RunStats Run(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const auto start = std::chrono::steady_clock::now();
  std::fflush(stdout);  // the child must not inherit (and print again) buffered output
  const pid_t pid = fork();
  if (pid == 0) {
    if (freopen("/dev/null", "w", stdout) == nullptr) _exit(127);
    execv(args[0], args.data());
    _exit(127);
  }
  RunStats stats;
  struct rusage usage {};
  wait4(pid, &stats.status, 0, &usage);
  stats.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats.cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
              1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
  stats.peak_rss_gb = static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);
  return stats;
}

// Eigen float GEMM (n x n times n x n), best of a few runs; with threads > 1 the output columns
// are split over TBB workers (Eigen itself is single-threaded here).
double GemmGflops(int threads) {
  const int n = 1024;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n);
  Eigen::MatrixXf b = Eigen::MatrixXf::Random(n, n);
  Eigen::MatrixXf c(n, n);
  double best = 0.0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    tbb::parallel_for(0, threads, [&](int part) {
      const int begin = n * part / threads;
      const int end = n * (part + 1) / threads;
      c.middleCols(begin, end - begin).noalias() = a * b.middleCols(begin, end - begin);
    });
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 2.0 * n * n * static_cast<double>(n) / s / 1e9);
  }
  return best;
}

struct Shape {
  int layers;
  int64_t prompt;
  int64_t decode;
};
constexpr int kQHeads = 32;
constexpr int kHeadDim = 128;

// Full-cache pass: q.K and weights.V for every decode step over every visible position.
double FullPassFlops(const Shape& s) {
  double visible = 0.0;
  for (int64_t t = s.prompt; t < s.prompt + s.decode; ++t) visible += static_cast<double>(t + 1);
  return 4.0 * kQHeads * visible * kHeadDim * s.layers;
}
// Prompt statistics (H2O column sums): causal q.K over the prompt.
double PromptStatsFlops(const Shape& s) {
  const auto n = static_cast<double>(s.prompt);
  return 2.0 * kQHeads * n * (n + 1.0) / 2.0 * kHeadDim * s.layers;
}

class Bench {
 public:
  Bench(std::string kvsim, fs::path workdir, int threads)
      : kvsim_(std::move(kvsim)), workdir_(std::move(workdir)), threads_(threads) {
    fs::create_directories(workdir_);
    gemm1_ = GemmGflops(1);
    gemm_all_ = GemmGflops(threads_);
    fmt::print("scale_bench: {}  threads {}  load average {}\n", kvsim_, threads_, LoadAverage());
    fmt::print(
        "Eigen float GEMM (same flags, this run): {:.1f} GFLOP/s on 1 thread, {:.1f} on {}\n",
        gemm1_, gemm_all_, threads_);
    has_stats_ = Run({kvsim_, "stats", "--help"}).status == 0;
    fmt::print("{:<6} {:<34} {:>8} {:>8} {:>8} {:>10} {:>9} {:>9} {:>8}\n", "case", "run", "wall s",
               "cpu s", "rss GB", "GFLOP", "GFLOP/s", "vs GEMM", "load");
  }

  std::string Trace(const Shape& s) {
    const fs::path path =
        workdir_ / fmt::format("llama3-8b_L{}_{}+{}.h5", s.layers, s.prompt, s.decode);
    if (!fs::exists(path)) {
      const RunStats st =
          Run({kvsim_, "synth", "--shape", "llama-3-8b", "--layers", std::to_string(s.layers),
               "--prompt", std::to_string(s.prompt), "--decode", std::to_string(s.decode),
               "--scenario", "mixed", "-o", path.string()});
      fmt::print("{:<6} {:<34} {:>8.1f} {:>8.1f} {:>8.2f}   ({:.0f} MB written, exit {})\n", "",
                 "synth " + path.filename().string(), st.wall, st.cpu, st.peak_rss_gb,
                 static_cast<double>(fs::exists(path) ? fs::file_size(path) : 0) / 1e6,
                 WEXITSTATUS(st.status));
    }
    return path.string();
  }

  // One run; `flops` is the work the run must do at least (full pass, plus prompt statistics
  // when its policy needs them); returns the wall time.
  RunStats Measure(const std::string& label,
                   const std::string& what,
                   const std::vector<std::string>& args,
                   double flops) {
    std::vector<std::string> argv = {kvsim_};
    argv.insert(argv.end(), args.begin(), args.end());
    if (args.front() == "replay" || args.front() == "sweep") {
      argv.push_back("--threads");
      argv.push_back(std::to_string(threads_));
    }
    const RunStats st = Run(argv);
    const double rate = flops / st.wall / 1e9;
    fmt::print("{:<6} {:<34} {:>8.1f} {:>8.1f} {:>8.2f} {:>10.0f} {:>9.1f} {:>9.2f} {:>8}{}\n",
               label, what, st.wall, st.cpu, st.peak_rss_gb, flops / 1e9, rate, rate / gemm_all_,
               LoadAverage().substr(0, 4),
               st.status == 0 ? "" : fmt::format("  (exit {})", WEXITSTATUS(st.status)));
    std::fflush(stdout);
    return st;
  }

  std::vector<std::string> Replay(const std::string& trace,
                                  const std::string& policy,
                                  const std::string& budget) {
    return {"replay", "--trace", trace, "--policy", policy, "--budget", budget};
  }
  std::vector<std::string> Sweep(const std::string& trace,
                                 const std::vector<std::string>& policies,
                                 const std::vector<std::string>& budgets) {
    // A fresh folder per sweep: a sweep resumes from the journal it finds in --out.
    const fs::path out = workdir_ / "sweep_out";
    fs::remove_all(out);
    fs::create_directories(out);
    std::vector<std::string> args = {"sweep", "--trace", trace, "--out", out.string()};
    for (const std::string& p : policies) args.insert(args.end(), {"--policy", p});
    for (const std::string& b : budgets) args.insert(args.end(), {"--budget", b});
    return args;
  }

  void Flops(const char* label, const Shape& s) {
    fmt::print(
        "{:<6} {} layers, {} + {}: full-attention pass {:.0f} GFLOP, prompt statistics "
        "{:.0f} GFLOP\n",
        label, s.layers, s.prompt, s.decode, FullPassFlops(s) / 1e9, PromptStatsFlops(s) / 1e9);
  }

  // Runs `kvsim stats` where the build has it (its FLOPs: the prompt statistics); returns the
  // FLOPs a later replay no longer does.
  double Stats(const char* label, const std::string& trace, const Shape& s) {
    if (!has_stats_) return 0.0;
    Measure(label, "stats (prompt statistics)", {"stats", "--force", trace}, PromptStatsFlops(s));
    return PromptStatsFlops(s);
  }

  void CaseI() {
    const Shape s{2, 2048, 128};
    Flops("i", s);
    const std::string t = Trace(s);
    const double full = FullPassFlops(s);
    const double stats = PromptStatsFlops(s);
    const RunStats one = Measure("i", "replay full", Replay(t, "full", "512"), full);
    Measure("i", "replay h2o@512", Replay(t, "h2o", "512"), full + stats);
    const double saved = Stats("i", t, s);
    if (saved > 0) Measure("i", "replay h2o@512 (stats kept)", Replay(t, "h2o", "512"), full);
    const RunStats sweep =
        Measure("i", "sweep 4 policies x 3 budgets",
                Sweep(t, {"streaming", "h2o", "tova", "snapkv"}, {"128", "256", "512"}),
                full + stats - saved);
    fmt::print("{:<6} sweep (12 cells) / one full replay: {:.2f}\n", "i", sweep.wall / one.wall);
    const RunStats all =
        Measure("i", "sweep all x 8 budgets",
                Sweep(t, {"all"}, {"64", "128", "256", "512", "1024", "0.25p", "0.5p", "0.75p"}),
                full + stats - saved);
    fmt::print("{:<6} sweep (all x 8) / one full replay: {:.2f}\n", "i", all.wall / one.wall);
  }

  void CaseII() {
    for (const int64_t decode : {4096, 8192}) {
      const Shape s{1, 32768, decode};
      Flops("ii", s);
      const std::string t = Trace(s);
      Measure("ii", fmt::format("replay streaming@1024 ({}+{})", s.prompt, s.decode),
              Replay(t, "streaming", "1024"), FullPassFlops(s));
    }
  }

  void CaseIII() {
    const Shape s{4, 8192, 8192};
    Flops("iii", s);
    const std::string t = Trace(s);
    const RunStats one = Measure("iii", "replay full", Replay(t, "full", "1024"), FullPassFlops(s));
    const double saved = Stats("iii", t, s);
    const RunStats sweep =
        Measure("iii", "sweep 4 policies x 2 budgets",
                Sweep(t, {"streaming", "h2o", "tova", "snapkv"}, {"512", "1024"}),
                FullPassFlops(s) + PromptStatsFlops(s) - saved);
    fmt::print("{:<6} sweep (8 cells) / one full replay: {:.2f}\n", "iii", sweep.wall / one.wall);
  }

  void CaseIV() {
    const Shape s{32, 32768, 2048};
    Flops("iv", s);
    const std::string t = Trace(s);
    Stats("iv", t, s);
    const RunStats one = Measure("iv", "replay full", Replay(t, "full", "1024"), FullPassFlops(s));
    const RunStats all =
        Measure("iv", "sweep all x 8 budgets",
                Sweep(t, {"all"}, {"128", "256", "512", "1024", "2048", "4096", "0.25p", "0.5p"}),
                FullPassFlops(s));
    fmt::print("{:<6} sweep / one full replay: {:.2f}\n", "iv", all.wall / one.wall);
  }

  // Case (iv) on one of its 32 layers. Layers are replayed one after another with the same
  // shape and the same work, so the whole trace takes about 32 times as long, and its peak RSS
  // is this one's: one layer's tensors and block buffers, the cells' state, and the finished
  // layers' samples, which wait in a temporary file (case `layers` checks that they do).
  void CaseIVOneLayer() {
    const Shape s{1, 32768, 2048};
    Flops("iv/32", s);
    const std::string t = Trace(s);
    Stats("iv/32", t, s);
    const RunStats one =
        Measure("iv/32", "replay full", Replay(t, "full", "1024"), FullPassFlops(s));
    const RunStats all =
        Measure("iv/32", "sweep all x 8 budgets",
                Sweep(t, {"all"}, {"128", "256", "512", "1024", "2048", "4096", "0.25p", "0.5p"}),
                FullPassFlops(s));
    fmt::print("{:<6} sweep / one full replay: {:.2f}\n", "iv/32", all.wall / one.wall);
    fmt::print("{:<6} estimate for all 32 layers: {:.1f} h wall, peak RSS {:.2f} GB\n", "iv/32",
               32.0 * all.wall / 3600.0, all.peak_rss_gb);
  }

  // Each policy's 8 budgets of case iv alone, on a one-layer 32768 + 64 trace (the caches are at
  // their budgets after the prompt, so a short decode shows the cells' state; the 2048-step decode
  // adds the metric samples and time). Prints the peak RSS over one full replay of the same trace.
  void CasePolicies() {
    const Shape s{1, 32768, 64};
    const std::string t = Trace(s);
    Stats("pol", t, s);
    const RunStats one = Measure("pol", "replay full", Replay(t, "full", "1024"), FullPassFlops(s));
    const char* const policies[] = {
        "full",  "random", "streaming",     "h2o",        "tova",         "snapkv", "pyramidkv",
        "knorm", "oracle", "lazy-eviction", "laq-oracle", "laqpp-oracle", "lagkv",  "cake",
        "d2o",   "kivi",   "mikv",          "mpcache",    "epicache"};
    for (const char* policy : policies) {
      const RunStats all = Measure(
          "pol", fmt::format("{} x 8 budgets", policy),
          Sweep(t, {policy}, {"128", "256", "512", "1024", "2048", "4096", "0.25p", "0.5p"}),
          FullPassFlops(s));
      fmt::print("{:<6} {:<34} +{:.2f} GB over one full replay\n", "pol", policy,
                 all.peak_rss_gb - one.peak_rss_gb);
    }
  }

  // Peak RSS against the layer count: every policy x 8 budgets with case (iv)'s decode length and
  // heads (so the same metric samples per layer: 2048 steps x 32 query heads x 152 cells) on a
  // short prompt, over 1 and 4 layers. Without the spill the 4-layer sweep would hold 3 finished
  // layers' samples, about 0.36 GB more (3.7 GB for case (iv)'s 32 layers).
  void CaseLayers() {
    double rss_one = 0.0;
    for (const int layers : {1, 4}) {
      const Shape s{layers, 512, 2048};
      const std::string t = Trace(s);
      const RunStats all =
          Measure("layers", fmt::format("sweep all x 8 budgets, {} layer(s)", layers),
                  Sweep(t, {"all"}, {"16", "32", "64", "128", "256", "512", "0.25p", "0.5p"}),
                  FullPassFlops(s));
      if (layers == 1)
        rss_one = all.peak_rss_gb;
      else
        fmt::print("{:<6} peak RSS, 4 layers / 1 layer: {:.2f}\n", "layers",
                   all.peak_rss_gb / rss_one);
    }
  }

 private:
  std::string kvsim_;
  fs::path workdir_;
  int threads_;
  double gemm1_ = 0.0;
  double gemm_all_ = 0.0;
  bool has_stats_ = false;  // the measured build has `kvsim stats` (and `synth --no-stats`)
};

}  // namespace

int main(int argc, char** argv) {
  std::string kvsim = KVSIM_CLI_PATH;
  std::string cases = "i";
  fs::path workdir = fs::temp_directory_path() / "kvsim-scale-bench";
  int threads = tbb::info::default_concurrency();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--kvsim")
      kvsim = argv[i + 1];
    else if (flag == "--cases")
      cases = argv[i + 1];
    else if (flag == "--workdir")
      workdir = argv[i + 1];
    else if (flag == "--threads")
      threads = std::atoi(argv[i + 1]);
    else {
      fmt::print(
          stderr,
          "usage: {} [--kvsim PATH] [--cases i,ii,iii,iv,iv1,layers,policies] [--workdir DIR] "
          "[--threads N]\n",
          argv[0]);
      return 2;
    }
  }
  if (!fs::exists(kvsim)) {
    fmt::print(stderr, "scale_bench: {} not found (pass --kvsim PATH)\n", kvsim);
    return 2;
  }
  Bench bench(fs::absolute(kvsim).string(), workdir, threads);
  std::stringstream list(cases);
  for (std::string c; std::getline(list, c, ',');) {
    if (c == "i")
      bench.CaseI();
    else if (c == "ii")
      bench.CaseII();
    else if (c == "iii")
      bench.CaseIII();
    else if (c == "iv1")
      bench.CaseIVOneLayer();
    else if (c == "iv")
      bench.CaseIV();
    else if (c == "layers")
      bench.CaseLayers();
    else if (c == "policies")
      bench.CasePolicies();
    else
      fmt::print(stderr, "unknown case {}\n", c);
  }
  return 0;
}
