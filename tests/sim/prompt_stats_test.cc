// Issue 11 item 2, "Prompt statistics computed once": the blocked causal column-sum kernel
// against a double-precision brute force and a closed form, PrefillAttention with given sums,
// and the prompt-statistics sidecar (traces/prompt_stats.h): round trip, stale detection,
// corrupt files and atomic writes.
#include "traces/prompt_stats.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>

#include "common/error.h"
#include "common/test_util.h"
#include "sim/prefill_attention.h"
#include "traces/trace_io.h"

namespace kvsim::sim {
namespace {

using ::kvsim::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using traces::LayerPromptStats;
using traces::LayerTensors;
using traces::LoadPromptStats;
using traces::OnStale;
using traces::PromptStatsPath;
using traces::PromptStatsShape;
using traces::PromptStatsWriter;

// Queries and keys N(0, 1) scaled so logits have standard deviation `logit_std`: peaky enough
// that column sums span orders of magnitude.
LayerTensors RandomLayer(
    int q_heads, int kv_heads, int64_t positions, int d, uint32_t seed, float logit_std = 2.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // q.k / sqrt(d) of N(0, s^2) entries has standard deviation s^2.
  const float scale = std::sqrt(logit_std);
  LayerTensors layer;
  layer.queries = HeadTensor(q_heads, positions, d);
  layer.keys = HeadTensor(kv_heads, positions, d);
  layer.values = HeadTensor(kv_heads, positions, d);
  for (HeadTensor* t : {&layer.queries, &layer.keys, &layer.values}) {
    for (size_t i = 0; i < t->size(); ++i) t->data()[i] = scale * normal(rng);
  }
  return layer;
}

// The definition, in double: S[j] = sum_{i>=j} softmax_{k<=i}(q_i . k_k / sqrt(d))[j].
Eigen::VectorXd BruteForceColumnSums(const LayerTensors& layer, int q_head, int64_t n) {
  const int group = layer.queries.heads() / layer.keys.heads();
  const Eigen::MatrixXd q = layer.queries.Head(q_head).topRows(n).cast<double>();
  const Eigen::MatrixXd k = layer.keys.Head(q_head / group).topRows(n).cast<double>();
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.cols()));
  Eigen::VectorXd sums = Eigen::VectorXd::Zero(n);
  for (int64_t i = 0; i < n; ++i) {
    Eigen::VectorXd logits = (k.topRows(i + 1) * q.row(i).transpose()) * scale;
    logits = (logits.array() - logits.maxCoeff()).exp();
    sums.head(i + 1) += logits / logits.sum();
  }
  return sums;
}

double MaxRelativeError(const Eigen::VectorXf& got, const Eigen::VectorXd& want) {
  double worst = 0.0;
  for (Eigen::Index j = 0; j < want.size(); ++j) {
    worst = std::max(worst, std::abs(got[j] - want[j]) / want[j]);
  }
  return worst;
}

struct KernelCase {
  int q_heads, kv_heads;
  int64_t n;
  int d;
};

class CausalColumnSumsVsBruteForce : public ::testing::TestWithParam<KernelCase> {};

