#include "traces/trace_io.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <Eigen/Core>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "common/error.h"
#include "common/test_util.h"

namespace kvsim::traces {
namespace {

using ::kvsim::testing::RunCommand;
using ::kvsim::testing::ShellQuote;
using ::kvsim::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

models::ModelShape TinyShape() {
  models::ModelShape s;
  s.name = "tiny";
  s.layers = 2;
  s.q_heads = 4;
  s.kv_heads = 2;
  s.head_dim = 3;
  s.rope_theta = 10000.0;
  return s;
}

// A deterministic value per element, distinct across tensors, with bits that float16 cannot
// hold exactly (so float16 storage must round).
float ValueAt(int layer, int tensor, int head, int64_t pos, int dim) {
  const double x =
      0.37 * layer + 1.13 * tensor + 0.71 * head + 0.0931 * static_cast<double>(pos) + 0.29 * dim;
  return static_cast<float>(std::sin(x) * 3.0 + 1e-3 * std::cos(7.0 * x));
}

// Positions [begin, begin + n) of a tiny trace's layers.
std::vector<LayerTensors> MakeLayers(const models::ModelShape& s,
                                     int64_t begin,
                                     int64_t n,
                                     bool pre_rope) {
  std::vector<LayerTensors> layers(static_cast<size_t>(s.layers));
  for (int l = 0; l < s.layers; ++l) {
    LayerTensors& lt = layers[static_cast<size_t>(l)];
    HeadTensor* tensors[5] = {&lt.queries, &lt.keys, &lt.values, &lt.queries_pre_rope,
                              &lt.keys_pre_rope};
    for (int t = 0; t < (pre_rope ? 5 : 3); ++t) {
      const int heads = (t == 0 || t == 3) ? s.q_heads : s.kv_heads;
      *tensors[t] = HeadTensor(heads, n, s.head_dim);
      for (int h = 0; h < heads; ++h) {
        for (int64_t p = 0; p < n; ++p) {
          for (int i = 0; i < s.head_dim; ++i) {
            tensors[t]->Row(h, p)[i] = ValueAt(l, t, h, begin + p, i);
          }
        }
      }
    }
  }
  return layers;
}

Trace MakeTrace(int64_t total, int64_t prompt, bool pre_rope = false, bool text = false) {
  TraceMeta meta;
  meta.shape = TinyShape();
  meta.prompt_len = prompt;
  meta.total_len = total;
  meta.source = "test:hand-built";
  meta.has_pre_rope = pre_rope;
  for (int64_t p = 0; p < total; ++p) {
    meta.token_ids.push_back(static_cast<int32_t>(100 + p));
    if (text) meta.token_text.push_back(p % 2 ? "é" : fmt::format("tok{}", p));
  }
  return Trace(meta, MakeLayers(meta.shape, 0, total, pre_rope));
}

float HalfRound(float x) { return static_cast<float>(Eigen::half(x)); }

bool PythonHasH5py() {
  return RunCommand(std::string(KVSIM_PYTHON) + " -c 'import h5py, numpy'").exit_code == 0;
}

std::string RunPython(const TempDir& dir, const std::string& script) {
  const std::string file = dir.File("script.py");
  std::ofstream(file) << script;
  const auto result = RunCommand(std::string(KVSIM_PYTHON) + " " + ShellQuote(file));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  return result.out;
}

// Expects `fn` to throw InputError whose message contains every one of `parts`.
void ExpectInputError(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    for (const std::string& part : parts) EXPECT_THAT(e.what(), HasSubstr(part));
  }
}

// Opens an HDF5 file read-write and runs `edit` on it (to damage a valid trace).
void EditFile(const std::string& path, const std::function<void(hid_t)>& edit) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  edit(file);
  H5Fclose(file);
}

// Replaces dataset `name` by a float32/float64 one of the given shape filled with 0.5.
void ReplaceDataset(hid_t file, const char* name, std::vector<hsize_t> dims, hid_t type) {
  ASSERT_GE(H5Ldelete(file, name, H5P_DEFAULT), 0);
  const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  const hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  size_t n = 1;
  for (hsize_t d : dims) n *= d;
  std::vector<double> values(n, 0.5);
  H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  H5Dclose(ds);
  H5Sclose(space);
}

