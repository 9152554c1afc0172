// Format 1.1 (issue 15): strings as UTF-8 bytes + offsets instead of HDF5 variable-length
// types, Fletcher32 on every dataset, and 1.0 files (variable-length strings) still read.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/test_util.h"
#include "traces/string_table.h"
#include "traces/trace_io.h"

namespace kvsim::traces {
namespace {

using ::kvsim::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

void ExpectInputError(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    for (const std::string& part : parts) EXPECT_THAT(e.what(), HasSubstr(part));
  }
}

// The trace of tests/fixtures/traces/v1_0_vlen_strings.h5, written by kvsim before format 1.1
// (WriteTrace, float32, chunk_positions 4): variable-length string attributes and datasets.
Trace FixtureTrace() {
  TraceMeta meta;
  meta.shape.name = "tiny-v1.0";
  meta.shape.layers = 2;
  meta.shape.q_heads = 4;
  meta.shape.kv_heads = 2;
  meta.shape.head_dim = 3;
  meta.shape.rope_theta = 10000.0;
  meta.prompt_len = 4;
  meta.total_len = 6;
  meta.storage = StorageType::kFloat32;
  meta.source = "test:v1.0 fixture \xc3\xbc";
  meta.token_ids = {1, 7, 42, 3, 500, 2};
  meta.token_text = {"Once", "", "\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "tok4", " x"};
  meta.segments = {{0, 2, 0, "system"}, {2, 4, 1, "user"}, {4, 6, 1, "assist\xc3\xa4nt"}};
  std::vector<LayerTensors> layers(2);
  for (int l = 0; l < 2; ++l) {
    HeadTensor* t[3] = {&layers[l].queries, &layers[l].keys, &layers[l].values};
    for (int i = 0; i < 3; ++i) {
      const int heads = i == 0 ? 4 : 2;
      *t[i] = HeadTensor(heads, 6, 3);
      for (int h = 0; h < heads; ++h) {
        for (int p = 0; p < 6; ++p) {
          for (int d = 0; d < 3; ++d) {
            t[i]->Row(h, p)[d] = static_cast<float>(
                std::sin(0.37 * l + 1.13 * i + 0.71 * h + 0.0931 * p + 0.29 * d) * 3.0);
          }
        }
      }
    }
  }
  return Trace(meta, std::move(layers));
}

std::string FixturePath() {
  return std::string(KVSIM_TEST_DATA_DIR) + "/traces/v1_0_vlen_strings.h5";
}

void ExpectSameTrace(const Trace& a, const Trace& b) {
  EXPECT_EQ(a.meta(), b.meta());
  for (int l = 0; l < a.num_layers(); ++l) EXPECT_EQ(a.layer(l), b.layer(l)) << "layer " << l;
}

TEST(TraceFormat, Version10FileWithVariableLengthStringsStillReads) {
  ExpectSameTrace(ReadTrace(FixturePath()), FixtureTrace());
}

TEST(TraceFormat, Version10FileRewrittenAs11ReadsTheSame) {
  TempDir dir;
  const Trace old = ReadTrace(FixturePath());
  WriteTrace(dir.File("t.h5"), old, {.storage = StorageType::kFloat32});
  ExpectSameTrace(ReadTrace(dir.File("t.h5")), old);
}

// Every object the writer creates: datasets must be checksummed and hold no variable-length
// type; attributes must not be variable-length strings.
herr_t CheckObject(hid_t object, const char* name, const H5O_info_t* info, void* failures) {
  auto& out = *static_cast<std::vector<std::string>*>(failures);
  if (info->type != H5O_TYPE_DATASET) return 0;
  const hid_t ds = H5Dopen2(object, name, H5P_DEFAULT);
  const hid_t type = H5Dget_type(ds);
  const hid_t plist = H5Dget_create_plist(ds);
  if (H5Tis_variable_str(type) > 0 || H5Tget_class(type) == H5T_VLEN) {
    out.push_back(std::string(name) + " is variable-length");
  }
  unsigned flags = 0;
  if (H5Pget_filter_by_id2(plist, H5Z_FILTER_FLETCHER32, &flags, nullptr, nullptr, 0, nullptr,
                           nullptr) < 0) {
    out.push_back(std::string(name) + " has no fletcher32");
  }
  H5Pclose(plist);
  H5Tclose(type);
  H5Dclose(ds);
  return 0;
}

herr_t CheckAttribute(hid_t object, const char* name, const H5A_info_t*, void* failures) {
  const hid_t attr = H5Aopen(object, name, H5P_DEFAULT);
  const hid_t type = H5Aget_type(attr);
  if (H5Tis_variable_str(type) > 0) {
    static_cast<std::vector<std::string>*>(failures)->push_back(std::string(name) + " is vlen");
  }
  H5Tclose(type);
  H5Aclose(attr);
  return 0;
}

TEST(TraceFormat, WriterUsesNoVariableLengthTypeAndChecksumsEveryDataset) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), FixtureTrace(), {.storage = StorageType::kFloat16});
  const hid_t file = H5Fopen(dir.File("t.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  std::vector<std::string> failures;
  H5Ovisit(file, H5_INDEX_NAME, H5_ITER_NATIVE, CheckObject, &failures);
  H5Aiterate2(file, H5_INDEX_NAME, H5_ITER_NATIVE, nullptr, CheckAttribute, &failures);
  int64_t minor = -1;
  const hid_t attr = H5Aopen(file, "format_minor_version", H5P_DEFAULT);
  H5Aread(attr, H5T_NATIVE_INT64, &minor);
  H5Aclose(attr);
  EXPECT_GT(H5Lexists(file, "/tokens/text_utf8", H5P_DEFAULT), 0);
  EXPECT_EQ(H5Lexists(file, "/tokens/text", H5P_DEFAULT), 0);
  H5Fclose(file);
  EXPECT_THAT(failures, ::testing::IsEmpty());
  EXPECT_EQ(minor, 1);
}

TEST(TraceFormat, StringsRoundTripEmptyNonAsciiAndMany) {
  TempDir dir;
  Trace trace = FixtureTrace();
  trace.mutable_meta().token_text = {"", "", "\xf0\x9f\x98\x80", "a\nb", "\xe6\x97\xa5", ""};
  trace.mutable_meta().segments = {{0, 3, 0, ""}, {3, 6, 1, "r\xc3\xb4le"}};
  WriteTrace(dir.File("t.h5"), trace, {.storage = StorageType::kFloat32});
  ExpectSameTrace(ReadTrace(dir.File("t.h5")), trace);

  // Many tokens, spanning several 64 Ki-byte chunks of the byte dataset.
  TraceMeta meta = trace.meta();
  meta.shape.layers = 1;
  meta.total_len = 30000;
  meta.prompt_len = 10;
  meta.segments.clear();
  meta.token_ids.assign(30000, 5);
  meta.token_text.clear();
  for (int i = 0; i < 30000; ++i) {
    meta.token_text.push_back(i % 7 == 0 ? "" : fmt::format("t\xc3\xa9{}", i));
  }
  LayerTensors layer;
  layer.queries = HeadTensor(4, 30000, 3);
  layer.keys = HeadTensor(2, 30000, 3);
  layer.values = HeadTensor(2, 30000, 3);
  std::vector<LayerTensors> layers;
  layers.push_back(std::move(layer));
  const Trace many(meta, std::move(layers));
  WriteTrace(dir.File("many.h5"), many);
  EXPECT_EQ(ReadTrace(dir.File("many.h5")).meta().token_text, meta.token_text);
}

// Overwrites the int64 dataset `name` of an existing file with `values` (same length).
void OverwriteInt64(const std::string& path, const char* name, const std::vector<int64_t>& values) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  const hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
  ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  H5Dclose(ds);
  H5Fclose(file);
}