TEST_P(CausalColumnSumsVsBruteForce, AgreesWithinFloatRounding) {
  const KernelCase c = GetParam();
  const LayerTensors layer = RandomLayer(c.q_heads, c.kv_heads, c.n + 7, c.d, 11);
  const std::vector<Eigen::VectorXf> sums = ComputeColumnSums(layer, c.n);
  ASSERT_EQ(sums.size(), static_cast<size_t>(c.q_heads));
  for (int h = 0; h < c.q_heads; ++h) {
    const Eigen::VectorXd want = BruteForceColumnSums(layer, h, c.n);
    ASSERT_EQ(sums[h].size(), c.n);
    // Every row's weights sum to 1, so the column sums add up to n.
    EXPECT_NEAR(sums[h].cast<double>().sum(), static_cast<double>(c.n),
                1e-6 * static_cast<double>(c.n));
    const double err = MaxRelativeError(sums[h], want);
    EXPECT_LT(err, 2e-6) << "head " << h << ": max relative error " << err;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes,
    CausalColumnSumsVsBruteForce,
    ::testing::Values(KernelCase{4, 2, 300, 16},   // the brief's GQA case: one tile, 3 row blocks
                      KernelCase{2, 1, 1100, 8},   // 3 column tiles, a partial last row block
                      KernelCase{1, 1, 1, 4},      // a one-token prompt
                      KernelCase{2, 2, 129, 3}));  // one row past a row block, odd head_dim

// All-zero keys make every query attend uniformly over [0, i]: S[j] = sum_{i=j}^{n-1} 1/(i+1).
TEST(CausalColumnSums, UniformAttentionGivesHarmonicTails) {
  const int64_t n = 1500;  // three column tiles, twelve row blocks
  LayerTensors layer = RandomLayer(2, 1, n, 8, 3);
  std::fill(layer.keys.data(), layer.keys.data() + layer.keys.size(), 0.0f);
  const std::vector<Eigen::VectorXf> sums = ComputeColumnSums(layer, n);
  double tail = 0.0;
  for (int64_t j = n - 1; j >= 0; --j) {
    tail += 1.0 / static_cast<double>(j + 1);
    for (int h = 0; h < 2; ++h) {
      ASSERT_NEAR(sums[h][j], tail, 1e-6 * tail) << "head " << h << " column " << j;
    }
  }
}

TEST(CausalColumnSums, ParallelHeadsEqualSerialBitForBit) {
  const LayerTensors layer = RandomLayer(8, 2, 700, 16, 5);
  const std::vector<Eigen::VectorXf> parallel = ComputeColumnSums(layer, 650);
  for (int h = 0; h < 8; ++h) {
    const Eigen::VectorXf serial =
        CausalColumnSums(ConstMatrixMap(layer.queries.Row(h, 0), 650, 16),
                         ConstMatrixMap(layer.keys.Row(h / 4, 0), 650, 16));
    EXPECT_EQ(parallel[h], serial) << "head " << h;
  }
}

TEST(PrefillAttention, ColumnSumsComputedWhenNotGiven) {
  const LayerTensors layer = RandomLayer(4, 2, 90, 8, 7);
  const PrefillAttention attention(layer, 80);
  const std::vector<Eigen::VectorXf> want = ComputeColumnSums(layer, 80);
  for (int h = 0; h < 4; ++h) EXPECT_EQ(attention.ColumnSums(h), want[h]);
}

TEST(PrefillAttention, GivenColumnSumsAreReturnedInsteadOfComputed) {
  const LayerTensors layer = RandomLayer(2, 1, 20, 4, 7);
  std::vector<Eigen::VectorXf> given = {Eigen::VectorXf::Constant(16, 3.0f),
                                        Eigen::VectorXf::LinSpaced(16, 1.0f, 16.0f)};
  const PrefillAttention from_constructor(layer, 16, given);
  EXPECT_EQ(from_constructor.ColumnSums(0), given[0]);
  EXPECT_EQ(from_constructor.ColumnSums(1), given[1]);
  PrefillAttention from_setter(layer, 16);
  from_setter.SetColumnSums(given);
  EXPECT_EQ(from_setter.ColumnSums(1), given[1]);
}

TEST(PrefillAttention, SetColumnSumsRejectsWrongSizesAndLateCalls) {
  const LayerTensors layer = RandomLayer(2, 1, 20, 4, 7);
  PrefillAttention attention(layer, 16);
  EXPECT_THROW(attention.SetColumnSums({Eigen::VectorXf::Zero(16)}), InternalError);
  EXPECT_THROW(attention.SetColumnSums({Eigen::VectorXf::Zero(16), Eigen::VectorXf::Zero(15)}),
               InternalError);
  (void)attention.ColumnSums(0);
  EXPECT_THROW(attention.SetColumnSums({Eigen::VectorXf::Zero(16), Eigen::VectorXf::Zero(16)}),
               InternalError);
}

// ---- The sidecar ----

traces::Trace SmallTrace(int64_t prompt, int64_t total, uint32_t seed) {
  traces::TraceMeta meta;
  meta.shape = {.name = "tiny", .layers = 2, .q_heads = 4, .kv_heads = 2, .head_dim = 8};
  meta.prompt_len = prompt;
  meta.total_len = total;
  meta.source = "test";
  for (int64_t t = 0; t < total; ++t) meta.token_ids.push_back(static_cast<int32_t>(t));
  std::vector<LayerTensors> layers;
  for (int l = 0; l < 2; ++l) layers.push_back(RandomLayer(4, 2, total, 8, seed + l));
  return traces::Trace(meta, std::move(layers));
}

// Writes `trace` (float32) to `path` and its sidecar the way `kvsim stats` does: from the
// tensors as read back from the file.
void WriteWithSidecar(const std::string& path, const traces::Trace& trace) {
  traces::WriteTrace(path, trace, {.storage = traces::StorageType::kFloat32});
  const traces::TraceReader reader(path);
  PromptStatsWriter writer(path, PromptStatsShape::Of(reader.meta()));
  for (int l = 0; l < reader.meta().shape.layers; ++l) {
    const LayerTensors layer = reader.ReadLayer(l);
    writer.AddLayer(l, traces::PromptContentHash(layer, reader.meta().prompt_len),
                    {ComputeColumnSums(layer, reader.meta().prompt_len)});
  }
  writer.Commit();
}

// The hash as FORMAT.md specifies it, written out independently of traces/prompt_stats.cc.
uint64_t SpecHash(const LayerTensors& layer, int64_t prompt_len) {
  std::vector<uint32_t> bits;
  for (const HeadTensor* t : {&layer.queries, &layer.keys}) {
    for (int h = 0; h < t->heads(); ++h) {
      for (int64_t i = 0; i < prompt_len * t->dim(); ++i) {
        uint32_t b;
        std::memcpy(&b, t->Row(h, 0) + i, 4);
        bits.push_back(b);
      }
    }
  }
  uint64_t hash = 14695981039346656037ULL;
  for (size_t i = 0; i < bits.size(); i += 2) {
    const uint64_t hi = i + 1 < bits.size() ? bits[i + 1] : 0;
    hash = (hash ^ (bits[i] | (hi << 32))) * 1099511628211ULL;
  }
  return hash;
}

TEST(PromptContentHash, MatchesTheDocumentedDefinitionAndCoversOnlyPromptRows) {
  const LayerTensors layer = RandomLayer(2, 1, 9, 3, 1);  // 2*5*3 + 5*3 = 45 floats: odd
  EXPECT_EQ(traces::PromptContentHash(layer, 5), SpecHash(layer, 5));
  LayerTensors decode_changed = layer;
  decode_changed.keys.Row(0, 7)[1] += 1.0f;
  decode_changed.values.Row(0, 2)[0] += 1.0f;  // values never enter the statistic
  EXPECT_EQ(traces::PromptContentHash(decode_changed, 5), traces::PromptContentHash(layer, 5));
  LayerTensors prompt_changed = layer;
  prompt_changed.keys.Row(0, 4)[2] += 1.0f;
  EXPECT_NE(traces::PromptContentHash(prompt_changed, 5), traces::PromptContentHash(layer, 5));
}

TEST(PromptStats, SidecarPathAppendsToTheTraceName) {
  EXPECT_EQ(PromptStatsPath("dir/t.h5"), std::filesystem::path("dir/t.h5.stats.h5"));
}

TEST(PromptStats, RoundTripReturnsExactlyWhatWasComputed) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  WriteWithSidecar(path, SmallTrace(30, 40, 1));
  EXPECT_THAT(dir.Entries(), UnorderedElementsAre("t.h5", "t.h5.stats.h5"));
  const traces::Trace trace = traces::ReadTrace(path);
  for (int l = 0; l < 2; ++l) {
    const std::optional<LayerPromptStats> loaded =
        LoadPromptStats(path, l, trace.layer(l), 30, OnStale::kError);
    ASSERT_TRUE(loaded.has_value()) << "layer " << l;
    const std::vector<Eigen::VectorXf> want = ComputeColumnSums(trace.layer(l), 30);
    ASSERT_EQ(loaded->column_sums.size(), 4u);
    for (int h = 0; h < 4; ++h) EXPECT_EQ(loaded->column_sums[h], want[h]);
  }
}

