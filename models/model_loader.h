#pragma once
// One entry point for every model file kvsim reads: GGUF (by its magic) or a llama2.c
// checkpoint (anything else), with the tokenizer that goes with it.
#include <optional>
#include <string>
#include <vector>

#include "models/llama_model.h"
#include "models/tokenizer.h"

namespace kvsim::models {

struct LoadedModel {
  std::string path;
  std::string format;  // "gguf" or "llama2c"
  LlamaModel model;
  std::optional<Tokenizer> tokenizer;
  std::string tokenizer_problem;  // why `tokenizer` is absent, naming the file or key

  // The tokenizer, or InputError carrying tokenizer_problem (for commands given text).
  const Tokenizer& RequireTokenizer() const;
};

// Loads `path`. For a llama2.c checkpoint the tokenizer is `tokenizer_path` if given, else the
// first of `tok<vocab_size>.bin` and `tokenizer.bin` next to the checkpoint that exists; for a
// GGUF it is the embedded vocabulary unless `tokenizer_path` (a llama2.c tokenizer file) is
// given. Throws InputError naming the file on any problem with the model itself.
LoadedModel LoadModel(const std::string& path, const std::string& tokenizer_path = "");

// The stories260K GGUF shipped in models/data/stories260K/: found in the source tree this binary
// was built from, else under the current directory (run from the repository root). Throws
// InputError if neither exists.
std::string BundledModelPath();
// models/data/<name> (e.g. "validate_prompts.txt"), found as BundledModelPath finds the model.
std::string BundledDataPath(const std::string& name);

// Reads a prompt given as token ids: integers separated by whitespace and/or commas, optionally
// inside [ ] (a JSON array). Throws InputError naming the file and the token index for a
// non-integer, an id outside [0, vocab_size) or an empty file.
std::vector<int32_t> ReadTokenIdsFile(const std::string& path, int32_t vocab_size);

}  // namespace kvsim::models
