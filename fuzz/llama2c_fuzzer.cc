// The llama2.c checkpoint loader (models/llama2c.h) on a file made of the input, then one
// forward step of the model it describes.
#include <array>

#include "fuzz/fuzz_util.h"
#include "models/llama2c.h"
#include "models/llama_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = kvsim::fuzz::WriteInput(data, size, ".bin");
  return kvsim::fuzz::Run([&] {
    const kvsim::models::LlamaModel model(kvsim::models::LoadLlama2cCheckpoint(path));
    kvsim::models::KvState state = model.NewState();
    const std::array<int32_t, 2> tokens = {0, model.config().vocab_size - 1};
    model.Forward(tokens, state);
  });
}
