#include "sim/quantization.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace kvsim::sim {

QuantGroup FakeQuantizeGroup(float* data, int64_t count, int64_t stride, int bits) {
  KVSIM_ASSERT(bits >= 1 && bits <= 16, "quantization width {} bits out of [1, 16]", bits);
  KVSIM_ASSERT(count >= 1, "empty quantization group");
  float lo = data[0];
  float hi = data[0];
  for (int64_t i = 1; i < count; ++i) {
    lo = std::min(lo, data[i * stride]);
    hi = std::max(hi, data[i * stride]);
  }
  const float levels = static_cast<float>((1 << bits) - 1);
  const QuantGroup group{(hi - lo) / levels, lo};
  if (group.scale == 0.0f) return group;  // constant group: every value equals `zero`
  for (int64_t i = 0; i < count; ++i) {
    float& x = data[i * stride];
    // nearbyint in the default rounding mode = round half to even, as torch.round.
    const float q = std::clamp(std::nearbyint((x - group.zero) / group.scale), 0.0f, levels);
    x = q * group.scale + group.zero;
  }
  return group;
}

void FakeQuantizeKeysPerChannel(Eigen::Ref<RowMatrixXf> keys, int bits, int group_size) {
  KVSIM_ASSERT(group_size >= 1 && keys.rows() % group_size == 0,
               "{} key rows are not a whole number of groups of {}", keys.rows(), group_size);
  const int64_t stride = keys.outerStride();
  for (int64_t g = 0; g < keys.rows(); g += group_size) {
    for (int64_t c = 0; c < keys.cols(); ++c) {
      FakeQuantizeGroup(&keys(g, c), group_size, stride, bits);
    }
  }
}

void FakeQuantizePerToken(std::span<float> x, int bits, int group_size) {
  KVSIM_ASSERT(group_size >= 1, "group size {} < 1", group_size);
  const auto size = static_cast<int64_t>(x.size());
  for (int64_t c = 0; c < size; c += group_size) {
    FakeQuantizeGroup(&x[static_cast<size_t>(c)], std::min<int64_t>(group_size, size - c), 1, bits);
  }
}

int64_t PackedBytes(int64_t elements, int bits) { return (elements * bits + 7) / 8; }

int64_t ChannelGroups(int head_dim, int group_size) {
  return (head_dim + group_size - 1) / group_size;
}

KvTierBytes PerTokenVectorBytes(int head_dim, int bits, int group_size) {
  return {.full = 0,
          .quantized = PackedBytes(head_dim, bits),
          .metadata = ChannelGroups(head_dim, group_size) * kGroupMetadataBytes};
}

KvTierBytes KeyChannelGroupBytes(int head_dim, int bits, int group_size) {
  return {.full = 0,
          .quantized = PackedBytes(static_cast<int64_t>(head_dim) * group_size, bits),
          .metadata = static_cast<int64_t>(head_dim) * kGroupMetadataBytes};
}

Eigen::VectorXf OutlierBalance(const Eigen::Ref<const RowMatrixXf>& queries,
                               const Eigen::Ref<const RowMatrixXf>& keys) {
  KVSIM_ASSERT(queries.cols() == keys.cols() && queries.rows() > 0 && keys.rows() > 0,
               "balancer needs queries and keys of one head dim");
  const Eigen::VectorXf q_max = queries.cwiseAbs().colwise().maxCoeff().transpose();
  const Eigen::VectorXf k_max = keys.cwiseAbs().colwise().maxCoeff().transpose();
  Eigen::VectorXf beta(keys.cols());
  for (int64_t c = 0; c < keys.cols(); ++c) {
    beta[c] = q_max[c] > 0.0f && k_max[c] > 0.0f ? std::sqrt(q_max[c] / k_max[c]) : 1.0f;
  }
  return beta;
}

}  // namespace kvsim::sim
