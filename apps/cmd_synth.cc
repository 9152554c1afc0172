// `kvsim synth --shape NAME --prompt N [--decode N] [--scenario S] [knobs] -o FILE`: writes a
// synthetic trace whose attention has known structure (traces/synthetic/synthetic.h).
#include <fmt/core.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "apps/cmd_stats.h"
#include "apps/command.h"
#include "common/error.h"
#include "models/model_shape.h"
#include "traces/synthetic/synthetic.h"
#include "traces/trace_io.h"

namespace kvsim::apps {
namespace {

namespace synthetic = traces::synthetic;

struct SynthArgs {
  std::string shape;
  int layers = 0;  // 0: all of the shape's layers
  int64_t prompt = 0;
  int64_t decode = 0;
  std::string scenario = "mixed";
  uint64_t seed = 1;
  std::string output;
  std::string dtype = "float16";
  bool no_stats = false;  // skip the prompt-statistics sidecar
  int compression_level = 0;
  int threads = 0;  // 0: all hardware threads
  // Knobs given on the command line, applied over the scenario's defaults.
  std::vector<std::function<void(synthetic::SynthParams&)>> knobs;
};

// Registers --flag for SynthParams::*field; it overrides the scenario default only if given.
template <typename T>
void AddKnob(CLI::App* cmd,
             SynthArgs& args,
             const std::string& flag,
             T synthetic::SynthParams::*field,
             const std::string& help) {
  auto value = std::make_shared<T>();
  CLI::Option* option = cmd->add_option(flag, *value, help);
  args.knobs.push_back([option, value, field](synthetic::SynthParams& p) {
    if (option->count() > 0) p.*field = *value;
  });
}

// Fails before the (possibly long) generation if the output cannot be written.
void CheckOutputPath(const std::string& output) {
  namespace fs = std::filesystem;
  if (output.empty()) ThrowInputError("-o/--output is empty: expected a file path");
  const fs::path path(output);
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    ThrowInputError("-o/--output '{}' is a directory: expected a file path", output);
  }
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (!fs::is_directory(dir, ec)) {
    ThrowInputError("-o/--output '{}': directory '{}' does not exist", output, dir.string());
  }
  if (access(dir.c_str(), W_OK) != 0) {
    ThrowInputError("-o/--output '{}': directory '{}' is not writable", output, dir.string());
  }
}

void RunSynth(const SynthArgs& args) {
  const auto names = models::ShapePresetNames();
  if (std::find(names.begin(), names.end(), args.shape) == names.end()) {
    ThrowInputError("--shape '{}' is not a known model shape: expected one of {}", args.shape,
                    fmt::join(names, ", "));
  }
  models::ModelShape shape = models::ShapePreset(args.shape);
  if (args.layers != 0) shape = models::WithLayers(shape, args.layers);

  traces::TraceWriterOptions options;
  if (args.dtype == "float16") {
    options.storage = traces::StorageType::kFloat16;
  } else if (args.dtype == "float32") {
    options.storage = traces::StorageType::kFloat32;
  } else {
    ThrowInputError("--dtype '{}': expected float16 or float32", args.dtype);
  }
  if (args.compression_level < 0 || args.compression_level > 9) {
    ThrowInputError("--compression-level {}: expected 0-9", args.compression_level);
  }
  options.compression_level = args.compression_level;
  if (args.threads < 0) ThrowInputError("--threads {}: expected >= 0", args.threads);

  synthetic::SynthParams params =
      synthetic::ScenarioParams(synthetic::ParseScenario(args.scenario));
  params.prompt_len = args.prompt;
  params.decode_len = args.decode;
  params.seed = args.seed;
  for (const auto& knob : args.knobs) knob(params);
  synthetic::ValidateSynthParams(params);
  CheckOutputPath(args.output);

  // Layer by layer: a 32-layer, 32k-position trace does not fit in memory whole.
  const auto start = std::chrono::steady_clock::now();
  const synthetic::SynthGenerator generator(shape, params, args.threads);
  traces::WriteTraceByLayer(
      args.output, generator.meta(),
      [&](int layer, traces::LayerTensors& out) { generator.Layer(layer, &out); }, options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("wrote {}: {} x {} layers, {} positions (prompt {}), scenario {}, {} ({:.2f} s)\n",
             args.output, shape.name, shape.layers, params.prompt_len + params.decode_len,
             params.prompt_len, args.scenario, args.dtype, seconds);
  if (!args.no_stats) {
    const PromptStatsUpdate stats =
        UpdatePromptStats(args.output, /*force=*/true, /*per_layer=*/false);
    fmt::print("wrote {}: prompt statistics of {} layers ({:.2f} s; kvsim stats)\n", stats.sidecar,
               stats.layers, stats.seconds);
  }
}

}  // namespace

void RegisterSynthCommand(CLI::App& app) {
  auto args = std::make_shared<SynthArgs>();
  CLI::App* cmd = app.add_subcommand(
      "synth",
      "Write a synthetic trace whose attention has known structure: sinks, recency, heavy "
      "hitters, recurring tokens, needles, shifted queries, multi-turn topics.");
  cmd->add_option("--shape", args->shape,
                  fmt::format("model shape: {}", fmt::join(models::ShapePresetNames(), ", ")))
      ->required();
  cmd->add_option("--layers", args->layers, "keep only the first N layers (default: all)");
  cmd->add_option("--prompt", args->prompt, "prompt positions (>= 1)")->required();
  cmd->add_option("--decode", args->decode, "decode positions (>= 0, default 0)");
  cmd->add_option("--scenario", args->scenario,
                  fmt::format("structure preset: {} (default mixed)",
                              fmt::join(synthetic::ScenarioNames(), ", ")));
  cmd->add_option("--seed", args->seed, "random seed (default 1)")->check(CLI::NonNegativeNumber);
  cmd->add_option("-o,--output", args->output, "output trace file (HDF5)")->required();
  cmd->add_option("--dtype", args->dtype, "on-disk storage: float16 (default) or float32");
  cmd->add_option("--compression-level", args->compression_level,
                  "0 (default): no compression, disk speed; 1-9: shuffle + gzip at that level, "
                  "~13% smaller, several times slower");
  cmd->add_option("--threads", args->threads,
                  "generator threads (default 0: all); the trace is the same for any count")
      ->check(CLI::Range(0, 4096));

  using P = synthetic::SynthParams;
  AddKnob(cmd, *args, "--noise", &P::noise, "std of unstructured logits");
  AddKnob(cmd, *args, "--sinks", &P::sinks, "number of attention sinks (first positions)");
  AddKnob(cmd, *args, "--sink-gain", &P::sink_gain, "logit gain of sinks");
  AddKnob(cmd, *args, "--recent-window", &P::recent_window, "recency width in positions (0: off)");
  AddKnob(cmd, *args, "--recent-gain", &P::recent_gain, "logit gain at lag 0");
  AddKnob(cmd, *args, "--heavy-hitters", &P::heavy_hitters, "number of heavy-hitter tokens");
  AddKnob(cmd, *args, "--heavy-gain", &P::heavy_gain, "logit gain of heavy hitters");
  AddKnob(cmd, *args, "--recurring", &P::recurring, "number of recurring tokens");
  AddKnob(cmd, *args, "--recurrence-gap", &P::recurrence_gap,
          "steps a recurring token is ignored between important phases (W)");
  AddKnob(cmd, *args, "--recurrence-on", &P::recurrence_on,
          "steps of each important phase of a recurring token");
  AddKnob(cmd, *args, "--recurrence-gain", &P::recurrence_gain, "logit gain when important");
  AddKnob(cmd, *args, "--needles", &P::needles, "tokens attended by exactly one late query");
  AddKnob(cmd, *args, "--needle-gain", &P::needle_gain, "logit gain of a needle");
  AddKnob(cmd, *args, "--shifted", &P::shifted,
          "tokens per set: observation-window targets, decode targets");
  AddKnob(cmd, *args, "--observation-window", &P::observation_window,
          "last prompt queries that attend to the window targets");
  AddKnob(cmd, *args, "--shifted-gain", &P::shifted_gain, "logit gain of shifted targets");
  AddKnob(cmd, *args, "--topics", &P::topics, "multi-turn topics (0: not multi-turn)");
  AddKnob(cmd, *args, "--turns", &P::turns, "multi-turn segments before the question");
  AddKnob(cmd, *args, "--question-len", &P::question_len, "positions of the final question");
  AddKnob(cmd, *args, "--topic-gain", &P::topic_gain, "logit gain of the question's topic");
  cmd->add_flag("--no-stats", args->no_stats,
                "do not write the prompt-statistics sidecar OUTPUT.stats.h5 (see kvsim stats)");
  cmd->callback([args] { RunSynth(*args); });
}

}  // namespace kvsim::apps
