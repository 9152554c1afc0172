// Quantization math of the precision tiers (sim/quantization.h): the asymmetric min-max error
// bound on random data, exactness on the grid, KIVI's per-channel / per-token grouping, the
// byte formulas against hand computation and MiKV's balancer.
#include "sim/quantization.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace kvsim::sim {
namespace {

RowMatrixXf RandomMatrix(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  RowMatrixXf m(rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) m(r, c) = normal(rng) * (c == 3 ? 20.0f : 1.0f);
  }
  return m;
}

// Independent min-max of one strided group, in double.
double GroupScale(const std::vector<float>& x, int bits) {
  double lo = x[0], hi = x[0];
  for (float v : x) {
    lo = std::min<double>(lo, v);
    hi = std::max<double>(hi, v);
  }
  return (hi - lo) / ((1 << bits) - 1);
}

TEST(Quantization, GroupErrorWithinHalfScaleOnRandomData) {
  for (const int bits : {2, 3, 4, 8}) {
    std::mt19937_64 rng(static_cast<uint64_t>(bits));
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> x(64);
    for (float& v : x) v = normal(rng);
    const std::vector<float> original = x;
    const double scale = GroupScale(x, bits);
    const QuantGroup g = FakeQuantizeGroup(x.data(), 64, 1, bits);
    EXPECT_NEAR(g.scale, scale, 1e-6);
    int distinct_levels = 0;
    std::vector<float> seen;
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_LE(std::abs(x[i] - original[i]), scale / 2 * (1 + 1e-5)) << bits << " bits, i=" << i;
      if (std::find(seen.begin(), seen.end(), x[i]) == seen.end()) {
        seen.push_back(x[i]);
        ++distinct_levels;
      }
    }
    EXPECT_LE(distinct_levels, 1 << bits);
  }
}

TEST(Quantization, ValuesOnTheGridAreExact) {
  // 2 bits, zero = -1, scale = 0.25: the grid is {-1, -0.75, -0.5, -0.25}, all exact in float.
  std::vector<float> x = {-1.0f, -0.25f, -0.5f, -0.75f, -0.25f, -1.0f};
  const std::vector<float> original = x;
  const QuantGroup g = FakeQuantizeGroup(x.data(), 6, 1, 2);
  EXPECT_EQ(g.scale, 0.25f);
  EXPECT_EQ(g.zero, -1.0f);
  EXPECT_EQ(x, original);
  std::vector<float> constant(5, 3.5f);
  EXPECT_EQ(FakeQuantizeGroup(constant.data(), 5, 1, 2).scale, 0.0f);
  EXPECT_EQ(constant, std::vector<float>(5, 3.5f));
}

TEST(Quantization, KiviKeysArePerChannelOverTokenGroups) {
  const int g = 4;
  RowMatrixXf keys = RandomMatrix(8, 6, 7);
  const RowMatrixXf original = keys;
  FakeQuantizeKeysPerChannel(keys, 2, g);
  for (int64_t group = 0; group < 2; ++group) {
    for (int64_t c = 0; c < 6; ++c) {
      std::vector<float> column;
      for (int64_t r = group * g; r < (group + 1) * g; ++r) column.push_back(original(r, c));
      const double scale = GroupScale(column, 2);
      for (int64_t r = group * g; r < (group + 1) * g; ++r) {
        EXPECT_LE(std::abs(keys(r, c) - original(r, c)), scale / 2 * (1 + 1e-5));
      }
      // The group's min and max are grid points: exact.
      for (int64_t r = group * g; r < (group + 1) * g; ++r) {
        if (original(r, c) == *std::min_element(column.begin(), column.end())) {
          EXPECT_EQ(keys(r, c), original(r, c));
        }
      }
    }
  }
  // The outlier channel 3 (std 20) does not inflate the error of the other channels.
  const double err_small = (keys.col(0) - original.col(0)).cwiseAbs().maxCoeff();
  const double err_outlier = (keys.col(3) - original.col(3)).cwiseAbs().maxCoeff();
  EXPECT_LT(err_small, err_outlier);
}

TEST(Quantization, PerTokenGroupsSpanChannels) {
  RowMatrixXf m = RandomMatrix(1, 10, 3);
  std::vector<float> x(m.data(), m.data() + 10);
  const std::vector<float> original = x;
  FakeQuantizePerToken(x, 3, 4);  // groups [0,4) [4,8) [8,10)
  for (int begin : {0, 4, 8}) {
    const int end = std::min(begin + 4, 10);
    const std::vector<float> group(original.begin() + begin, original.begin() + end);
    const double scale = GroupScale(group, 3);
    for (int i = begin; i < end; ++i) EXPECT_LE(std::abs(x[i] - original[i]), scale / 2 + 1e-6);
  }
}