TEST(TraceIo, Float32RoundTripIsBitExact) {
  TempDir dir;
  Trace trace = MakeTrace(11, 7, /*pre_rope=*/true, /*text=*/true);
  trace.mutable_meta().storage = StorageType::kFloat32;
  WriteTrace(dir.File("t.h5"), trace, {.storage = StorageType::kFloat32});
  const Trace back = ReadTrace(dir.File("t.h5"));
  EXPECT_EQ(back.meta(), trace.meta());
  for (int l = 0; l < trace.num_layers(); ++l) EXPECT_EQ(back.layer(l), trace.layer(l));
}

TEST(TraceIo, Float16RoundTripEqualsHalfRounding) {
  TempDir dir;
  const Trace trace = MakeTrace(9, 4);
  WriteTrace(dir.File("t.h5"), trace, {.storage = StorageType::kFloat16});
  const TraceReader reader(dir.File("t.h5"));
  EXPECT_EQ(reader.storage(), StorageType::kFloat16);
  EXPECT_EQ(reader.meta().token_ids, trace.meta().token_ids);
  int inexact = 0;
  for (int l = 0; l < trace.num_layers(); ++l) {
    const LayerTensors back = reader.ReadLayer(l);
    const LayerTensors& in = trace.layer(l);
    for (const auto& [got, want] :
         {std::pair{&back.queries, &in.queries}, std::pair{&back.keys, &in.keys},
          std::pair{&back.values, &in.values}}) {
      ASSERT_EQ(got->size(), want->size());
      for (size_t i = 0; i < got->size(); ++i) {
        ASSERT_EQ(got->data()[i], HalfRound(want->data()[i])) << "layer " << l << " index " << i;
        inexact += got->data()[i] != want->data()[i];
      }
    }
  }
  EXPECT_GT(inexact, 0) << "test values should not all be representable in float16";
}

TEST(TraceIo, IncrementalAppendEqualsOneShotWrite) {
  TempDir dir;
  const Trace trace = MakeTrace(23, 10, /*pre_rope=*/true, /*text=*/true);
  const TraceWriterOptions options{.storage = StorageType::kFloat32,
                                   .with_pre_rope = true,
                                   .chunk_positions = 4,
                                   .compression_level = 4};
  WriteTrace(dir.File("once.h5"), trace, options);
  {
    TraceWriter writer(dir.File("blocks.h5"), trace.meta(), options);
    int64_t pos = 0;
    for (int64_t n : {1, 3, 5, 1, 1, 8, 4}) {
      std::span<const int32_t> ids(trace.meta().token_ids.data() + pos, static_cast<size_t>(n));
      std::span<const std::string> text(trace.meta().token_text.data() + pos,
                                        static_cast<size_t>(n));
      writer.Append(ids, text, MakeLayers(trace.shape(), pos, n, true));
      pos += n;
      EXPECT_EQ(writer.positions_written(), pos);
    }
    ASSERT_EQ(pos, 23);
    writer.SetPromptLength(10);
    writer.Commit();
  }
  const Trace once = ReadTrace(dir.File("once.h5"));
  const Trace blocks = ReadTrace(dir.File("blocks.h5"));
  EXPECT_EQ(blocks.meta(), once.meta());
  for (int l = 0; l < once.num_layers(); ++l) EXPECT_EQ(blocks.layer(l), once.layer(l));
  EXPECT_EQ(once.layer(1), trace.layer(1));
}

TEST(TraceIo, ReadSliceMatchesLayerAndGroupsQueryHeads) {
  TempDir dir;
  const Trace trace = MakeTrace(6, 2);
  WriteTrace(dir.File("t.h5"), trace, {.storage = StorageType::kFloat32});
  const TraceReader reader(dir.File("t.h5"));
  const KvHeadSlice slice = reader.ReadSlice(1, 1);
  ASSERT_EQ(slice.queries.size(), 2u);  // g = 4 / 2
  EXPECT_EQ(slice.queries[0], trace.Queries(1, 2));
  EXPECT_EQ(slice.queries[1], trace.Queries(1, 3));
  EXPECT_EQ(slice.keys, trace.Keys(1, 1));
  EXPECT_EQ(slice.values, trace.Values(1, 1));
  EXPECT_FALSE(reader.has_gate_flags());
}

