// Inputs found by fuzz/trace_reader_fuzzer (README "Fuzzing"), kept in tests/fixtures/fuzz/
// trace_reader/: each must give a clean InputError (or read), as the harness expects, never a
// crash, a sanitizer report or another exception type.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "common/error.h"
#include "traces/trace_io.h"

namespace kvsim::traces {
namespace {

using ::testing::HasSubstr;

// What the harness does with one input.
void ReadEverything(const std::string& path) {
  const TraceReader reader(path);
  LayerTensors layer;
  for (int l = 0; l < reader.meta().shape.layers; ++l) reader.ReadLayer(l, &layer);
  reader.ReadSlice(reader.meta().shape.layers - 1, reader.meta().shape.kv_heads - 1);
  if (reader.has_gate_flags()) reader.ReadGateFlags(0, 0);
}

std::string Fixture(const char* name) {
  return std::string(KVSIM_TEST_DATA_DIR) + "/fuzz/trace_reader/" + name;
}

TEST(TraceFuzzRegression, EveryFoundInputIsACleanInputError) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(KVSIM_TEST_DATA_DIR) +
                                                               "/fuzz/trace_reader")) {
    ++files;
    try {
      ReadEverything(entry.path().string());
    } catch (const InputError& e) {
      EXPECT_THAT(e.what(), HasSubstr(entry.path().filename().string()));
    }
  }
  EXPECT_GT(files, 0);
}

// libhdf5's attribute iteration (H5Aiterate2) crashes on this file's attribute table; kvsim
// opens attributes by name and reports the one it cannot find.
TEST(TraceFuzzRegression, CorruptAttributeTableNamesTheMissingAttribute) {
  try {
    ReadEverything(Fixture("attribute_table_h5aiterate.h5"));
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr("attribute 'rope_theta' of '/' is missing"));
  }
}

}  // namespace
}  // namespace kvsim::traces