TEST(Quantization, BytesMatchHandComputation) {
  // KIVI card example: d = 128, b = 2, G = 32: 2*128 bits = 32 bytes payload per token vector,
  // 128/32 = 4 groups x (fp16 scale + fp16 zero) = 16 bytes; 48 bytes in all.
  EXPECT_EQ(PerTokenVectorBytes(128, 2, 32), (KvTierBytes{0, 32, 16}));
  // Keys: a group of 32 tokens x 128 channels at 2 bits = 1024 bytes, one scale+zero per
  // channel = 512 bytes: 48 bytes per token amortised.
  EXPECT_EQ(KeyChannelGroupBytes(128, 2, 32), (KvTierBytes{0, 1024, 512}));
  // Odd sizes round up: 3 bits x 10 = 30 bits -> 4 bytes; ceil(10/4) = 3 groups -> 12 bytes.
  EXPECT_EQ(PerTokenVectorBytes(10, 3, 4), (KvTierBytes{0, 4, 12}));
  EXPECT_EQ(PackedBytes(7, 1), 1);
  EXPECT_EQ(PackedBytes(9, 1), 2);
}

TEST(Quantization, BalancerPreservesDotProductsAndFlattensOutliers) {
  RowMatrixXf q = RandomMatrix(5, 6, 11);
  RowMatrixXf k = RandomMatrix(7, 6, 12);  // channel 3 is an outlier (x20)
  const Eigen::VectorXf beta = OutlierBalance(q, k);
  for (int64_t c = 0; c < 6; ++c) {
    const double expected =
        std::sqrt(q.col(c).cwiseAbs().maxCoeff() / k.col(c).cwiseAbs().maxCoeff());
    EXPECT_NEAR(beta[c], expected, 1e-5);
  }
  const RowMatrixXf k_bal = k.array().rowwise() * beta.transpose().array();
  const RowMatrixXf q_bal = q.array().rowwise() / beta.transpose().array();
  EXPECT_TRUE((q_bal * k_bal.transpose()).isApprox(q * k.transpose(), 1e-5f));
  // Migration: max|k~_c| = sqrt(max|q_c| max|k_c|), the geometric mean of the two ranges.
  for (int64_t c = 0; c < 6; ++c) {
    EXPECT_NEAR(k_bal.col(c).cwiseAbs().maxCoeff(),
                std::sqrt(q.col(c).cwiseAbs().maxCoeff() * k.col(c).cwiseAbs().maxCoeff()), 1e-4);
  }
}

// MiKV's codes decode to exactly the floats of fake quantization in place (the replay's results
// must not move when a policy stores codes instead of floats), for every width, group sizes that
// do and do not divide head_dim, with and without a balancer, constant groups included.
TEST(Quantization, PerTokenCodesDecodeToTheFakeQuantizedFloats) {
  const int d = 12;
  const RowMatrixXf rows = RandomMatrix(40, d, 9);
  Eigen::VectorXf balance(d);
  for (int c = 0; c < d; ++c) balance[c] = 0.25f + 0.5f * static_cast<float>(c);
  for (const int bits : {1, 2, 3, 4, 8}) {
    for (const int group : {1, 4, 5, 12}) {
      for (const bool balanced : {false, true}) {
        const Eigen::VectorXf beta = balanced ? balance : Eigen::VectorXf::Ones(d);
        const PerTokenCodec codec(d, bits, group, beta);
        EXPECT_EQ(codec.EncodedBytes(), 2 * (d + ChannelGroups(d, group) * 8));
        for (int64_t r = 0; r + 1 < rows.rows(); r += 2) {
          Eigen::VectorXf key = rows.row(r).transpose();
          Eigen::VectorXf value = rows.row(r + 1).transpose();
          if (r == 0) key.head(std::min(d, group)).setConstant(1.5f);  // a constant group
          const std::vector<uint8_t> encoded = codec.Encode(key.data(), value.data());
          ASSERT_EQ(static_cast<int64_t>(encoded.size()), codec.EncodedBytes());
          Eigen::VectorXf want_key = key.cwiseProduct(beta);
          FakeQuantizePerToken(std::span<float>(want_key.data(), d), bits, group);
          want_key = want_key.cwiseQuotient(beta).eval();
          Eigen::VectorXf want_value = value;
          FakeQuantizePerToken(std::span<float>(want_value.data(), d), bits, group);
          Eigen::VectorXf got_key(d), got_value(d);
          codec.Decode(encoded.data(), /*value=*/false, got_key.data());
          codec.Decode(encoded.data(), /*value=*/true, got_value.data());
          for (int c = 0; c < d; ++c) {
            EXPECT_EQ(got_key[c], want_key[c]) << bits << " bits, group " << group << " row " << r;
            EXPECT_EQ(got_value[c], want_value[c]) << bits << " bits, group " << group;
          }
          for (int c = 0; c < 2 * d; ++c) EXPECT_LT(encoded[c], 1 << bits);  // codes in range
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvsim::sim