TEST(TraceIo, ReadLayerIntoReusedBuffersEqualsFreshRead) {
  TempDir dir;
  const Trace trace = MakeTrace(10, 4, /*pre_rope=*/true);
  WriteTrace(dir.File("t.h5"), trace);
  const TraceReader reader(dir.File("t.h5"));
  LayerTensors reused;
  reused.keys = HeadTensor(7, 1, 1);  // wrong shape: replaced
  for (int l : {0, 1, 0}) {
    reader.ReadLayer(l, &reused);
    EXPECT_EQ(reused, reader.ReadLayer(l)) << "layer " << l;
  }
}

TEST(TraceIo, SegmentsRoundTrip) {
  TempDir dir;
  Trace trace = MakeTrace(10, 6);
  trace.mutable_meta().segments = {{0, 2, 0, "system"}, {2, 6, 1, "user"}, {6, 10, 1, "assistant"}};
  WriteTrace(dir.File("t.h5"), trace);
  EXPECT_EQ(ReadTrace(dir.File("t.h5")).meta().segments, trace.meta().segments);
}

TEST(TraceIo, WriterDestroyedWithoutCommitLeavesNothing) {
  TempDir dir;
  const Trace trace = MakeTrace(5, 2);
  {
    TraceWriter writer(dir.File("t.h5"), trace.meta());
    writer.Append(trace.meta().token_ids, {}, MakeLayers(trace.shape(), 0, 5, false));
  }
  EXPECT_THAT(dir.Entries(), IsEmpty());
}

TEST(TraceIo, CommitOfInconsistentTraceThrowsAndLeavesNothing) {
  TempDir dir;
  const Trace trace = MakeTrace(5, 2);
  for (int64_t prompt : {0, 6}) {
    TraceWriter writer(dir.File("t.h5"), trace.meta());
    writer.Append(trace.meta().token_ids, {}, MakeLayers(trace.shape(), 0, 5, false));
    writer.SetPromptLength(prompt);
    ExpectInputError([&] { writer.Commit(); },
                     {"t.h5", fmt::format("prompt_len is {}", prompt), "total_len = 5"});
    EXPECT_THAT(dir.Entries(), IsEmpty());
  }
  TraceWriter writer(dir.File("t.h5"), trace.meta());
  writer.Append(trace.meta().token_ids, {}, MakeLayers(trace.shape(), 0, 5, false));
  writer.SetPromptLength(2);
  writer.SetSegments({{3, 9, 0, "user"}});
  ExpectInputError([&] { writer.Commit(); }, {"t.h5", "segment 0 is [3, 9)"});
  EXPECT_THAT(dir.Entries(), IsEmpty());
}

TEST(TraceIo, AppendWithWrongShapeNamesTensor) {
  TempDir dir;
  const Trace trace = MakeTrace(5, 2);
  TraceWriter writer(dir.File("t.h5"), trace.meta());
  std::vector<LayerTensors> layers = MakeLayers(trace.shape(), 0, 5, false);
  layers[1].keys = HeadTensor(2, 4, 3);
  ExpectInputError([&] { writer.Append(trace.meta().token_ids, {}, layers); },
                   {"t.h5", "'/layers/1/k'", "[2, 4, 3]", "expected [2, 5, 3]"});
}

TEST(TraceIo, MissingFileIsNamed) {
  ExpectInputError([] { TraceReader reader("/nonexistent/x.h5"); },
                   {"/nonexistent/x.h5", "no such file"});
}

TEST(TraceIo, TruncatedFileIsRejected) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), MakeTrace(40, 20));
  const auto size = std::filesystem::file_size(dir.File("t.h5"));
  std::filesystem::resize_file(dir.File("t.h5"), size / 2);
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); }, {"t.h5", "truncated"});
}

TEST(TraceIo, NotHdf5IsRejected) {
  TempDir dir;
  std::ofstream(dir.File("t.h5")) << "hello";
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); }, {"t.h5", "not an HDF5 file"});
}

