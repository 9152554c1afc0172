#pragma once
// KV quantization math and byte accounting for the precision tiers (memory-and-paging.md cards 2
// and 3). Quantization is fake-quant in float: values are quantized to integers and dequantized
// back with the scheme's math, so attention over the result carries the real quantization error,
// while byte counts are those of the packed integer payload plus its FP16 metadata.
//
// Scheme (KIVI quant/new_pack.py, MiKV paper): asymmetric min-max round-to-nearest per group,
//   scale = (max - min) / (2^b - 1), zero = min, q = clip(round((x - zero) / scale), 0, 2^b - 1),
//   x^ = q * scale + zero,
// so |x - x^| <= scale / 2 for every element (up to float rounding), and values on the grid
// {zero + q * scale} come back exactly. round() is round-half-to-even (torch.round, as KIVI).
#include <Eigen/Dense>
#include <cstdint>
#include <span>
#include <vector>

#include "common/tensor.h"
#include "sim/kv_cache.h"

namespace kvsim::sim {

// FP16 scale + FP16 zero point per quantized group (KIVI stores both as fp16).
inline constexpr int64_t kGroupMetadataBytes = 4;

// Bytes of K/V by ledger category (memory.csv kv_full / kv_quantized / quant_metadata).
struct KvTierBytes {
  int64_t full = 0;       // full-precision payload
  int64_t quantized = 0;  // packed integer payload
  int64_t metadata = 0;   // scales and zero points
  int64_t total() const { return full + quantized + metadata; }
  KvTierBytes& operator+=(const KvTierBytes& o) {
    full += o.full;
    quantized += o.quantized;
    metadata += o.metadata;
    return *this;
  }
  friend bool operator==(const KvTierBytes&, const KvTierBytes&) = default;
};

// The group parameters of one quantized group. scale == 0 for a constant group (exact).
struct QuantGroup {
  float scale = 0.0f;
  float zero = 0.0f;
};

// Quantizes and dequantizes `count` floats in place as ONE group, the i-th at data[i * stride].
// REQUIRES 1 <= bits <= 16, count >= 1.
QuantGroup FakeQuantizeGroup(float* data, int64_t count, int64_t stride, int bits);

// KIVI keys: per channel, each group of `group_size` consecutive tokens (rows) shares one
// (scale, zero). `keys`: tokens x head_dim, rows in position order; the row count must be a
// multiple of group_size.
void FakeQuantizeKeysPerChannel(Eigen::Ref<RowMatrixXf> keys, int bits, int group_size);

// KIVI values / MiKV tokens: one token's vector, groups of `group_size` consecutive channels
// (the last group may be shorter when head_dim % group_size != 0).
void FakeQuantizePerToken(std::span<float> x, int bits, int group_size);

// One stream's low-precision token entries stored as codes (MiKV's low tier): the key and the
// value are each quantized per token in groups of `group_size` channels, exactly as
// FakeQuantizePerToken does, the key first multiplied by `key_balance` per channel (MiKV's
// outlier balancer; ones = none) and divided by it again on decode. Decode gives the very floats
// that FakeQuantizePerToken(key * balance) / balance and FakeQuantizePerToken(value) give, from
// one byte per code (bits <= 8) plus each group's scale and zero point as floats (the ledger
// still charges the packed payload and FP16 metadata: these bytes are the simulator's, not the
// scheme's). Layout: [key codes][value codes][key groups][value groups], head_dim codes each.
class PerTokenCodec final : public RowCodec {
 public:
  PerTokenCodec(int head_dim, int bits, int group_size, Eigen::VectorXf key_balance);
  int64_t EncodedBytes() const override;
  void Decode(const uint8_t* encoded, bool value, float* out) const override;
  // Encodes one entry from its full-precision key and value rows (head_dim floats each).
  std::vector<uint8_t> Encode(const float* key, const float* value) const;

 private:
  int head_dim_;
  int bits_;
  int group_size_;
  int64_t groups_;
  Eigen::VectorXf key_balance_;
};

// Packed payload of `elements` integers of `bits` bits: ceil(elements * bits / 8) bytes.
int64_t PackedBytes(int64_t elements, int bits);
// Groups of `group_size` channels covering head_dim: ceil(head_dim / group_size).
int64_t ChannelGroups(int head_dim, int group_size);

// Bytes of ONE token vector (a key or a value of one head) quantized per token.
KvTierBytes PerTokenVectorBytes(int head_dim, int bits, int group_size);
// Bytes of one KIVI key group: `group_size` tokens x head_dim, one (scale, zero) per channel.
KvTierBytes KeyChannelGroupBytes(int head_dim, int bits, int group_size);

// MiKV outlier balancer (card 2 (b)), per channel c of one (layer, head):
//   beta_c = sqrt(max_t |q_{t,c}| / max_t |k_{t,c}|),
// over the given prompt queries (rows; every query head of the group stacked) and keys. Storing
// k * beta and attending with q / beta leaves q . k unchanged while flattening key outlier
// channels. A channel whose queries or keys are all zero gets beta = 1.
Eigen::VectorXf OutlierBalance(const Eigen::Ref<const RowMatrixXf>& queries,
                               const Eigen::Ref<const RowMatrixXf>& keys);

}  // namespace kvsim::sim
