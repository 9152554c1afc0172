// TOML configuration files: the sweep plan (analysis/sweep.h ReadSweepFile) and the serving
// scenario (sim/serving/scenario.h ReadScenarioFile), both over analysis/toml_file. Input: one
// byte choosing the reader, then the file.
#include "analysis/sweep.h"
#include "fuzz/fuzz_util.h"
#include "sim/serving/scenario.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool sweep = data[0] % 2 == 0;
  const std::string& path = kvsim::fuzz::WriteInput(data + 1, size - 1, ".toml");
  return kvsim::fuzz::Run([&] {
    if (sweep) {
      kvsim::analysis::ReadSweepFile(path);
    } else {
      kvsim::serving::ReadScenarioFile(path);
    }
  });
}
