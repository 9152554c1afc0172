// `kvsim generate [--model M] [--prompt TEXT | --prompt-ids F] [--steps N]`: run the reference
// transformer and print the text, as llama2.c `run` does; a quick check that a model file loads
// and behaves before capturing traces from it.
#include <fmt/core.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "apps/command.h"
#include "common/error.h"
#include "models/generate.h"
#include "models/model_loader.h"

namespace kvsim::apps {
namespace {

struct GenerateArgs {
  std::string model;
  std::string tokenizer;
  std::string prompt;
  std::string prompt_ids;
  int64_t steps = 64;
  float temperature = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  bool ids = false;
};

void RunGenerate(const GenerateArgs& args) {
  if (args.steps < 0) ThrowInputError("--steps is {}, expected >= 0", args.steps);
  const std::string path = args.model.empty() ? models::BundledModelPath() : args.model;
  const models::LoadedModel loaded = models::LoadModel(path, args.tokenizer);
  const std::vector<int32_t> prompt =
      args.prompt_ids.empty()
          ? loaded.RequireTokenizer().Encode(args.prompt, true, false)
          : models::ReadTokenIdsFile(args.prompt_ids, loaded.model.config().vocab_size);
  models::GenerateOptions options;
  options.new_tokens = args.steps;
  options.sampling = {args.temperature, args.top_p, args.seed};
  options.sampling.Validate("--temperature/--top-p");
  models::KvState state = loaded.model.NewState();
  const models::Generation g = models::Generate(loaded.model, prompt, options, state);
  if (args.ids || !loaded.tokenizer) {
    std::string ids;
    for (const int32_t id : g.tokens) ids += (ids.empty() ? "" : " ") + std::to_string(id);
    fmt::print("{}\n", ids);
  }
  if (loaded.tokenizer) fmt::print("{}\n", loaded.tokenizer->Decode(g.tokens));
}

}  // namespace

void RegisterGenerateCommand(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "generate",
      "Generate text with a Llama-architecture model (GGUF or llama2.c checkpoint) on CPU and "
      "print it");
  cmd->add_option("--model", args->model, "model file (default: the bundled stories260K GGUF)");
  cmd->add_option("--tokenizer", args->tokenizer, "llama2.c tokenizer file (see kvsim capture)");
  auto* prompt = cmd->add_option("--prompt", args->prompt, "prompt text (default: BOS only)");
  cmd->add_option("--prompt-ids", args->prompt_ids, "read the prompt as token ids")
      ->excludes(prompt);
  cmd->add_option("--steps", args->steps, "tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", args->temperature, "sampling temperature (0 = greedy)")
      ->capture_default_str();
  cmd->add_option("--top-p", args->top_p, "nucleus sampling threshold in (0, 1]")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "sampling seed")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--ids", args->ids, "also print the token ids (prompt included)");
  cmd->callback([args] { RunGenerate(*args); });
}

}  // namespace kvsim::apps
