#pragma once
// Numerically stable softmax and single-query attention, shared by every component that turns
// queries and keys into attention weights (replay, metrics, inspect, capture checks).
#include <Eigen/Dense>

#include "common/tensor.h"

namespace kvsim {

// Replaces x by softmax(x), subtracting the max first so large logits cannot overflow.
inline void SoftmaxInPlace(Eigen::Ref<Eigen::VectorXf> x) {
  if (x.size() == 0) return;
  const float max = x.maxCoeff();
  x = (x.array() - max).exp();
  x /= x.sum();
}

// Attention weights of one query over `keys` (n x d): softmax_j(q . k_j / sqrt(d)).
inline Eigen::VectorXf AttentionWeights(const Eigen::Ref<const RowMatrixXf>& keys,
                                        const Eigen::Ref<const Eigen::RowVectorXf>& query) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(keys.cols()));
  Eigen::VectorXf logits = (keys * query.transpose()) * scale;
  SoftmaxInPlace(logits);
  return logits;
}

}  // namespace kvsim
