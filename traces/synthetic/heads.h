#pragma once
// The tensors of a synthetic trace (construction in synthetic.h), private to
// traces/synthetic. Work is split into (head, block of positions) items that write disjoint
// rows and draw their noise from counter-based streams, so any number of threads, in any
// order, produces the same bits.
#include <cstdint>
#include <vector>

#include "common/tensor.h"
#include "traces/synthetic/random.h"
#include "traces/synthetic/synthetic.h"

namespace kvsim::traces::synthetic {

// Column indices of each structure in the coefficient matrices (-1: absent).
struct Directions {
  int sink = -1;
  int heavy = -1;
  int window = -1;
  int decode = -1;
  int recency = -1;  // 2 * frequencies columns: cos, sin per frequency
  int frequencies = 0;
  int recurring = -1;
  int needle = -1;
  int topic = -1;
  int count = 0;
  bool orthogonal = true;  // directions are axes; otherwise random unit vectors
  int base_begin = 0;      // noise lives in dims [base_begin, d)
};

Directions AllocateDirections(const SynthParams& p, int head_dim);

// Per-structure strength factors of one head.
struct HeadFactors {
  double sink, heavy, recency, recurring, needle, shifted, topic;
  static HeadFactors Draw(Rng& rng, double lo, double hi);
};

// What every head shares; the references must outlive the Context.
struct Context {
  const SynthParams& params;
  const SynthLayout& layout;
  const std::vector<Segment>& segments;
  const Directions& dirs;
  int64_t total;
  int head_dim;
};

// One key coefficient of a sparse structure: key `position` carries `value` on column
// `column`.
struct KeyCoef {
  int64_t position;
  int column;
  float value;
};

// Everything one (layer, KV head) shares between its keys and its query heads.
struct KvHeadSetup {
  RowMatrixXf projection;       // dirs.count x d: coefficient space -> output space
  RowMatrixXf base_projection;  // (d - dirs.base_begin) x d: noise space -> output space
  HeadFactors factors{};
  std::vector<double> omega;       // recency frequencies (radians per position)
  std::vector<KeyCoef> key_coefs;  // sorted by position
  uint64_t key_noise = 0;          // stream keys (random.h)
  uint64_t value_noise = 0;
};

// What one query head adds to its KV head's setup.
struct QueryHeadSetup {
  HeadFactors factors{};
  uint64_t noise = 0;
};

KvHeadSetup MakeKvHead(const Context& c, uint64_t seed, int layer, int kv_head);
QueryHeadSetup MakeQueryHead(uint64_t seed, int layer, int q_head);

// Rows [begin, end) of one head's [T, d] matrix, written to `out` (row `begin` first).
void FillKeys(const Context& c, const KvHeadSetup& kv, int64_t begin, int64_t end, float* out);
void FillValues(const Context& c, const KvHeadSetup& kv, int64_t begin, int64_t end, float* out);
void FillQueries(const Context& c,
                 const KvHeadSetup& kv,
                 const QueryHeadSetup& q,
                 int64_t begin,
                 int64_t end,
                 float* out);

}  // namespace kvsim::traces::synthetic