TEST(PromptStats, NoSidecarIsNotAnError) {
  TempDir dir;
  const traces::Trace trace = SmallTrace(10, 12, 1);
  EXPECT_FALSE(LoadPromptStats(dir.File("t.h5"), 0, trace.layer(0), 10, OnStale::kError));
}

TEST(PromptStats, ChangedPromptKeyMakesTheLayerStale) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  traces::Trace trace = SmallTrace(30, 40, 1);
  WriteWithSidecar(path, trace);
  trace.mutable_layer(1).keys.Row(1, 29)[3] += 0.5f;  // last prompt row of KV head 1
  traces::WriteTrace(path, trace, {.storage = traces::StorageType::kFloat32});  // sidecar kept
  const traces::Trace changed = traces::ReadTrace(path);
  EXPECT_TRUE(LoadPromptStats(path, 0, changed.layer(0), 30, OnStale::kError).has_value());
  EXPECT_FALSE(LoadPromptStats(path, 1, changed.layer(1), 30, OnStale::kQuiet).has_value());
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(LoadPromptStats(path, 1, changed.layer(1), 30, OnStale::kWarn).has_value());
  const std::string warning = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(warning, AllOf(HasSubstr(PromptStatsPath(path).string()), HasSubstr("stale"),
                             HasSubstr("layer 1 content hash"), HasSubstr("recomputing")));
  try {
    LoadPromptStats(path, 1, changed.layer(1), 30, OnStale::kError);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("stale"), HasSubstr("kvsim stats")));
  }
}