TEST(TraceIo, WrongShapeNamesDatasetAndExpectedShape) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), MakeTrace(8, 3), {.storage = StorageType::kFloat32});
  EditFile(dir.File("t.h5"), [](hid_t f) {
    ReplaceDataset(f, "/layers/1/k", {2, 7, 3}, H5T_IEEE_F32LE);
  });
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); },
                   {"t.h5: dataset '/layers/1/k' has shape [2, 7, 3], expected [2, 8, 3] "
                    "(kv_heads, total_len, head_dim)"});
}

TEST(TraceIo, WrongDtypeNamesDataset) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), MakeTrace(8, 3));
  EditFile(dir.File("t.h5"), [](hid_t f) {
    ReplaceDataset(f, "/layers/0/v", {2, 8, 3}, H5T_IEEE_F64LE);
  });
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); },
                   {"t.h5: dataset '/layers/0/v' has dtype float64, expected float16 or float32"});
}

TEST(TraceIo, MixedStorageDtypesAreRejected) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), MakeTrace(8, 3), {.storage = StorageType::kFloat16});
  EditFile(dir.File("t.h5"), [](hid_t f) {
    ReplaceDataset(f, "/layers/1/q", {4, 8, 3}, H5T_IEEE_F32LE);
  });
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); },
                   {"t.h5: dataset '/layers/1/q' has dtype float32, expected float16"});
}

TEST(TraceIo, MissingAttributeIsNamed) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), MakeTrace(8, 3));
  EditFile(dir.File("t.h5"), [](hid_t f) { ASSERT_GE(H5Adelete(f, "kv_heads"), 0); });
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); },
                   {"t.h5: attribute 'kv_heads' of '/' is missing, expected an integer"});
}

TEST(TraceIo, MissingDatasetIsNamed) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), MakeTrace(8, 3));
  EditFile(dir.File("t.h5"),
           [](hid_t f) { ASSERT_GE(H5Ldelete(f, "/layers/1/v", H5P_DEFAULT), 0); });
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); },
                   {"t.h5: dataset '/layers/1/v' is missing, expected float16/float32 [2, 8, 3]"});
}

TEST(TraceIo, PromptLongerThanTraceIsRejected) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), MakeTrace(8, 3));
  EditFile(dir.File("t.h5"), [](hid_t f) {
    const int64_t bad = 9;
    const hid_t attr = H5Aopen(f, "prompt_len", H5P_DEFAULT);
    H5Awrite(attr, H5T_NATIVE_INT64, &bad);
    H5Aclose(attr);
  });
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); },
                   {"t.h5", "prompt_len = 9", "total_len = 8", "1 <= prompt_len <= total_len"});
}

TEST(TraceIo, NonFiniteValueIsLocated) {
  TempDir dir;
  for (StorageType storage : {StorageType::kFloat16, StorageType::kFloat32}) {
    Trace trace = MakeTrace(8, 3);
    trace.mutable_layer(1).values.Row(1, 5)[2] = std::numeric_limits<float>::quiet_NaN();
    WriteTrace(dir.File("t.h5"), trace, {.storage = storage});
    ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); },
                     {"t.h5: dataset '/layers/1/v' holds nan at [1, 5, 2], expected finite"});
  }
  Trace trace = MakeTrace(8, 3);
  trace.mutable_layer(0).queries.Row(3, 0)[0] = 1e6f;  // overflows float16 to inf
  WriteTrace(dir.File("t.h5"), trace, {.storage = StorageType::kFloat16});
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); },
                   {"'/layers/0/q' holds inf at [3, 0, 0]"});
}

