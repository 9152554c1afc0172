// `kvsim capture [--model M] (--prompt TEXT | --prompt-file F | --prompt-ids F) --decode N
// -o TRACE`: run a real model on CPU over a prompt and N decode steps with the full KV cache and
// stream every layer's post-RoPE q/k/v (and optionally pre-RoPE q/k), token ids and text into a
// trace (traces/FORMAT.md).
#include <fmt/core.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/cmd_stats.h"
#include "apps/command.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "common/progress.h"
#include "models/model_loader.h"
#include "traces/capture.h"

namespace kvsim::apps {
namespace {

struct CaptureArgs {
  std::string model;
  std::string tokenizer;
  std::string prompt;
  std::string prompt_file;
  std::string prompt_ids;
  std::string out;
  std::string name;
  std::string storage = "f16";
  int64_t decode = 64;
  int64_t prefill_block = 256;
  float temperature = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  bool pre_rope = false;
  bool no_stats = false;  // skip the prompt-statistics sidecar
};

traces::StorageType ParseStorage(const std::string& s) {
  if (s == "f16") return traces::StorageType::kFloat16;
  if (s == "f32") return traces::StorageType::kFloat32;
  ThrowInputError("--storage is '{}', expected f16 or f32", s);
}

void RunCapture(const CaptureArgs& args) {
  if (args.decode < 0) ThrowInputError("--decode is {}, expected >= 0", args.decode);
  if (args.prefill_block < 0) {
    ThrowInputError("--prefill-block is {}, expected >= 0 (0 = whole prompt)", args.prefill_block);
  }
  const traces::StorageType storage = ParseStorage(args.storage);
  const std::string model_path = args.model.empty() ? models::BundledModelPath() : args.model;
  const models::LoadedModel loaded = models::LoadModel(model_path, args.tokenizer);
  const models::LlamaModel& model = loaded.model;

  std::vector<int32_t> prompt;
  if (!args.prompt_ids.empty()) {
    prompt = models::ReadTokenIdsFile(args.prompt_ids, model.config().vocab_size);
  } else {
    const std::string text =
        args.prompt_file.empty() ? args.prompt : ReadFileToString(args.prompt_file);
    // llama2.c run.c: BOS, then the dummy-prefixed text (BOS alone for an empty prompt).
    prompt = loaded.RequireTokenizer().Encode(text, true, false);
  }

  traces::CaptureOptions options;
  options.decode_tokens = args.decode;
  options.sampling = {args.temperature, args.top_p, args.seed};
  options.sampling.Validate("--temperature/--top-p");
  options.with_pre_rope = args.pre_rope;
  options.prefill_block = args.prefill_block;

  const std::string file_name = std::filesystem::path(model_path).filename().string();
  const std::string name =
      args.name.empty() ? std::filesystem::path(model_path).stem().string() : args.name;
  const std::string sampling =
      args.temperature == 0.0f
          ? std::string("greedy")
          : fmt::format("temperature={} top_p={} seed={}", args.temperature, args.top_p, args.seed);
  traces::TraceWriterOptions writer_options;
  writer_options.storage = storage;
  writer_options.with_pre_rope = args.pre_rope;
  traces::TraceWriter writer(
      args.out,
      traces::CaptureMeta(model, name, "capture:" + file_name + " " + sampling, storage,
                          args.pre_rope),
      writer_options);
  traces::TraceWriterSink sink(writer);
  const auto total = static_cast<int64_t>(prompt.size()) + args.decode;
  ProgressBar progress("capture", total);
  const models::Tokenizer* tokenizer = loaded.tokenizer ? &*loaded.tokenizer : nullptr;
  const traces::CaptureResult result =
      traces::Capture(model, tokenizer, prompt, options, sink, &progress);
  writer.SetPromptLength(result.prompt_len);
  writer.Commit();
  progress.Finish();

  fmt::print("captured {} positions (prompt {}, decode {}) of {} in {:.3f} s ({:.1f} tokens/s)\n",
             result.tokens.size(), result.prompt_len, args.decode, file_name, result.seconds,
             static_cast<double>(result.tokens.size()) / std::max(result.seconds, 1e-9));
  fmt::print("trace: {}\n", args.out);
  if (tokenizer != nullptr) fmt::print("text: {}\n", result.text);
  if (!args.no_stats) {
    const PromptStatsUpdate stats =
        UpdatePromptStats(args.out, /*force=*/true, /*per_layer=*/false);
    fmt::print("wrote {}: prompt statistics of {} layers ({:.2f} s; kvsim stats)\n", stats.sidecar,
               stats.layers, stats.seconds);
  }
}

}  // namespace

void RegisterCaptureCommand(CLI::App& app) {
  auto args = std::make_shared<CaptureArgs>();
  CLI::App* cmd = app.add_subcommand(
      "capture",
      "Run a Llama-architecture model (GGUF or llama2.c checkpoint) on CPU over a prompt and N "
      "decode steps with the full KV cache, recording every layer's post-RoPE q/k/v, token ids "
      "and text into a trace");
  cmd->add_option("--model", args->model,
                  "model file: GGUF (f32/f16/bf16/q8_0, architecture llama) or llama2.c "
                  "checkpoint (default: the bundled stories260K GGUF)");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "llama2.c tokenizer file (default: the GGUF's vocabulary, or tok<vocab>.bin / "
                  "tokenizer.bin next to a llama2.c checkpoint)");
  auto* prompt = cmd->add_option("--prompt", args->prompt,
                                 "prompt text, encoded with BOS as llama2.c (default: BOS only)");
  auto* prompt_file = cmd->add_option("--prompt-file", args->prompt_file, "read the prompt text");
  auto* prompt_ids = cmd->add_option(
      "--prompt-ids", args->prompt_ids,
      "read the prompt as token ids (whitespace/comma separated, BOS included if wanted)");
  prompt->excludes(prompt_file)->excludes(prompt_ids);
  prompt_file->excludes(prompt_ids);
  cmd->add_option("--decode", args->decode, "decode steps after the prompt")->capture_default_str();
  cmd->add_option("-o,--out", args->out, "output trace (HDF5), written atomically")->required();
  cmd->add_option("--name", args->name, "model name stored in the trace (default: file stem)");
  cmd->add_option("--storage", args->storage, "on-disk dtype: f16 or f32")->capture_default_str();
  cmd->add_flag("--pre-rope", args->pre_rope, "also store pre-RoPE queries and keys");
  cmd->add_option("--temperature", args->temperature, "sampling temperature (0 = greedy)")
      ->capture_default_str();
  cmd->add_option("--top-p", args->top_p, "nucleus sampling threshold in (0, 1]")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "sampling seed")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefill-block", args->prefill_block,
                  "prompt positions per prefill step (0 = whole prompt)")
      ->capture_default_str();
  cmd->add_flag("--no-stats", args->no_stats,
                "do not write the prompt-statistics sidecar OUT.stats.h5 (see kvsim stats)");
  cmd->callback([args] { RunCapture(*args); });
}

}  // namespace kvsim::apps
