// The GGUF loader (models/gguf.h) on a file made of the input: header, metadata, tensor
// directory, every tensor read as float32, the embedded tokenizer, then one forward step.
#include <array>

#include "fuzz/fuzz_util.h"
#include "models/gguf.h"
#include "models/llama_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = kvsim::fuzz::WriteInput(data, size, ".gguf");
  return kvsim::fuzz::Run([&] {
    kvsim::models::GgufModel gguf = kvsim::models::LoadGgufLlama(path);
    if (gguf.tokenizer) {
      const std::vector<int32_t> ids =
          gguf.tokenizer->Encode("Once upon a time \xe6\x97", true, true);
      gguf.tokenizer->Decode(ids);
    }
    const kvsim::models::LlamaModel model(std::move(gguf.weights));
    kvsim::models::KvState state = model.NewState();
    const std::array<int32_t, 2> tokens = {0, model.config().vocab_size - 1};
    model.Forward(tokens, state);
  });
}