// The layer-at-a-time writer (kvsim synth) gives the same file contents as the whole-trace one.
TEST(TraceIo, WriteTraceByLayerEqualsWriteTrace) {
  TempDir dir;
  Trace trace = MakeTrace(23, 10, /*pre_rope=*/true, /*text=*/true);
  trace.mutable_meta().segments = {{0, 10, 0, "user"}, {10, 23, 0, "assistant"}};
  for (StorageType storage : {StorageType::kFloat16, StorageType::kFloat32}) {
    const TraceWriterOptions options{.storage = storage, .chunk_positions = 4};
    WriteTrace(dir.File("whole.h5"), trace, options);
    std::vector<int> produced;
    WriteTraceByLayer(
        dir.File("layers.h5"), trace.meta(),
        [&](int l, LayerTensors& out) {
          produced.push_back(l);
          out = trace.layer(l);
        },
        options);
    EXPECT_THAT(produced, ElementsAre(0, 1));
    const Trace whole = ReadTrace(dir.File("whole.h5"));
    const Trace layers = ReadTrace(dir.File("layers.h5"));
    EXPECT_EQ(layers.meta(), whole.meta());
    for (int l = 0; l < whole.num_layers(); ++l) EXPECT_EQ(layers.layer(l), whole.layer(l));
  }
}

TEST(TraceIo, WriteTraceByLayerFailureLeavesNothing) {
  TempDir dir;
  const Trace trace = MakeTrace(9, 4);
  ExpectInputError(
      [&] {
        WriteTraceByLayer(dir.File("t.h5"), trace.meta(), [&](int l, LayerTensors& out) {
          out = trace.layer(l);
          if (l == 1) out.values = HeadTensor(2, 8, 3);
        });
      },
      {"t.h5", "'/layers/1/v'", "[2, 8, 3]", "expected [2, 9, 3]"});
  EXPECT_THAT(dir.Entries(), IsEmpty());
  EXPECT_THROW(WriteTraceByLayer(dir.File("t.h5"), trace.meta(),
                                 [](int, LayerTensors&) { throw std::runtime_error("producer"); }),
               std::runtime_error);
  EXPECT_THAT(dir.Entries(), IsEmpty());
  TraceMeta short_tokens = trace.meta();
  short_tokens.token_ids.pop_back();
  ExpectInputError(
      [&] {
        WriteTraceByLayer(dir.File("t.h5"), short_tokens,
                          [&](int l, LayerTensors& out) { out = trace.layer(l); });
      },
      {"t.h5", "8 token ids", "total_len = 9"});
  EXPECT_THAT(dir.Entries(), IsEmpty());
}

// Number of filters in the pipeline of dataset `name`.
int FilterCount(const std::string& path, const char* name) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
  const hid_t plist = H5Dget_create_plist(ds);
  const int n = H5Pget_nfilters(plist);
  H5Pclose(plist);
  H5Dclose(ds);
  H5Fclose(file);
  return n;
}

// The default writes no compression (disk speed), only the Fletcher32 checksum; gzip stays
// available, and gzip files, which earlier kvsim versions wrote by default (shuffle + deflate 1),
// read back identically.
TEST(TraceIo, CompressionIsTheWritersChoiceAndReadsTheSame) {
  TempDir dir;
  const Trace trace = MakeTrace(40, 20, /*pre_rope=*/false, /*text=*/true);
  WriteTrace(dir.File("plain.h5"), trace);
  EXPECT_EQ(FilterCount(dir.File("plain.h5"), "/layers/0/q"), 1) << "fletcher32";
  for (int level : {1, 9}) {
    WriteTrace(dir.File("gzip.h5"), trace, {.compression_level = level});
    EXPECT_EQ(FilterCount(dir.File("gzip.h5"), "/layers/1/k"), 3)
        << "shuffle + deflate + fletcher32";
    const Trace plain = ReadTrace(dir.File("plain.h5"));
    const Trace gzip = ReadTrace(dir.File("gzip.h5"));
    EXPECT_EQ(gzip.meta(), plain.meta());
    for (int l = 0; l < plain.num_layers(); ++l) EXPECT_EQ(gzip.layer(l), plain.layer(l));
  }
  ExpectInputError([&] { WriteTrace(dir.File("bad.h5"), trace, {.compression_level = 10}); },
                   {"bad.h5", "compression_level is 10, expected 0-9"});
}