TEST(PromptStats, OtherPromptLengthOrShapeIsStale) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  const traces::Trace trace = SmallTrace(30, 40, 1);
  WriteWithSidecar(path, trace);
  EXPECT_FALSE(LoadPromptStats(path, 0, trace.layer(0), 29, OnStale::kQuiet));
  PromptStatsShape shape = PromptStatsShape::Of(trace.meta());
  const uint64_t hash = traces::PromptContentHash(trace.layer(0), 30);
  EXPECT_TRUE(LoadPromptStats(path, 0, shape, hash, OnStale::kError));
  shape.layers = 3;
  EXPECT_FALSE(LoadPromptStats(path, 0, shape, hash, OnStale::kQuiet));
  shape = PromptStatsShape::Of(trace.meta());
  shape.total_len = 41;
  EXPECT_FALSE(LoadPromptStats(path, 0, shape, hash, OnStale::kQuiet));
}

// Runs `edit` on the sidecar opened read-write with the HDF5 C API.
template <typename Edit>
void EditSidecar(const std::filesystem::path& sidecar, Edit edit) {
  const hid_t file = H5Fopen(sidecar.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  edit(file);
  H5Fclose(file);
}

void ExpectCorrupt(const std::string& trace_path,
                   const traces::Trace& trace,
                   const std::vector<std::string>& named) {
  try {
    LoadPromptStats(trace_path, 0, trace.layer(0), trace.meta().prompt_len, OnStale::kQuiet);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_THAT(e.what(), HasSubstr(PromptStatsPath(trace_path).string()));
    for (const std::string& s : named) EXPECT_THAT(e.what(), HasSubstr(s));
  }
}

TEST(PromptStats, CorruptSidecarIsAnInputErrorNamingFileAndField) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  const traces::Trace trace = SmallTrace(30, 40, 1);
  const std::filesystem::path sidecar = PromptStatsPath(path);

  WriteWithSidecar(path, trace);
  std::ofstream(sidecar, std::ios::trunc) << "not hdf5";
  ExpectCorrupt(path, trace, {"not an HDF5 file"});

  WriteWithSidecar(path, trace);
  EditSidecar(sidecar, [](hid_t file) { H5Adelete(file, "prompt_len"); });
  ExpectCorrupt(path, trace, {"'prompt_len'", "missing"});

  WriteWithSidecar(path, trace);
  EditSidecar(sidecar, [](hid_t file) {
    H5Ldelete(file, "/layers/0/column_sums", H5P_DEFAULT);
    const hsize_t dims[2] = {4, 31};
    const hid_t space = H5Screate_simple(2, dims, nullptr);
    H5Dclose(H5Dcreate2(file, "/layers/0/column_sums", H5T_IEEE_F32LE, space, H5P_DEFAULT,
                        H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(space);
  });
  ExpectCorrupt(path, trace, {"'/layers/0/column_sums'", "[4, 31]", "expected [4, 30]"});

  WriteWithSidecar(path, trace);
  EditSidecar(sidecar, [](hid_t file) {
    const hid_t ds = H5Dopen2(file, "/layers/0/column_sums", H5P_DEFAULT);
    std::vector<float> data(4 * 30, 1.0f);
    data[2 * 30 + 5] = std::numeric_limits<float>::quiet_NaN();
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data());
    H5Dclose(ds);
  });
  ExpectCorrupt(path, trace, {"'/layers/0/column_sums'", "nan", "[2, 5]", "finite"});
}

TEST(PromptStats, WriterLeavesNothingWithoutCommit) {
  TempDir dir;
  const std::string path = dir.File("t.h5");
  const traces::Trace trace = SmallTrace(30, 40, 1);
  traces::WriteTrace(path, trace);
  try {
    PromptStatsWriter writer(path, PromptStatsShape::Of(trace.meta()));
    writer.AddLayer(0, 1, {ComputeColumnSums(trace.layer(0), 30)});
    EXPECT_EQ(dir.Entries().size(), 2u);  // the trace and the temporary file
    writer.Commit();  // layer 1 is missing: asserts, and the destructor cleans up
    FAIL() << "expected InternalError";
  } catch (const InternalError& e) {
    EXPECT_THAT(e.what(), HasSubstr("layer 1"));
  }
  EXPECT_THAT(dir.Entries(), UnorderedElementsAre("t.h5"));
}

}  // namespace
}  // namespace kvsim::sim
