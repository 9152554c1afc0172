// llama2.c tokenizer files (models/tokenizer.h) and token-id prompt files (model_loader.h).
// Input: 2 bytes of vocab_size (little-endian; the checkpoint header supplies it in kvsim), then
// the file. The tokenizer then encodes and decodes text with byte-fallback pieces.
#include "fuzz/fuzz_util.h"
#include "models/model_loader.h"
#include "models/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int32_t vocab_size = data[0] | (data[1] << 8);
  const std::string& path = kvsim::fuzz::WriteInput(data + 2, size - 2, ".bin");
  kvsim::fuzz::Run([&] { kvsim::models::ReadTokenIdsFile(path, vocab_size); });
  return kvsim::fuzz::Run([&] {
    const kvsim::models::Tokenizer tok = kvsim::models::LoadLlama2cTokenizer(path, vocab_size);
    const std::vector<int32_t> ids =
        tok.Encode("Once upon a time, \xe6\x97\xa5 <0x41>\xff", true, true);
    tok.Decode(ids);
    for (int32_t id = 0; id < tok.vocab_size(); ++id) tok.TokenText(id);
  });
}