// A filter this HDF5 cannot decode (here: registered while writing, gone when reading, as a
// third-party plugin on another machine) is named at open, not reported as corruption.
TEST(TraceIo, UnavailableFilterIsNamed) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), MakeTrace(8, 3), {.storage = StorageType::kFloat32});
  constexpr H5Z_filter_t kFilter = 40000;
  const H5Z_class2_t filter_class = {
      H5Z_CLASS_T_VERS,
      kFilter,
      1,
      1,
      "kvsim-test-filter",
      nullptr,
      nullptr,
      [](unsigned, size_t, const unsigned[], size_t bytes, size_t*, void**) { return bytes; }};
  ASSERT_GE(H5Zregister(&filter_class), 0);
  EditFile(dir.File("t.h5"), [](hid_t f) {
    ASSERT_GE(H5Ldelete(f, "/layers/1/q", H5P_DEFAULT), 0);
    const hsize_t dims[3] = {4, 8, 3};
    const hsize_t chunk[3] = {1, 8, 3};
    const hid_t space = H5Screate_simple(3, dims, nullptr);
    const hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(plist, 3, chunk);
    H5Pset_filter(plist, kFilter, H5Z_FLAG_MANDATORY, 0, nullptr);
    const hid_t ds =
        H5Dcreate2(f, "/layers/1/q", H5T_IEEE_F32LE, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    std::vector<float> values(4 * 8 * 3, 0.5f);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
    H5Dclose(ds);
    H5Pclose(plist);
    H5Sclose(space);
  });
  ASSERT_GE(H5Zunregister(kFilter), 0);
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); },
                   {"t.h5: dataset '/layers/1/q' uses HDF5 filter 40000 ('kvsim-test-filter')",
                    "cannot decode"});
}

TEST(TraceIo, DeclaredShapeWithoutDataIsRejectedBeforeAllocating) {
  TempDir dir;
  WriteTrace(dir.File("t.h5"), MakeTrace(8, 3), {.storage = StorageType::kFloat32});
  EditFile(dir.File("t.h5"), [](hid_t f) {  // the right shape, chunked, no chunk ever written
    ASSERT_GE(H5Ldelete(f, "/layers/1/q", H5P_DEFAULT), 0);
    const hsize_t dims[3] = {4, 8, 3};
    const hsize_t chunk[3] = {1, 8, 3};
    const hid_t space = H5Screate_simple(3, dims, nullptr);
    const hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(plist, 3, chunk);
    const hid_t ds =
        H5Dcreate2(f, "/layers/1/q", H5T_IEEE_F32LE, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    H5Dclose(ds);
    H5Pclose(plist);
    H5Sclose(space);
  });
  ExpectInputError([&] { TraceReader reader(dir.File("t.h5")); },
                   {"t.h5: dataset '/layers/1/q' declares shape [4, 8, 3] (384 bytes) but the "
                    "file holds 0 bytes of it: declared size larger than the data in the file"});
}

TEST(TraceIo, H5pyReadsKvsimTrace) {
  if (!PythonHasH5py()) GTEST_SKIP() << KVSIM_PYTHON << " lacks h5py; skipping interop test";
  TempDir dir;
  const Trace trace = MakeTrace(12, 5, false, true);
  WriteTrace(dir.File("f32.h5"), trace, {.storage = StorageType::kFloat32});
  WriteTrace(dir.File("f16.h5"), trace, {.storage = StorageType::kFloat16});
  const std::string out = RunPython(dir, fmt::format(R"(
import h5py, numpy as np
for name in ["f32", "f16"]:
    with h5py.File("{}/" + name + ".h5", "r") as f:
        k = f["layers/1/k"]
        text, offsets = f["tokens/text_utf8"], f["tokens/text_offsets"]
        print(name, f.attrs["model_name"].decode(), f.attrs["layers"], f.attrs["prompt_len"],
              f.attrs["total_len"], k.dtype, k.shape, repr(float(k[1, 7, 2])),
              f["tokens/ids"][3], bytes(text[offsets[1]:offsets[2]]).decode())
)",
                                                     dir.path().string()));
  const float k = trace.Keys(1, 1)(7, 2);
  EXPECT_EQ(out, fmt::format("f32 tiny 2 5 12 float32 (2, 12, 3) {} 103 é\n"
                             "f16 tiny 2 5 12 float16 (2, 12, 3) {} 103 é\n",
                             static_cast<double>(k), static_cast<double>(HalfRound(k))))
      << "python printed: " << out;
}

