#include "sim/quantization.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "common/error.h"

namespace kvsim::sim {

namespace {

float Levels(int bits) { return static_cast<float>((1 << bits) - 1); }

// The group's min-max parameters. scale == 0 for a constant group: every value equals `zero`.
QuantGroup GroupRange(const float* data, int64_t count, int64_t stride, int bits) {
  KVSIM_ASSERT(bits >= 1 && bits <= 16, "quantization width {} bits out of [1, 16]", bits);
  KVSIM_ASSERT(count >= 1, "empty quantization group");
  float lo = data[0];
  float hi = data[0];
  for (int64_t i = 1; i < count; ++i) {
    lo = std::min(lo, data[i * stride]);
    hi = std::max(hi, data[i * stride]);
  }
  return {(hi - lo) / Levels(bits), lo};
}

// The one quantizer and the one dequantizer: fake quantization and PerTokenCodec both go through
// these, so codes decode to the same floats as fake-quantizing in place.
float QuantLevel(float x, QuantGroup group, float levels) {
  // nearbyint in the default rounding mode = round half to even, as torch.round.
  return std::clamp(std::nearbyint((x - group.zero) / group.scale), 0.0f, levels);
}
float DequantLevel(float q, QuantGroup group) { return q * group.scale + group.zero; }

}  // namespace

QuantGroup FakeQuantizeGroup(float* data, int64_t count, int64_t stride, int bits) {
  const QuantGroup group = GroupRange(data, count, stride, bits);
  if (group.scale == 0.0f) return group;
  const float levels = Levels(bits);
  for (int64_t i = 0; i < count; ++i) {
    float& x = data[i * stride];
    x = DequantLevel(QuantLevel(x, group, levels), group);
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

PerTokenCodec::PerTokenCodec(int head_dim, int bits, int group_size, Eigen::VectorXf key_balance)
    : head_dim_(head_dim),
      bits_(bits),
      group_size_(group_size),
      groups_(ChannelGroups(head_dim, group_size)),
      key_balance_(std::move(key_balance)) {
  KVSIM_ASSERT(
      head_dim >= 1 && bits >= 1 && bits <= 8 && group_size >= 1 && key_balance_.size() == head_dim,
      "per-token codec of head_dim {}, {} bits, groups of {}, {} balance factors", head_dim, bits,
      group_size, key_balance_.size());
}

int64_t PerTokenCodec::EncodedBytes() const {
  return 2 * (head_dim_ + groups_ * static_cast<int64_t>(sizeof(QuantGroup)));
}

std::vector<uint8_t> PerTokenCodec::Encode(const float* key, const float* value) const {
  std::vector<uint8_t> out(static_cast<size_t>(EncodedBytes()));
  const auto d = static_cast<size_t>(head_dim_);
  const float levels = Levels(bits_);
  std::vector<float> x(d);
  for (const bool is_value : {false, true}) {
    for (size_t c = 0; c < d; ++c) {
      x[c] = is_value ? value[c] : key[c] * key_balance_[static_cast<int64_t>(c)];
    }
    uint8_t* codes = out.data() + (is_value ? d : 0);
    uint8_t* groups = out.data() + 2 * d + (is_value ? groups_ : 0) * sizeof(QuantGroup);
    for (int64_t g = 0; g < groups_; ++g) {
      const auto begin = static_cast<size_t>(g * group_size_);
      const auto count = std::min<size_t>(static_cast<size_t>(group_size_), d - begin);
      const QuantGroup group = GroupRange(&x[begin], static_cast<int64_t>(count), 1, bits_);
      for (size_t c = begin; c < begin + count; ++c) {
        codes[c] = group.scale == 0.0f ? 0 : static_cast<uint8_t>(QuantLevel(x[c], group, levels));
      }
      std::memcpy(groups + static_cast<size_t>(g) * sizeof(QuantGroup), &group, sizeof(group));
    }
  }
  return out;
}

void PerTokenCodec::Decode(const uint8_t* encoded, bool value, float* out) const {
  const auto d = static_cast<size_t>(head_dim_);
  const uint8_t* codes = encoded + (value ? d : 0);
  const uint8_t* groups = encoded + 2 * d + (value ? groups_ : 0) * sizeof(QuantGroup);
  for (int64_t g = 0; g < groups_; ++g) {
    QuantGroup group;
    std::memcpy(&group, groups + static_cast<size_t>(g) * sizeof(QuantGroup), sizeof(group));
    const auto begin = static_cast<size_t>(g * group_size_);
    const size_t end = std::min(begin + static_cast<size_t>(group_size_), d);
    for (size_t c = begin; c < end; ++c) {
      // A constant group keeps its value (= zero) as fake quantization does.
      out[c] = group.scale == 0.0f ? group.zero : DequantLevel(static_cast<float>(codes[c]), group);
      if (!value) out[c] /= key_balance_[static_cast<int64_t>(c)];
    }
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