TEST(TraceFormat, CorruptOffsetsAreNamedBeforeAnyAllocation) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  // The fixture's text is 4 + 0 + 2 + 6 + 4 + 2 = 18 bytes.
  const std::vector<int64_t> good = {0, 4, 4, 6, 12, 16, 18};
  struct Case {
    std::vector<int64_t> offsets;
    std::vector<std::string> parts;
  };
  const Case cases[] = {
      {{1, 4, 4, 6, 12, 16, 18}, {"'/tokens/text_offsets' starts with 1, expected 0"}},
      {{0, 4, 3, 6, 12, 16, 18},
       {"'/tokens/text_offsets' holds 3 at index 2 after 4", "never decrease"}},
      {{0, 4, 4, 6, 12, 16, 17}, {"'/tokens/text_utf8' has 18 bytes, expected 17"}},
      {{0, 4, 4, 6, 12, 16, int64_t{1} << 62},
       {"'/tokens/text_utf8' has 18 bytes, expected 4611686018427387904"}},
  };
  for (const Case& c : cases) {
    WriteTrace(path, FixtureTrace(), {.storage = StorageType::kFloat32});
    OverwriteInt64(path, "/tokens/text_offsets", good);
    EXPECT_NO_THROW(TraceReader reader(path));
    OverwriteInt64(path, "/tokens/text_offsets", c.offsets);
    std::vector<std::string> parts = c.parts;
    parts.push_back("t.h5: dataset");
    ExpectInputError([&] { TraceReader reader(path); }, parts);
  }
}

TEST(TraceFormat, MissingOrMisshapenStringDatasetsAreNamed) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  WriteTrace(path, FixtureTrace(), {.storage = StorageType::kFloat32});
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(H5Ldelete(file, "/segments/role_utf8", H5P_DEFAULT), 0);
  H5Fclose(file);
  ExpectInputError([&] { TraceReader reader(path); },
                   {"t.h5: dataset '/segments/role_utf8' is missing, expected uint8"});
}