TEST(TraceIo, KvsimReadsH5pyTrace) {
  if (!PythonHasH5py()) GTEST_SKIP() << KVSIM_PYTHON << " lacks h5py; skipping interop test";
  TempDir dir;
  // Follows traces/FORMAT.md only.
  RunPython(dir, fmt::format(R"(
import h5py, numpy as np
L, HQ, HKV, D, T, P = 2, 4, 2, 3, 6, 4
def val(l, t, h, p, i): return np.sin(0.37*l + 1.13*t + 0.71*h + 0.0931*p + 0.29*i) * 3.0
with h5py.File("{}/py.h5", "w") as f:
    f.attrs["format"] = "kvsim-trace"
    f.attrs["format_version"] = 1
    f.attrs["model_name"] = "py-model"
    f.attrs["layers"] = L; f.attrs["q_heads"] = HQ; f.attrs["kv_heads"] = HKV
    f.attrs["head_dim"] = D; f.attrs["rope_theta"] = 500000.0
    f.attrs["prompt_len"] = P; f.attrs["total_len"] = T
    f.attrs["source"] = "h5py"
    f["tokens/ids"] = np.arange(T, dtype=np.int32) * 2
    f["tokens/text"] = ["a", "b", "c", "d", "e", "f"]
    for l in range(L):
        for t, (name, heads) in enumerate([("q", HQ), ("k", HKV), ("v", HKV)]):
            x = np.fromfunction(lambda h, p, i: val(l, t, h, p, i), (heads, T, D))
            f.create_dataset(f"layers/{{l}}/{{name}}", data=x.astype(np.float16),
                             chunks=(1, T, D), compression="gzip", shuffle=True)
    f["segments/begin"] = np.array([0, 4]); f["segments/end"] = np.array([4, 6])
    f["segments/turn"] = np.array([0, 1], dtype=np.int32)
    f["segments/role"] = ["user", "assistant"]
    g = np.zeros((L, HKV, T), dtype=np.uint8); g[1, 0, 2] = 1
    f["gate_flags"] = g
)",
                             dir.path().string()));
  const TraceReader reader(dir.File("py.h5"));
  const TraceMeta& m = reader.meta();
  EXPECT_EQ(m.shape.name, "py-model");
  EXPECT_EQ(m.shape.rope_theta, 500000.0);
  EXPECT_EQ(m.prompt_len, 4);
  EXPECT_EQ(m.total_len, 6);
  EXPECT_EQ(m.source, "h5py");
  EXPECT_EQ(reader.storage(), StorageType::kFloat16);
  EXPECT_THAT(m.token_ids, ElementsAre(0, 2, 4, 6, 8, 10));
  EXPECT_THAT(m.token_text, ElementsAre("a", "b", "c", "d", "e", "f"));
  EXPECT_THAT(m.segments, ElementsAre(Segment{0, 4, 0, "user"}, Segment{4, 6, 1, "assistant"}));
  const Trace trace = reader.ReadAll();
  // numpy rounds float64 -> float16 directly; going through float32 first can differ only on
  // double-rounding ties, which these values do not hit.
  const double x = 0.37 * 1 + 1.13 * 1 + 0.71 * 1 + 0.0931 * 5 + 0.29 * 2;
  EXPECT_EQ(trace.Keys(1, 1)(5, 2), HalfRound(static_cast<float>(std::sin(x) * 3.0)));
  ASSERT_TRUE(reader.has_gate_flags());
  EXPECT_THAT(reader.ReadGateFlags(1, 0), ElementsAre(0, 0, 1, 0, 0, 0));
  EXPECT_THAT(reader.ReadGateFlags(0, 0), ElementsAre(0, 0, 0, 0, 0, 0));
  // ReadAll carries the same flags into the in-memory trace (what the `gate` policy reads).
  ASSERT_TRUE(trace.has_gate_flags());
  EXPECT_THAT(trace.GateFlags(1, 0), ElementsAre(0, 0, 1, 0, 0, 0));
  EXPECT_THAT(trace.GateFlags(0, 1), ElementsAre(0, 0, 0, 0, 0, 0));
}

}  // namespace
}  // namespace kvsim::traces
