// Inputs found by the model harnesses fuzz/gguf_fuzzer and fuzz/llama2c_fuzzer (README
// "Fuzzing"), kept in tests/fixtures/fuzz/<harness>/: each must give a clean InputError, never a
// crash, a hang, a sanitizer report or another exception type.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "common/error.h"
#include "models/gguf.h"
#include "models/llama2c.h"
#include "models/llama_model.h"

namespace kvsim::models {
namespace {

using ::testing::HasSubstr;

std::string FuzzDir(const char* harness) {
  return std::string(KVSIM_TEST_DATA_DIR) + "/fuzz/" + harness;
}

// Loads every saved input of `harness` with `load`; each must load or throw InputError naming
// the file.
void ExpectCleanOutcomes(const char* harness, const std::function<void(const std::string&)>& load) {
  if (!std::filesystem::is_directory(FuzzDir(harness))) return;
  for (const auto& entry : std::filesystem::directory_iterator(FuzzDir(harness))) {
    try {
      load(entry.path().string());
    } catch (const InputError& e) {
      EXPECT_THAT(e.what(), HasSubstr(entry.path().filename().string()));
    }
  }
}

TEST(ModelFuzzRegression, EveryFoundInputIsACleanInputError) {
  ExpectCleanOutcomes("gguf", [](const std::string& path) { LoadGgufLlama(path); });
  ExpectCleanOutcomes("llama2c", [](const std::string& path) { LoadLlama2cCheckpoint(path); });
}

// A metadata string that declares more bytes than the file holds was allocated (and zeroed)
// before the read failed: up to 1 GiB per key, a 10 s hang under the fuzzer.
TEST(ModelFuzzRegression, StringLongerThanTheFileIsRefusedBeforeAllocating) {
  try {
    LoadGgufLlama(FuzzDir("gguf") + "/string_length_beyond_file.gguf");
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("bytes remain in the file (truncated or corrupt?)"));
  }
}

// Tensor extents of 2^35 x 2^32 overflowed int64 in the element count (UBSan), before any
// bounds check could see the tensor's size.
TEST(ModelFuzzRegression, TensorElementCountOverflowIsRefused) {
  try {
    LoadGgufLlama(FuzzDir("gguf") + "/element_count_overflow.gguf");
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("expected at most 2^40 elements in all"));
  }
}

}  // namespace
}  // namespace kvsim::models