// The file address of the first chunk of dataset `name`.
haddr_t FirstChunkAddress(const std::string& path, const char* name) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
  hsize_t offset[3] = {};
  unsigned mask = 0;
  haddr_t address = HADDR_UNDEF;
  hsize_t size = 0;
  const hid_t space = H5Dget_space(ds);
  H5Dget_chunk_info(ds, space, 0, offset, &mask, &address, &size);
  H5Sclose(space);
  H5Dclose(ds);
  H5Fclose(file);
  return address;
}

void FlipByte(const std::string& path, haddr_t address) {
  std::FILE* f = std::fopen(path.c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  std::fseek(f, static_cast<long>(address), SEEK_SET);
  const int byte = std::fgetc(f);
  std::fseek(f, static_cast<long>(address), SEEK_SET);
  std::fputc(byte ^ 0x10, f);
  std::fclose(f);
}

TEST(TraceFormat, FlippedByteInAChecksummedChunkIsACleanErrorNamingTheDataset) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  for (const char* name : {"/layers/1/k", "/layers/0/q", "/tokens/ids", "/tokens/text_utf8",
                           "/tokens/text_offsets", "/segments/begin", "/segments/role_utf8"}) {
    WriteTrace(path, FixtureTrace(), {.storage = StorageType::kFloat16});
    const haddr_t address = FirstChunkAddress(path, name);
    ASSERT_NE(address, HADDR_UNDEF) << name;
    FlipByte(path, address + 1);
    ExpectInputError([&] { TraceReader reader(path); },
                     {fmt::format("t.h5: cannot read dataset '{}'", name), "checksum mismatch"});
  }
}

// Format 1.1 files use HDF5's 1.10 file format (superblock 3), whose metadata blocks carry
// checksums: a flipped byte in an object header is a clean error, not libhdf5 parsing garbage.
TEST(TraceFormat, FlippedByteInMetadataIsACleanError) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  WriteTrace(path, FixtureTrace(), {.storage = StorageType::kFloat16});
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(bytes.size(), 9u);
  EXPECT_EQ(bytes[8], 3) << "superblock version";
  // The root group's object header holds the attributes: flip a byte of one's name.
  const size_t at = bytes.find("model_name");
  ASSERT_NE(at, std::string::npos);
  FlipByte(path, at + 2);
  ExpectInputError([&] { TraceReader reader(path); }, {"t.h5"});
}

TEST(TraceFormat, SplitStringTableChecksOffsets) {
  const std::vector<uint8_t> bytes = {'a', 'b', 'c'};
  const std::vector<int64_t> good = {0, 1, 1, 3};
  EXPECT_THAT(internal::SplitStringTable("f.h5", "/x", bytes, good), ElementsAre("a", "", "bc"));
  ExpectInputError([&] { internal::SplitStringTable("f.h5", "/x", bytes, {}); },
                   {"f.h5: dataset '/x_offsets' starts with nothing, expected 0"});
  const std::vector<int64_t> beyond = {0, 1, 4};
  ExpectInputError([&] { internal::SplitStringTable("f.h5", "/x", bytes, beyond); },
                   {"f.h5: dataset '/x_offsets' ends at 4, expected 3"});
  const std::vector<int64_t> negative = {0, -1, 3};
  ExpectInputError([&] { internal::SplitStringTable("f.h5", "/x", bytes, negative); },
                   {"holds -1 at index 1 after 0"});
}

TEST(TraceFormat, InvalidUtf8IsEscapedNotRejected) {
  using internal::EscapeInvalidUtf8;
  EXPECT_EQ(EscapeInvalidUtf8("plain \xc3\xa9 \xf0\x9f\x98\x80"),
            "plain \xc3\xa9 \xf0\x9f\x98\x80");
  EXPECT_EQ(EscapeInvalidUtf8("\xe6"), "\\xE6");                    // a byte-fallback piece
  EXPECT_EQ(EscapeInvalidUtf8("a\xc0\xafz"), "a\\xC0\\xAFz");       // overlong '/'
  EXPECT_EQ(EscapeInvalidUtf8("\xed\xa0\x80"), "\\xED\\xA0\\x80");  // a surrogate
  EXPECT_EQ(EscapeInvalidUtf8("\xf4\x90\x80\x80"), "\\xF4\\x90\\x80\\x80");  // > U+10FFFF
  EXPECT_EQ(EscapeInvalidUtf8(""), "");
}

TEST(TraceFormat, RawBytePiecesInTokenTextReadBackEscaped) {
  TempDir dir;
  Trace trace = FixtureTrace();
  trace.mutable_meta().token_text[1] = "\xe6\x97";
  WriteTrace(dir.File("t.h5"), trace, {.storage = StorageType::kFloat32});
  EXPECT_EQ(ReadTrace(dir.File("t.h5")).meta().token_text[1], "\\xE6\\x97");
}

}  // namespace
}  // namespace kvsim::traces
