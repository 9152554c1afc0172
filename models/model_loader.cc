#include "models/model_loader.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>

#include "common/atomic_file.h"
#include "common/error.h"
#include "models/gguf.h"
#include "models/llama2c.h"

namespace kvsim::models {
namespace {

bool HasGgufMagic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ThrowInputError("{}: cannot open model file", path);
  char magic[4] = {};
  in.read(magic, 4);
  return in && std::string_view(magic, 4) == "GGUF";
}

}  // namespace

const Tokenizer& LoadedModel::RequireTokenizer() const {
  if (!tokenizer) throw InputError(tokenizer_problem);
  return *tokenizer;
}

LoadedModel LoadModel(const std::string& path, const std::string& tokenizer_path) {
  if (HasGgufMagic(path)) {
    GgufModel gguf = LoadGgufLlama(path);
    LoadedModel loaded{path, "gguf", LlamaModel(std::move(gguf.weights)), std::move(gguf.tokenizer),
                       std::move(gguf.tokenizer_problem)};
    if (!tokenizer_path.empty()) {
      loaded.tokenizer = LoadLlama2cTokenizer(tokenizer_path, loaded.model.config().vocab_size);
    }
    return loaded;
  }
  LlamaModel model(LoadLlama2cCheckpoint(path));
  const int vocab = model.config().vocab_size;
  std::string tok = tokenizer_path;
  std::string problem;
  if (tok.empty()) {
    const std::filesystem::path dir = std::filesystem::path(path).parent_path();
    const std::string candidates[] = {
        (dir / ("tok" + std::to_string(vocab) + ".bin")).string(),
        (dir / "tokenizer.bin").string(),
    };
    for (const std::string& candidate : candidates) {
      if (std::filesystem::exists(candidate)) {
        tok = candidate;
        break;
      }
    }
    if (tok.empty()) {
      problem = fmt::format(
          "{}: no tokenizer: neither {} nor {} exists; pass a llama2.c "
          "tokenizer file or token ids",
          path, candidates[0], candidates[1]);
    }
  }
  LoadedModel loaded{path, "llama2c", std::move(model), std::nullopt, problem};
  if (!tok.empty()) loaded.tokenizer = LoadLlama2cTokenizer(tok, vocab);
  return loaded;
}

namespace {

// The source tree's models/<relative>, from the source directory CMake passes in (not __FILE__:
// ccache's base_dir makes that relative), so commands work from any directory; else under the
// current directory. Empty if neither exists.
std::optional<std::string> FindBundled(const std::filesystem::path& relative, std::string* tried) {
  const std::filesystem::path from_source =
      std::filesystem::path(KVSIM_MODELS_SOURCE_DIR) / relative;
  if (std::filesystem::exists(from_source)) return from_source.string();
  const std::filesystem::path from_cwd = std::filesystem::path("models") / relative;
  if (std::filesystem::exists(from_cwd)) return from_cwd.string();
  *tried = from_source.string() + " or " + from_cwd.string();
  return std::nullopt;
}

}  // namespace

std::string BundledModelPath() {
  std::string tried;
  if (auto path = FindBundled("data/stories260K/stories260K.gguf", &tried)) return *path;
  ThrowInputError("bundled model not found at {}; pass --model", tried);
}

std::string BundledDataPath(const std::string& name) {
  std::string tried;
  if (auto path = FindBundled(std::filesystem::path("data") / name, &tried)) return *path;
  ThrowInputError("bundled file models/data/{} not found at {}", name, tried);
}

// Token ids separated by whitespace and/or commas; surrounding [ ] (a JSON array) are allowed.
std::vector<int32_t> ReadTokenIdsFile(const std::string& path, int32_t vocab_size) {
  std::string text = ReadFileToString(path);
  std::replace_if(
      text.begin(), text.end(), [](char c) { return c == ',' || c == '[' || c == ']'; }, ' ');
  std::vector<int32_t> ids;
  const char* p = text.data();
  const char* end = text.data() + text.size();
  while (true) {
    while (p < end && std::isspace(static_cast<unsigned char>(*p))) ++p;
    if (p == end) break;
    int64_t id = 0;
    const auto [next, ec] = std::from_chars(p, end, id);
    if (ec != std::errc() || (next < end && !std::isspace(static_cast<unsigned char>(*next)))) {
      const char* word_end = p;
      while (word_end < end && !std::isspace(static_cast<unsigned char>(*word_end))) ++word_end;
      ThrowInputError("{}: token {} is '{}', expected an integer token id", path, ids.size(),
                      std::string(p, word_end));
    }
    if (id < 0 || id >= vocab_size) {
      ThrowInputError("{}: token {} is {}, expected an id in [0, {}) (the model's vocabulary)",
                      path, ids.size(), id, vocab_size);
    }
    ids.push_back(static_cast<int32_t>(id));
    p = next;
  }
  if (ids.empty()) ThrowInputError("{}: no token ids, expected at least one", path);
  return ids;
}

}  // namespace kvsim::models
